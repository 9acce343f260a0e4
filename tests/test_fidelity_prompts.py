"""MR-Thinking prompts and the PRM input, byte for byte against the authors' code.

* MR-Thinking: the authors' generator (``generation_and_scoring/llama8b_correct_model.py``,
  whose outputs ``Seq/mr_thinking.py`` evaluates) sends, every round, their template
  formatted with the problem, rendered by ``prompt_R1`` (user turn, chat template,
  generation prompt). Their template is a local variable of ``main``: read from their
  source.
* PRM input: their ``run_prm_scoring`` runs end to end with a tiny tokenizer built offline
  (no hub) and a stand-in model that records what it is given.
"""

from __future__ import annotations

import argparse
import ast
import json
import random

import numpy as np
import official
import pytest

from optscale_jax.engines.transformers import TransformersEngine, TransformersPRM, make_tiny_models
from optscale_jax.online import MR_THINKING_TEMPLATE, MRThinking

pytestmark = pytest.mark.data

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("tiny_fid"), seed=0)


def _their_template() -> str:
    tree = ast.parse(official.source("generation_and_scoring/llama8b_correct_model.py"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "template" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("their template was not found")


def _random_text(rng: random.Random) -> str:
    pieces = ["x = 1", "\\frac{1}{2}", "  so  ", "", "{answer}", "{problem}", "é ∑", "\\boxed{3}", " "]
    seps = ["\n\n", "\n", "\n\n\n\n", " \n\n", "\n\n ", ""]
    return "".join(rng.choice(pieces) + rng.choice(seps) for _ in range(rng.randint(0, 8)))


def test_mr_thinking_prompts_equal_theirs(shared_data, tiny):
    o = official.load("generation_and_scoring/llama8b_correct_model.py", "prompt_R1")
    template = _their_template()
    engine = TransformersEngine(tiny[0], max_tokens=4)
    tok = engine.tokenizer
    rng = random.Random(4)
    policy = MRThinking(4)
    for _ in range(30):
        problem = _random_text(rng) or "What is 1+1?"
        theirs = o.prompt_R1(template.format(problem=problem), tok)
        base = MR_THINKING_TEMPLATE.replace("{question}", problem)  # what the live loop does
        previous: list[str] = []
        for _round in range(policy.rounds):  # every round: the same prompt as theirs
            assert engine.chat_prompt(policy.prompt(base, previous)) == theirs
            previous.append(_random_text(rng))
    # The Think-Twice option does add the previous answer.
    assert "<answer>" in MRThinking(2, style="think-twice").prompt(base, ["a</think> 4"])


class _Recorder:
    """Stand-in PRM model: returns zero logits and remembers its inputs."""

    device = "cpu"

    def __init__(self):
        self.inputs = []

    def eval(self):
        return self

    def __call__(self, input_ids):
        self.inputs.append(input_ids[0].tolist())
        return (torch.zeros(1, input_ids.shape[1], 2),)


def test_prm_input_equals_theirs(shared_data, tiny, tmp_path):
    o = official.load("generation_and_scoring/prm_scoring.py", "run_prm_scoring")
    prm = TransformersPRM(tiny[1])
    tok = prm.tokenizer
    rec = _Recorder()
    rendered = []

    class _Tok:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            real = type(tok).from_pretrained(str(tiny[1]))
            orig = real.apply_chat_template

            def capture(*a, **k):
                out = orig(*a, **k)
                rendered.append(out)
                return out

            real.apply_chat_template = capture
            return real

    class _Model:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return rec

    g = o.run_prm_scoring.__globals__
    g["AutoTokenizer"], g["AutoModel"] = _Tok, _Model
    rng = random.Random(8)
    items = [{"problem": _random_text(rng) or "Q?", "outputs": ["", "  ", "a\n\n\n\nb \n\n"]
              + [_random_text(rng) for _ in range(5)]} for _ in range(4)]
    src = tmp_path / "in.json"
    src.write_text(json.dumps(items), encoding="utf-8")
    o.run_prm_scoring(argparse.Namespace(input_path=str(src), output_path=str(tmp_path / "out.json"),
                                         prm_model="tiny"))
    ours = [prm.render(it["problem"], c) for it in items for c in it["outputs"]]
    assert [r for r, _ in ours] == rendered  # the conversation strings, byte for byte
    # ... and the token ids the model sees, and one step score per step token.
    assert [tok.encode(r) for r, _ in ours] == rec.inputs
    step_id = tok.convert_tokens_to_ids("<extra_0>")
    assert [k for _, k in ours] == [int(np.sum(np.array(ids) == step_id)) for ids in rec.inputs]
