"""Process-reward-model input format and step splitting.

Score aggregation is :func:`optscale_jax.scores.aggregate_step_scores` (re-exported
here with :data:`AGGREGATIONS`), the rule the pool readers use too.

The format is the one of the Qwen2.5-Math-PRM model card (Zhang et al. 2025,
"The Lessons of Developing Process Reward Models in Mathematical Reasoning"):

* steps are the pieces of the completion split on blank lines (``"\\n\\n"``), as
  the authors' scorer makes them (empty pieces included; :func:`split_steps`);
* the conversation is ``system`` = :data:`PRM_SYSTEM_PROMPT`, ``user`` = the
  question, ``assistant`` = the steps joined with the step token
  ``"<extra_0>"`` plus one final step token, rendered with the PRM's chat
  template without a generation prompt;
* the model gives two logits per token; the probability that a step is correct
  is the softmax's positive class (index 1) at that step's step-token position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optscale_jax.scores import AGGREGATIONS, aggregate_step_scores

__all__ = [
    "AGGREGATIONS",
    "PRM_SYSTEM_PROMPT",
    "STEP_TOKEN",
    "aggregate_step_scores",
    "prm_messages",
    "split_steps",
    "step_probabilities",
]

#: Step separator token of Qwen2.5-Math-PRM-7B/72B (token id 151651 in its vocabulary).
STEP_TOKEN = "<extra_0>"
#: System prompt of the Qwen2.5-Math-PRM model card.
PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def split_steps(completion: str, rule: str = "official") -> list[str]:
    """Split a completion into reasoning steps on blank lines.

    Args:
        completion: Completion text.
        rule: ``"official"`` (the authors' scorer, ``generation_and_scoring/prm_scoring.py``):
            ``completion.split("\\n\\n")`` as it is, so empty pieces and surrounding
            whitespace stay and an empty completion is one empty step, which the PRM
            scores; ``"clean"``: the stripped, non-empty pieces (an empty list for an
            empty or whitespace-only completion, which is then not scored).

    Returns:
        The steps.

    Examples:
        >>> split_steps("a = 1\\n\\n\\n\\nso b = 2\\n\\n")
        ['a = 1', '', 'so b = 2', '']
        >>> split_steps("a = 1\\n\\n\\n\\nso b = 2\\n\\n", rule="clean")
        ['a = 1', 'so b = 2']
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    if rule == "official":
        return completion.split("\n\n")
    if rule == "clean":
        return [s.strip() for s in completion.split("\n\n") if s.strip()]
    raise ValueError(f"split_steps: rule must be 'official' or 'clean', got {rule!r}")


def prm_messages(
    question: str,
    steps: Sequence[str],
    *,
    system_prompt: str = PRM_SYSTEM_PROMPT,
    step_token: str = STEP_TOKEN,
) -> list[dict[str, str]]:
    """Build the PRM conversation for one completion.

    Args:
        question: The question text (user turn).
        steps: The completion's steps (see :func:`split_steps`).
        system_prompt: System turn.
        step_token: Token appended after every step.

    Returns:
        Chat messages to render with the PRM tokenizer's chat template
        (``add_generation_prompt=False``).

    Examples:
        >>> prm_messages("1+1?", ["1+1=2", "\\\\boxed{2}"])[2]["content"]
        '1+1=2<extra_0>\\\\boxed{2}<extra_0>'
    """
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": question},
        {"role": "assistant", "content": step_token.join(steps) + step_token},
    ]


def step_probabilities(logits: np.ndarray) -> np.ndarray:
    """Positive-class probability from 2-label logits.

    Args:
        logits: Array (..., 2) of logits for (incorrect, correct).

    Returns:
        softmax(logits)[..., 1] = sigmoid(l1 - l0), computed stably.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 0 or logits.shape[-1] != 2:
        raise ValueError(f"expected logits with a last axis of 2 labels, got shape {logits.shape}")
    d = logits[..., 1] - logits[..., 0]
    out = np.empty_like(d)
    pos = d >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-d[pos]))
    e = np.exp(d[~pos])
    out[~pos] = e / (1.0 + e)
    return out
