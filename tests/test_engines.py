"""Engine interface, PRM format helpers, and the transformers engine on tiny random models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optscale_jax.engines import (
    Completion,
    Engine,
    EngineError,
    SampleRequest,
    Scorer,
    TransformersEngine,
    TransformersPRM,
    aggregate_step_scores,
    check_requests,
    make_tiny_models,
    prm_messages,
    split_steps,
    step_probabilities,
)

torch = pytest.importorskip("torch")


# --- PRM helpers ---------------------------------------------------------------------


def test_split_steps():
    assert split_steps("", rule="clean") == []
    assert split_steps(" \n\n \n", rule="clean") == []
    assert split_steps("one", rule="clean") == ["one"]
    assert split_steps("a\nb\n\nc\n\n\n\n d \n\n", rule="clean") == ["a\nb", "c", "d"]
    assert split_steps("") == [""]  # the authors' scorer: split as it is
    assert split_steps("a\nb\n\nc\n\n\n\n d \n\n") == ["a\nb", "c", "", " d ", ""]
    with pytest.raises(TypeError, match="must be a str"):
        split_steps(None)


def test_prm_messages_model_card_format():
    m = prm_messages("Q?", ["s1", "s2"])
    assert [x["role"] for x in m] == ["system", "user", "assistant"]
    assert m[0]["content"] == "Please reason step by step, and put your final answer within \\boxed{}."
    assert m[2]["content"] == "s1<extra_0>s2<extra_0>"


def test_step_probabilities_is_softmax_positive_class():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=30, size=(50, 2))
    ref = torch.softmax(torch.tensor(logits), dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(step_probabilities(logits), ref, rtol=1e-12, atol=1e-300)
    assert step_probabilities(np.array([[0.0, 800.0], [800.0, 0.0]])).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="last axis of 2"):
        step_probabilities(np.zeros((3, 3)))


@pytest.mark.parametrize(
    ("how", "expected"), [("mean", 0.6), ("last", 0.8), ("min", 0.4), ("product", 0.4 * 0.6 * 0.8)]
)
def test_aggregate(how, expected):
    assert math.isclose(aggregate_step_scores([0.4, 0.6, 0.8], how), expected)
    assert aggregate_step_scores([], how) == 0.0


def test_aggregate_bad_input():
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate_step_scores([0.5], "max")
    with pytest.raises(ValueError, match="step score 1 is nan"):
        aggregate_step_scores([0.5, float("nan")])
    with pytest.raises(ValueError, match="step score 0 is 1.5"):
        aggregate_step_scores([1.5])


def test_check_requests():
    check_requests([SampleRequest("q", 2, seed=1)])
    with pytest.raises(ValueError, match="request 1: n must be a positive integer, got 0"):
        check_requests([SampleRequest("q", 1), SampleRequest("q", 0)])
    with pytest.raises(ValueError, match="request 0 is a str"):
        check_requests(["q"])


# --- transformers engine on tiny random models -----------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def engine(tiny):
    return TransformersEngine(tiny[0], max_tokens=16)


def test_engine_protocols(engine, tiny):
    assert isinstance(engine, Engine)
    assert isinstance(TransformersPRM(tiny[1]), Scorer)


def test_generate_counts_finish_and_determinism(engine):
    reqs = [SampleRequest("What is 1+1?", 3, seed=1), SampleRequest("hello", 2, seed=2)]
    out = engine.sample(reqs)
    assert [len(o) for o in out] == [3, 2]
    for comps in out:
        for c in comps:
            assert isinstance(c, Completion)
            # byte-level tokenizer: >= one token per character (+ skipped special tokens)
            assert len(c.text) + (c.finish_reason == "stop") <= c.tokens <= 16
            assert c.finish_reason in ("stop", "length")
            assert c.finish_reason == "stop" or c.tokens == 16
    # reference: the same seeded generate call made directly, tokens counted up to the first EOS
    tok, model = engine.tokenizer, engine.model
    ids = torch.tensor([tok.encode(engine.chat_prompt("hello"))])
    torch.manual_seed(2)
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.7,
                         top_p=0.95, top_k=0, max_new_tokens=16, num_return_sequences=2,
                         pad_token_id=tok.pad_token_id)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    for row, c in zip(ref[:, ids.shape[1]:].tolist(), out[1], strict=False):
        n = row.index(eos) + 1 if eos in row else len(row)
        assert c.tokens == n and c.finish_reason == ("stop" if eos in row else "length")
        assert c.text == tok.decode(row[:n], skip_special_tokens=True)
    assert engine.sample(reqs[:1]) == out[:1]  # same seed, same completions, batch-independent
    other = engine.sample([SampleRequest("What is 1+1?", 3, seed=99)])
    assert other[0] != out[0]


def test_generate_matches_greedy_reference(tiny):
    """With top_p -> 0 sampling keeps only the top token: equal to greedy decoding run directly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    eng = TransformersEngine(tiny[0], max_tokens=12, top_p=1e-9, system_prompt="sys")
    (comps,) = eng.sample([SampleRequest("abc", 2, seed=0)])
    tok = AutoTokenizer.from_pretrained(tiny[0])
    model = AutoModelForCausalLM.from_pretrained(tiny[0])
    text = "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nabc<|im_end|>\n<|im_start|>assistant\n"
    assert eng.chat_prompt("abc") == text
    ids = torch.tensor([tok.encode(text)])
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                         pad_token_id=tok.pad_token_id)
    new = ref[0, ids.shape[1]:].tolist()
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    if eos in new:
        new = new[: new.index(eos) + 1]
    assert comps[0].text == comps[1].text == tok.decode(new, skip_special_tokens=True)
    assert comps[0].tokens == len(new)


def test_prm_matches_direct_forward(tiny):
    prm = TransformersPRM(tiny[1], batch_size=2)
    questions = ["What is 3*3?", "q2", "q3", "q4"]
    completions = ["3*3 = 9.\n\nSo \\boxed{9}", "", "one long single step " * 3, "a\n\nb\n\nc"]
    got = prm.score(questions, completions)
    assert len(got[1]) == 1  # an empty completion is one empty step, scored (the authors' scorer)
    assert [len(g) for g in got] == [2, 1, 1, 3]
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny[1])
    model = AutoModelForTokenClassification.from_pretrained(tiny[1])
    for q, c, g in zip(questions, completions, got, strict=False):
        if not g:
            continue
        steps = c.split("\n\n")
        text = (
            "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
            f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n" + "<extra_0>".join(steps) + "<extra_0><|im_end|>\n"
        )
        ids = torch.tensor([tok.encode(text)])
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=ids).logits[0].double(), -1)[:, 1]
        mask = ids[0] == tok.convert_tokens_to_ids("<extra_0>")
        np.testing.assert_allclose(g, probs[mask].numpy(), rtol=1e-5)  # batched + padded = unbatched
    assert len({round(x, 6) for g in got for x in g}) > 3  # scores actually vary


def test_prm_errors(tiny):
    prm = TransformersPRM(tiny[1])
    with pytest.raises(ValueError, match="2 questions but 1 completions"):
        prm.score(["a", "b"], ["x"])
    with pytest.raises(EngineError, match="1 steps but 2 step tokens"):
        prm.score(["q"], ["a <extra_0> b"])
    with pytest.raises(ValueError, match="not a single token"):
        TransformersPRM(tiny[1], step_token="<not a token>")
