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
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "Completion",
    "Engine",
    "EngineError",
    "ModelNotFoundError",
    "SampleRequest",
    "Scorer",
    "check_model_ref",
    "check_requests",
    "describe",
    "model_identity",
]

#: The system prompt of the Qwen2.5-Math PRM model card (also a sensible default
#: instruction for math generators).
DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


class EngineError(RuntimeError):
    """An inference backend failed (server error, bad response, missing dependency)."""


class ModelNotFoundError(ValueError):
    """A model or PRM reference names no local directory and cannot be loaded.

    A ``ValueError``: the user gave a bad path or id, nothing failed at run time.
    """


def check_model_ref(ref: Any, what: str = "model") -> None:
    """Fail fast, before loading anything, when ``ref`` is a local path that does not exist.

    A reference that exists on disk must be a directory (what ``from_pretrained``
    loads). One that does not exist is an error when it looks like a path (starts
    with ``/``, ``./``, ``../`` or ``~``, or has more than one ``/``); otherwise it
    is taken as a Hugging Face hub id (``org/name``) and left to the loader.

    Args:
        ref: The model reference (a loaded model object is accepted as is).
        what: How the message names it (e.g. ``"--model"``).

    Raises:
        ModelNotFoundError: Naming ``what`` and the path.
    """
    if not isinstance(ref, str | Path):
        return
    text = str(ref)
    if not text.strip():
        raise ModelNotFoundError(f"{what}: empty model reference; expected a local directory or a hub id")
    p = Path(text).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelNotFoundError(f"{what}: {text} is a file; expected a model directory or a hub id")
        return
    looks_local = (
        isinstance(ref, Path)
        or text.startswith(("/", "./", "../", "~", "."))
        or text.count("/") > 1
        or "\\" in text
    )
    if looks_local:
        raise ModelNotFoundError(f"{what}: local model directory {text} does not exist")


def model_identity(ref: Any) -> dict[str, Any]:
    """What identifies a model in a run header: its id or absolute local path, and revision.

    Args:
        ref: A model id/path, or a loaded model (its ``config._name_or_path`` and
            ``config._commit_hash`` are used).

    Returns:
        ``{"model": id or absolute path, "revision": hub commit hash or None}``.
    """
    revision = None
    if not isinstance(ref, str | Path):
        cfg = getattr(ref, "config", None)
        revision = getattr(cfg, "_commit_hash", None)
        ref = getattr(cfg, "_name_or_path", None) or type(ref).__name__
    text = str(ref)
    p = Path(text).expanduser()
    if p.is_dir():
        text = str(p.resolve())
    return {"model": text, "revision": revision}


def describe(backend: Any) -> dict[str, Any]:
    """A backend's settings for a run header: ``backend.describe()`` or just its name.

    Engines describe what decides their samples (model, revision, sampling
    settings), never credentials.
    """
    fn = getattr(backend, "describe", None)
    if callable(fn):
        return dict(fn())
    return {"backend": str(getattr(backend, "name", type(backend).__name__))}


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
