"""The in-process vLLM engine against a fake ``vllm`` mirroring vLLM 0.32.0.

The fake (tests/fake_vllm/vllm) has vLLM 0.32.0's class, parameter and field
names; ``test_fake_mirrors_real_vllm`` checks that against a real vLLM when one
is importable (here, or via ``OPTSCALE_VLLM_PYTHON=/path/to/venv/bin/python``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from optscale_jax.engines.base import EngineError, SampleRequest
from optscale_jax.engines.prm import PRM_SYSTEM_PROMPT

FAKE_DIR = Path(__file__).parent / "fake_vllm"


@pytest.fixture
def fake_vllm(monkeypatch):
    """The fake vllm package, installed in sys.modules for this test only."""
    saved = {k: v for k, v in sys.modules.items() if k == "vllm" or k.startswith("vllm.")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.syspath_prepend(str(FAKE_DIR))
    mod = importlib.import_module("vllm")
    assert Path(mod.__file__).resolve().parent == (FAKE_DIR / "vllm").resolve()
    mod.CALLS.clear()
    mod.FAIL_AFTER = None
    yield mod
    for k in [k for k in sys.modules if k == "vllm" or k.startswith("vllm.")]:
        del sys.modules[k]
    sys.modules.update(saved)


def test_sampling_params_chat_template_and_token_counts(fake_vllm):
    from optscale_jax.engines.vllm import VLLMEngine

    eng = VLLMEngine("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", max_tokens=4096, seed=3)
    reqs = [SampleRequest("What is 2+2?", 3, seed=11), SampleRequest("Solve x^2=4.", 1, seed=12)]
    out = eng.sample(reqs)
    name, args, kwargs = fake_vllm.CALLS[0]
    assert name == "LLM" and kwargs["runner"] == "generate" and kwargs["seed"] == 3
    name, (prompts, params), kwargs = fake_vllm.CALLS[1]
    assert name == "generate" and kwargs["use_tqdm"] is False
    # one generate call for the whole batch, the chat template applied to each prompt
    assert prompts == [
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nSolve x^2=4.<|im_end|>\n<|im_start|>assistant\n",
    ]
    assert [(p.n, p.temperature, p.top_p, p.max_tokens, p.seed) for p in params] == [
        (3, 0.7, 0.95, 4096, 11),
        (1, 0.7, 0.95, 4096, 12),
    ]
    assert [len(o) for o in out] == [3, 1]
    for p, comps in zip(prompts, out, strict=False):
        for j, c in enumerate(comps):
            expected = fake_vllm.toy_completion(p, params[0].seed if p == prompts[0] else 12, j)
            assert c.text == expected
            assert c.tokens == len(expected) + 1  # one id per character + the EOS token id
            assert c.finish_reason == "stop"


def test_length_finish_and_system_prompt(fake_vllm):
    from optscale_jax.engines.vllm import VLLMEngine

    eng = VLLMEngine("m", max_tokens=5, system_prompt="Be brief.")
    (comps,) = eng.sample([SampleRequest("q", 2, seed=0)])
    assert all(c.tokens == 5 and c.finish_reason == "length" for c in comps)
    prompts = fake_vllm.CALLS[1][1][0]
    assert prompts[0].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nq")


def test_prm_input_format_and_step_probabilities(fake_vllm):
    from optscale_jax.engines.vllm import VLLMPRM

    prm = VLLMPRM("Qwen/Qwen2.5-Math-PRM-7B")
    assert fake_vllm.CALLS[0][2]["runner"] == "pooling"
    assert prm.step_token_id == 151651
    completions = ["Let x = 2.\n\n\n\nThen x^2 = 4.\n\n\\boxed{4}", "", "  \n\n  ", "one step"]
    scores = prm.score(["What is x^2?"] * 4, completions)
    name, (prompts, params), kwargs = fake_vllm.CALLS[-1]
    assert name == "encode" and kwargs["pooling_task"] == "token_classify"
    assert params.use_activation is False
    # the model card's format: system prompt, question, steps joined by <extra_0>; steps
    # split on "\n\n" exactly as the authors' scorer does (an empty piece is a step)
    assert prompts[0] == (
        f"<|im_start|>system\n{PRM_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nWhat is x^2?<|im_end|>\n"
        "<|im_start|>assistant\nLet x = 2.<extra_0><extra_0>Then x^2 = 4.<extra_0>\\boxed{4}<extra_0>"
        "<|im_end|>\n"
    )
    assert len(prompts) == 4  # empty completions are scored too, as one empty step
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    steps = ["Let x = 2.", "", "Then x^2 = 4.", "\\boxed{4}"]
    np.testing.assert_allclose(scores[0], [sig(fake_vllm.toy_step_logit(s)) for s in steps], rtol=1e-6)
    np.testing.assert_allclose(scores[1], [sig(fake_vllm.toy_step_logit(""))], rtol=1e-6)
    np.testing.assert_allclose(
        scores[2], [sig(fake_vllm.toy_step_logit(s)) for s in ["  ", "  "]], rtol=1e-6
    )
    np.testing.assert_allclose(scores[3], [sig(fake_vllm.toy_step_logit("one step"))], rtol=1e-6)


def test_engine_failure_is_a_clear_error(fake_vllm):
    from optscale_jax.engines.vllm import VLLMEngine

    eng = VLLMEngine("m")
    fake_vllm.FAIL_AFTER = 0
    with pytest.raises(EngineError, match="vLLM generate failed: RuntimeError: CUDA error"):
        eng.sample([SampleRequest("q", 1)])


def test_wrong_runner_is_a_clear_error(fake_vllm):
    from optscale_jax.engines.vllm import VLLMPRM

    llm = fake_vllm.LLM("some-model", runner="generate")
    prm = VLLMPRM(llm)
    with pytest.raises(EngineError, match="token_classify.*only supported for pooling"):
        prm.score(["q"], ["a step"])


def test_missing_or_old_vllm_is_a_clear_error(monkeypatch):
    from optscale_jax.engines.vllm import VLLMEngine

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(EngineError, match=r"vLLM is not installed.*pip install 'optscale-jax\[vllm\]'"):
        VLLMEngine("m")

    old = types.ModuleType("vllm")
    old.__version__ = "0.6.3"

    class LLM:  # the 0.6-era signatures: task=..., encode without pooling_task
        def __init__(self, model, task="auto", **kw): ...

        def encode(self, prompts, pooling_params=None, use_tqdm=True): ...

    class PoolingParams:
        def __init__(self, additional_data=None): ...

    old.LLM, old.PoolingParams, old.SamplingParams = LLM, PoolingParams, object
    monkeypatch.setitem(sys.modules, "vllm", old)
    with pytest.raises(EngineError, match=r"vLLM 0\.6\.3 lacks LLM\(runner=\.\.\.\), LLM\.encode\(pooling_task"):
        VLLMEngine("m")


def test_step_scores_from_pooling_shapes():
    from optscale_jax.engines.vllm import step_scores_from_pooling

    ids = [5, 9, 7, 9]
    full = np.array([[0.0, 0.0], [0.0, 1.0], [3.0, 3.0], [1.0, -1.0]])
    got = step_scores_from_pooling(full, ids, 9, 2)
    np.testing.assert_allclose(got, [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(2))])
    assert step_scores_from_pooling(full[[1, 3]], ids, 9, 2) == got  # pooler kept steps only
    with pytest.raises(EngineError, match="2 steps but 1 step tokens"):
        step_scores_from_pooling(full, [5, 9, 7, 8], 9, 2)
    with pytest.raises(EngineError, match="3 rows for 4 tokens"):
        step_scores_from_pooling(full[:3], ids, 9, 2)


# --- the fake against the real vLLM -------------------------------------------------

_COMPARE = textwrap.dedent(
    """
    import dataclasses, importlib.util, inspect, json, sys
    import vllm, vllm.outputs
    spec = importlib.util.spec_from_file_location(
        "fakevllm", sys.argv[1] + "/vllm/__init__.py", submodule_search_locations=[sys.argv[1] + "/vllm"])
    fake = importlib.util.module_from_spec(spec); sys.modules["fakevllm"] = fake; spec.loader.exec_module(fake)
    import fakevllm.outputs as fo
    report = {"version": vllm.__version__, "problems": []}
    def params(f):
        return [(p.name, p.kind.name, repr(p.default)) for p in inspect.signature(f).parameters.values()
                if p.name not in ("self",)]
    pairs = {
        "LLM.__init__": (vllm.LLM.__init__, fake.LLM.__init__),
        "LLM.generate": (vllm.LLM.generate, fake.LLM.generate),
        "LLM.encode": (vllm.LLM.encode, fake.LLM.encode),
        "LLM.get_tokenizer": (vllm.LLM.get_tokenizer, fake.LLM.get_tokenizer),
        "RequestOutput": (vllm.outputs.RequestOutput.__init__, fo.RequestOutput.__init__),
        "PoolingRequestOutput": (vllm.outputs.PoolingRequestOutput.__init__, fo.PoolingRequestOutput.__init__),
        "SamplingParams": (vllm.SamplingParams, fake.SamplingParams),
        "PoolingParams": (vllm.PoolingParams, fake.PoolingParams),
    }
    for name, (real, mock) in pairs.items():
        r = params(real); m = params(mock)
        rd = {p[0]: p for p in r}
        for p in m:
            if p[0] == "kwargs":
                continue
            if p[0] not in rd:
                report["problems"].append(f"{name}: fake parameter {p[0]} not in real")
            elif p[1] != rd[p[0]][1] or (p[2] != rd[p[0]][2] and name not in ("PoolingParams",) and p[0] != "output_kind"):
                report["problems"].append(f"{name}: {p} != real {rd[p[0]]}")
        # positional order of the fake equals the real prefix
        rp = [p[0] for p in r if p[1] == "POSITIONAL_OR_KEYWORD"]
        mp = [p[0] for p in m if p[1] == "POSITIONAL_OR_KEYWORD"]
        if rp[: len(mp)] != mp:
            report["problems"].append(f"{name}: positional order {mp} != real {rp[:len(mp)]}")
    for cls in ("CompletionOutput", "PoolingOutput"):
        rf = [(f.name, str(f.type)) for f in dataclasses.fields(getattr(vllm.outputs, cls))]
        mf = [(f.name, str(f.type)) for f in dataclasses.fields(getattr(fo, cls))]
        if [f[0] for f in rf] != [f[0] for f in mf]:
            report["problems"].append(f"{cls}: fields {mf} != real {rf}")
        norm = lambda t: t.replace("<class '", "").replace("'>", "").replace("collections.abc.", "").replace("torch.", "")
        for (rn, rt), (mn, mt) in zip(rf, mf):
            if rn in ("index", "text", "token_ids", "cumulative_logprob", "finish_reason", "stop_reason", "data") and norm(rt) != norm(mt):
                report["problems"].append(f"{cls}.{rn}: type {mt} != real {rt}")
    for name, args, kwargs in json.load(open(sys.argv[2])):
        target = {"SamplingParams": vllm.SamplingParams, "PoolingParams": vllm.PoolingParams}[name]
        try:
            target(*args, **kwargs)
        except Exception as e:
            report["problems"].append(f"real {name}(**{kwargs}) failed: {e!r}")
    for name, kwargs in json.load(open(sys.argv[3])):
        fn = {"generate": vllm.LLM.generate, "encode": vllm.LLM.encode, "LLM": vllm.LLM.__init__}[name]
        try:
            inspect.signature(fn).bind(None, ["prompt"], **kwargs) if name != "LLM" else inspect.signature(fn).bind(None, "m", **kwargs)
        except TypeError as e:
            report["problems"].append(f"adapter call {name}({kwargs}) does not bind: {e}")
    print("REPORT" + json.dumps(report))
    """
)


# decided at import, before any test puts the fake on sys.path
_REAL_VLLM_HERE = importlib.util.find_spec("vllm") is not None


def _real_vllm_python() -> str | None:
    env = os.environ.get("OPTSCALE_VLLM_PYTHON")
    if env:
        return env
    return sys.executable if _REAL_VLLM_HERE else None


def test_fake_mirrors_real_vllm(fake_vllm, tmp_path):
    """Field names, parameter names/kinds/defaults of the fake equal the real vLLM's,
    and the adapter's calls bind to the real signatures."""
    python = _real_vllm_python()
    if python is None:
        pytest.skip("no real vLLM: pip install vllm, or set OPTSCALE_VLLM_PYTHON to a venv's python")
    from optscale_jax.engines.vllm import VLLMPRM, VLLMEngine

    eng = VLLMEngine("m", max_tokens=64, tensor_parallel_size=1)
    eng.sample([SampleRequest("q", 2, seed=5)])
    prm = VLLMPRM("Qwen/Qwen2.5-Math-PRM-7B")
    prm.score(["q"], ["a\n\nb"])
    ctor, calls = [], []
    for name, args, kwargs in fake_vllm.CALLS:
        if name == "generate":
            for sp in args[1]:
                ctor.append(("SamplingParams", [], {k: getattr(sp, k) for k in ("n", "temperature", "top_p", "max_tokens", "seed")}))
            calls.append((name, {"sampling_params": None, **kwargs}))
        elif name == "encode":
            ctor.append(("PoolingParams", [], {"use_activation": args[1].use_activation}))
            calls.append((name, {"pooling_params": None, **kwargs}))
        elif name == "LLM":
            calls.append((name, kwargs))
    (tmp_path / "ctor.json").write_text(json.dumps(ctor))
    (tmp_path / "calls.json").write_text(json.dumps(calls))
    (tmp_path / "compare.py").write_text(_COMPARE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    res = subprocess.run(
        [python, str(tmp_path / "compare.py"), str(FAKE_DIR), str(tmp_path / "ctor.json"), str(tmp_path / "calls.json")],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env,
    )
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("REPORT")), None)
    assert line is not None, res.stderr[-3000:]
    report = json.loads(line[len("REPORT"):])
    assert report["version"] == fake_vllm.__version__
    assert report["problems"] == []


