"""The engine interface: sampling completions and scoring them with a PRM.

Two small protocols keep the live loop (:mod:`optscale_jax.online`) independent
of where the model runs:

* an :class:`Engine` turns a batch of :class:`SampleRequest` (one user prompt,
  ``n`` completions wanted, a seed) into :class:`Completion` lists — text,
  completion token count, finish reason;
* a :class:`Scorer` (a process reward model) turns (question, completion)
  pairs into per-step scores in [0, 1].

The backends are :class:`~optscale_jax.engines.vllm.VLLMEngine` (in process),
:class:`~optscale_jax.engines.openai.OpenAIEngine` (a vLLM server over HTTP)
and :class:`~optscale_jax.engines.transformers.TransformersEngine` (CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "Completion",
    "Engine",
    "EngineError",
    "SampleRequest",
    "Scorer",
    "check_requests",
]

#: The system prompt of the Qwen2.5-Math PRM model card (also a sensible default
#: instruction for math generators).
DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


class EngineError(RuntimeError):
    """An inference backend failed (server error, bad response, missing dependency)."""


@dataclass(frozen=True)
class SampleRequest:
    """Ask for ``n`` completions of one user prompt.

    Attributes:
        prompt: The user message (the engine applies the model's chat template).
        n: Number of completions wanted, >= 1.
        seed: Sampling seed for this request, or None for nondeterministic sampling.
    """

    prompt: str
    n: int
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    """One sampled completion.

    Attributes:
        text: The generated text (special tokens removed).
        tokens: Number of completion tokens the engine generated (including a
            final end-of-sequence token when generation stopped on it).
        finish_reason: ``"stop"`` (end of sequence or stop string), ``"length"``
            (hit the token limit) or whatever the backend reported.
    """

    text: str
    tokens: int
    finish_reason: str | None


@runtime_checkable
class Engine(Protocol):
    """Samples completions; one call should keep the backend busy with the whole batch."""

    name: str

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Completion]]:
        """Sample completions.

        Args:
            requests: The prompts with the number of completions each needs.

        Returns:
            For each request, exactly ``request.n`` completions, in request order.

        Raises:
            EngineError: When the backend fails.
        """
        ...


@runtime_checkable
class Scorer(Protocol):
    """A process reward model: per-step scores of completions."""

    name: str

    def score(self, questions: Sequence[str], completions: Sequence[str]) -> list[list[float]]:
        """Score completions step by step.

        Args:
            questions: The question of each completion (same length as ``completions``).
            completions: The completion texts.

        Returns:
            For each completion, the probability in [0, 1] that each step is
            correct; an empty list for a completion without any step.

        Raises:
            EngineError: When the backend fails.
        """
        ...


def check_requests(requests: Sequence[SampleRequest]) -> None:
    """Validate a batch of sample requests.

    Args:
        requests: Requests to check.

    Raises:
        ValueError: Naming the first request that is not a ``SampleRequest``, has
            ``n < 1`` or a non-string prompt.
    """
    for i, r in enumerate(requests):
        if not isinstance(r, SampleRequest):
            raise ValueError(f"request {i} is a {type(r).__name__}, expected SampleRequest")
        if not isinstance(r.prompt, str):
            raise ValueError(f"request {i}: prompt must be a str, got {type(r.prompt).__name__}")
        if int(r.n) != r.n or r.n < 1:
            raise ValueError(f"request {i}: n must be a positive integer, got {r.n!r}")
