"""MR-Thinking: a live-only policy that re-prompts every round (Tian et al. 2025).

One sample per round, the last round's answer is kept. The live loop
(:func:`optscale_jax.online.run`) asks any policy with a
``prompt(question_prompt, previous_completions)`` method for its prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import Observed

__all__ = ["MR_THINKING_TEMPLATE", "MRThinking", "final_answer_text"]


def final_answer_text(completion: str) -> str:
    """The part of a completion after its reasoning: text after the last ``</think>``, else all."""
    return completion.rsplit("</think>", 1)[1].strip() if "</think>" in completion else completion.strip()


#: The user prompt of every round in the authors' sequential (MR-Thinking) generator, with
#: ``{question}`` for the problem (pass it as ``prompt_template`` for their exact prompt).
MR_THINKING_TEMPLATE = (
    "Answer the following questions. You should think step-by-step and put your final answer "
    "within $\\boxed{answer}$, where [answer] is just the final number or expression that solves "
    "the problem.\n Question: {question}"
)


@dataclass
class MRThinking:
    """Multi-round thinking: one sample per round, the last round's answer is kept.

    ``style="official"`` (default) is what the OptScale authors' generator does: every round
    sends the same prompt (the question, rendered with the run's ``prompt_template``; their
    template is :data:`MR_THINKING_TEMPLATE`), without the previous answer.
    ``style="think-twice"`` is the rule of Tian et al. 2025 ("Think Twice", arXiv
    2503.19855): every later round asks the question again followed by
    "The assistant's previous answer is: <answer> {last round answer} </answer>,
    and please re-answer." where the last round answer is the previous completion
    without its reasoning (the text after ``</think>``). ``n_max`` = rounds; tokens of
    every round are charged.

    Args:
        rounds: Number of rounds (>= 1).
        style: ``"official"`` or ``"think-twice"``.
    """

    rounds: int
    name: str = "MR-Thinking"
    style: str = "official"

    def __post_init__(self) -> None:
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise ValueError(f"MRThinking.rounds must be an integer >= 1, got {self.rounds!r}")
        self.rounds = int(self.rounds)
        if self.style not in ("official", "think-twice"):
            raise ValueError(f"MRThinking.style must be 'official' or 'think-twice', got {self.style!r}")

    @property
    def n_max(self) -> int:
        """Number of rounds."""
        return self.rounds

    def want(self, obs: Observed) -> np.ndarray:
        """One more sample per round, until ``rounds``."""
        return np.minimum(obs.n_drawn + 1, self.rounds)

    def select(self, obs: Observed) -> np.ndarray:
        """The last drawn sample (the final round's answer)."""
        return np.maximum(obs.n_drawn - 1, 0)

    def prompt(self, question_prompt: str, previous: Sequence[str]) -> str:
        """The user prompt of the next round given the completions of earlier rounds."""
        if not previous or self.style == "official":
            return question_prompt
        return (
            f"{question_prompt}\nThe assistant's previous answer is: <answer> "
            f"{final_answer_text(previous[-1])} </answer>, and please re-answer."
        )