def test_live_run_and_cli_over_fake_vllm(fake_vllm, tmp_path):
    """`optscale run --engine vllm` end to end on the fake: sampling, PRM, grading, pool."""
    import typer
    from typer.testing import CliRunner

    from optscale_jax.commands.run import register
    from optscale_jax.io import read_pool

    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([{"problem": f"Compute {i}.", "answer": "1"} for i in range(4)]))
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--engine", "vllm", "--model", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                                   "--prm", "Qwen/Qwen2.5-Math-PRM-7B", "--dataset", str(bench), "--policy", "SC",
                                   "--n-max", "5", "--max-tokens", "4096", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    llm_calls = [c for c in fake_vllm.CALLS if c[0] == "LLM"]
    assert [c[2]["runner"] for c in llm_calls] == ["generate", "pooling"]
    # two models share the GPU: their memory shares must fit together
    assert [c[2]["gpu_memory_utilization"] for c in llm_calls] == [0.6, 0.3]
    assert sum(c[0] == "generate" for c in fake_vllm.CALLS) == 1  # one wave of 4 x 5
    pool = read_pool(out / "pool.parquet")
    assert pool.n_samples.tolist() == [5] * 4
    # answers are the toy model's \boxed{k}; math-verify grades them against gold "1"
    assert pool.correct[pool.mask].tolist() == [a == "1" for a in pool.answers[pool.mask]]
    summary = json.loads((out / "summary.json").read_text())
    chosen = np.asarray(summary["chosen"])
    assert summary["accuracy"] == pytest.approx(np.mean(pool.correct[np.arange(4), chosen]))
    for i in range(4):  # self-consistency keeps an answer with the most votes
        row = list(pool.answers[i])
        assert row.count(row[chosen[i]]) == max(row.count(a) for a in row)
