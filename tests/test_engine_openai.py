"""The HTTP engine against a fake vLLM server on 127.0.0.1 (tests/fake_vllm/server.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from optscale_jax.engines.base import EngineError, SampleRequest
from optscale_jax.engines.openai import HTTPClient, OpenAIEngine, OpenAIPRM
from optscale_jax.engines.prm import PRM_SYSTEM_PROMPT

_spec = importlib.util.spec_from_file_location(
    "fake_vllm_server", Path(__file__).parent / "fake_vllm" / "server.py"
)
fake = importlib.util.module_from_spec(_spec)
sys.modules["fake_vllm_server"] = fake
_spec.loader.exec_module(fake)

FAST = dict(timeout=5.0, backoff=0.001, max_backoff=0.01)


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


@pytest.mark.parametrize("chat", [True, False])
def test_sampling_over_http(chat):
    with fake.FakeVLLMServer() as srv:
        eng = OpenAIEngine(srv.url, "m", chat=chat, max_tokens=4096, system_prompt=None, **FAST)
        reqs = [SampleRequest(f"question {i}", 1 + i % 3, seed=100 + i) for i in range(6)]
        out = eng.sample(reqs)
        eng.close()
    assert [len(o) for o in out] == [r.n for r in reqs]
    by_seed = {b["seed"]: b for _, b, _, _ in srv.log}
    for r, comps in zip(reqs, out, strict=False):
        body = by_seed[r.seed]
        assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"]) == (r.n, 0.7, 0.95, 4096)
        assert body["return_token_ids"] is True
        prompt = fake.chatml([{"role": "user", "content": r.prompt}], True) if chat else r.prompt
        for j, c in enumerate(comps):
            text = fake.toy_completion(prompt, r.seed, j)
            assert c.text == text and c.tokens == len(text) + 1 and c.finish_reason == "stop"


def test_token_counts_without_token_ids():
    with fake.FakeVLLMServer(token_ids=False) as srv:
        eng = OpenAIEngine(srv.url, "m", **FAST)
        (one,) = eng.sample([SampleRequest("q", 1, seed=1)])
        assert one[0].tokens == len(one[0].text) + 1  # from usage.completion_tokens when n == 1
        with pytest.raises(EngineError, match="no per-choice token_ids"):
            eng.sample([SampleRequest("q", 2, seed=1)])


def test_bounded_concurrency():
    with fake.FakeVLLMServer(delay=0.05) as srv:
        eng = OpenAIEngine(srv.url, "m", concurrency=3, **FAST)
        eng.sample([SampleRequest(f"q{i}", 1, seed=i) for i in range(12)])
    assert len(srv.log) == 12
    assert 2 <= srv.max_inflight <= 3


def test_retry_5xx_then_success():
    sleeps = []
    with fake.FakeVLLMServer(fail=[503, 500]) as srv:
        eng = OpenAIEngine(srv.url, "m", timeout=5.0, backoff=0.5, max_backoff=10.0, sleep=sleeps.append)
        (comps,) = eng.sample([SampleRequest("q", 2, seed=7)])
    assert [s for _, _, s, _ in srv.log] == [503, 500, 200]
    assert sleeps == [0.5, 1.0]  # exponential backoff
    assert len(comps) == 2


def test_persistent_failure_is_a_clear_error():
    with fake.FakeVLLMServer(fail=[502] * 10) as srv:
        eng = OpenAIEngine(srv.url, "m", max_retries=3, **FAST)
        with pytest.raises(EngineError, match=r"/v1/chat/completions failed after 4 attempts; last: HTTP 502"):
            eng.sample([SampleRequest("q", 1)])
    assert len(srv.log) == 4


def test_client_error_is_not_retried():
    with fake.FakeVLLMServer(fail=[400]) as srv:
        eng = OpenAIEngine(srv.url, "m", **FAST)
        with pytest.raises(EngineError, match="HTTP 400.*injected failure"):
            eng.sample([SampleRequest("q", 1)])
    assert len(srv.log) == 1


def test_timeout_and_unreachable_server():
    with fake.FakeVLLMServer(delay=1.0) as srv:
        client = HTTPClient(srv.url, timeout=0.1, max_retries=1, backoff=0.001)
        with pytest.raises(EngineError, match="after 2 attempts; last: timed out"):
            client.post("/v1/completions", {"model": "m", "prompt": "x"})
        url = srv.url
    client = HTTPClient(url, timeout=0.5, max_retries=1, backoff=0.001)
    with pytest.raises(EngineError, match="after 2 attempts; last: ConnectError"):
        client.post("/v1/completions", {})


@pytest.mark.parametrize("step_rows", [False, True])
def test_prm_over_http(step_rows):
    completions = ["Let x = 2.\n\n\n\nThen x^2 = 4.\n\n\\boxed{4}", "", "one step"]
    with fake.FakeVLLMServer(step_rows=step_rows) as srv:
        prm = OpenAIPRM(srv.url, "Qwen/Qwen2.5-Math-PRM-7B", **FAST)
        scores = prm.score(["What is x^2?"] * 3, completions)
    pooling = [b for p, b, _, _ in srv.log if p == "/pooling"]
    assert len(pooling) == 3  # the empty completion is scored too (one empty step), as the authors do
    first = next(b for b in pooling if "Let x" in b["messages"][2]["content"])
    assert first["task"] == "token_classify" and first["use_activation"] is False
    assert first["messages"] == [
        {"role": "system", "content": PRM_SYSTEM_PROMPT},
        {"role": "user", "content": "What is x^2?"},
        {"role": "assistant",
         "content": "Let x = 2.<extra_0><extra_0>Then x^2 = 4.<extra_0>\\boxed{4}<extra_0>"},
    ]
    steps = ["Let x = 2.", "", "Then x^2 = 4.", "\\boxed{4}"]
    np.testing.assert_allclose(scores[0], [sig(fake.toy_step_logit(s)) for s in steps], rtol=1e-12)
    np.testing.assert_allclose(scores[1], [sig(fake.toy_step_logit(""))], rtol=1e-12)
    np.testing.assert_allclose(scores[2], [sig(fake.toy_step_logit("one step"))], rtol=1e-12)
    n_tokenize = sum(p == "/tokenize" for p, _, _, _ in srv.log)
    assert n_tokenize == (0 if step_rows else 4)  # per-token rows need the step positions (3 conversations + the step token)


_VALIDATE = textwrap.dedent(
    """
    import json, sys
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest, CompletionResponse
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest, ChatCompletionResponse
    from vllm.entrypoints.pooling.pooling.protocol import PoolingChatRequest, PoolingResponse
    from vllm.entrypoints.serve.tokenize.protocol import (
        TokenizeChatRequest, TokenizeCompletionRequest, TokenizeResponse)
    models = {
        "/v1/completions": (CompletionRequest, CompletionResponse),
        "/v1/chat/completions": (ChatCompletionRequest, ChatCompletionResponse),
        "/pooling": (PoolingChatRequest, PoolingResponse),
    }
    problems = []
    for path, body, resp in json.load(open(sys.argv[1])):
        if path == "/tokenize":
            req_model = TokenizeChatRequest if "messages" in body else TokenizeCompletionRequest
            resp_model = TokenizeResponse
        else:
            req_model, resp_model = models[path]
        try:
            req = req_model.model_validate(body)
            extra = set(body) - set(type(req).model_fields)
            if extra:
                problems.append(f"{path}: request fields unknown to vLLM: {sorted(extra)}")
            if path == "/pooling" and req.to_pooling_params().task != "token_classify":
                problems.append("pooling task lost")
        except Exception as e:
            problems.append(f"{path} request: {e}")
        try:
            resp_model.model_validate(resp)
        except Exception as e:
            problems.append(f"{path} response: {e}")
    print("REPORT" + json.dumps(problems))
    """
)


def test_requests_and_fake_responses_match_real_vllm_models(tmp_path):
    """With a real vLLM (OPTSCALE_VLLM_PYTHON or importable here), the client's request
    bodies and the fake server's responses validate against vLLM's pydantic models."""
    python = os.environ.get("OPTSCALE_VLLM_PYTHON")
    if python is None and importlib.util.find_spec("vllm") is not None:
        python = sys.executable
    if python is None:
        pytest.skip("no real vLLM: set OPTSCALE_VLLM_PYTHON to a venv's python with vllm")
    with fake.FakeVLLMServer() as srv:
        OpenAIEngine(srv.url, "m", chat=True, **FAST).sample([SampleRequest("q", 2, seed=1)])
        OpenAIEngine(srv.url, "m", chat=False, **FAST).sample([SampleRequest("q", 2, seed=1)])
        OpenAIPRM(srv.url, "prm", **FAST).score(["q"], ["a\n\nb"])
    log = [(p, b, r) for p, b, s, r in srv.log if s == 200]
    assert {p for p, _, _ in log} == {"/v1/completions", "/v1/chat/completions", "/pooling", "/tokenize"}
    (tmp_path / "log.json").write_text(json.dumps(log))
    (tmp_path / "validate.py").write_text(_VALIDATE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    res = subprocess.run(
        [python, str(tmp_path / "validate.py"), str(tmp_path / "log.json")],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env,
    )
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("REPORT")), None)
    assert line is not None, res.stderr[-3000:]
    assert json.loads(line[len("REPORT"):]) == []


def test_reasoning_field_is_kept():
    class Reasoning(fake.FakeVLLMServer):
        def _completion(self, body, chat):
            out = super()._completion(body, chat)
            for c in out["choices"]:
                c["message"]["reasoning"] = "thinking..."
            return out

    with Reasoning() as srv:
        (comps,) = OpenAIEngine(srv.url, "m", **FAST).sample([SampleRequest("q", 1, seed=3)])
    expected = fake.toy_completion(fake.chatml([{"role": "user", "content": "q"}], True), 3, 0)
    assert comps[0].text == "thinking...\n\n" + expected
