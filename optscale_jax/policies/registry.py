"""Every scaling method by name: its labels, whether it reads a prior, and how to build it.

The one table from a method name to a policy. The sweep (which methods exist and how
to name them in reports), the live loop's ``optscale run --policy`` (:func:`make`) and
``optscale replay --policy`` (:func:`resolve`) all read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import Policy
from .baselines import ASC, DSC, ESC, BestOfN, SelfConsistency, WeightedVote
from .mr_thinking import MRThinking
from .optscale import OptScale

__all__ = [
    "POLICY_NAMES",
    "Method",
    "REGISTRY",
    "SWEEP_METHODS",
    "lookup",
    "make",
    "names",
    "resolve",
]


@dataclass(frozen=True)
class Method:
    """One scaling method.

    Attributes:
        name: the canonical name (``--policy`` value, ``method`` of sweep records).
        label: the row label of the paper's Table 1.
        short: the label of console tables.
        family: ``"fixed"`` (a fixed N: BoN, SC, WeightedSC), ``"voter"`` (adaptive
            voting: ESC, ASC, DSC), ``"optscale"`` or ``"live"`` (MR-Thinking: re-prompts,
            so it cannot be replayed from a pool).
        uses_prior: the method reads a per-question prior (OptScaleᵗ).
        aliases: other accepted spellings (lower case).
        build: ``build(n_max, s_min=, alpha=, prior=, mode=, **options)`` -> policy.
    """

    name: str
    label: str
    short: str
    family: str
    uses_prior: bool
    build: Callable[..., Policy]
    aliases: tuple[str, ...] = ()

    @property
    def replayable(self) -> bool:
        """The method can be replayed over a pool (everything but the live-only ones)."""
        return self.family != "live"


def _fixed(cls: type) -> Callable[..., Policy]:
    def build(n_max: int, **options: Any) -> Policy:
        return cls(n_max)

    return build


def _voter(cls: type) -> Callable[..., Policy]:
    def build(n_max: int, *, difficulty: Any = None, **options: Any) -> Policy:
        if difficulty is not None:
            return cls(n_max, difficulty=difficulty)
        return cls(n_max=n_max)

    return build


def _optscale(map_fit: bool) -> Callable[..., Policy]:
    def build(
        n_max: int,
        *,
        s_min: float,
        alpha: float,
        prior: Any = None,
        mode: str = "oneshot",
        n_questions: int = 1,
        **options: Any,
    ) -> Policy:
        if not map_fit:
            prior = None
        elif prior is None:
            from optscale_jax.model import population_prior

            prior = population_prior(n_questions)
        return OptScale(n_max=n_max, s_min=s_min, alpha=alpha, mode=mode, prior=prior)

    return build


def _mr_thinking(n_max: int, **options: Any) -> Policy:
    return MRThinking(n_max)


#: Every method, in the order of the paper's Table 1 (then the live-only ones).
REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("BoN", "Best-of-N (BoN)", "BoN", "fixed", False, _fixed(BestOfN)),
        Method("SC", "Self-Consistency", "SC", "fixed", False, _fixed(SelfConsistency)),
        Method("WeightedSC", "Weighted SC", "WeightedSC", "fixed", False, _fixed(WeightedVote)),
        Method("ESC", "Early-stopping SC (ESC)", "ESC", "voter", False, _voter(ESC)),
        Method("ASC", "Adaptive SC (ASC)", "ASC", "voter", False, _voter(ASC)),
        Method("DSC", "Difficulty-Adaptive SC (DSC)", "DSC", "voter", False, _voter(DSC)),
        Method("OptScale0", "OptScale$^0$ (MLE) (Ours)", "OptScale⁰", "optscale", False,
               _optscale(map_fit=False)),
        Method("OptScaleT", "OptScale$^t$ (MAP) (Ours)", "OptScaleᵗ", "optscale", True,
               _optscale(map_fit=True)),
        Method("MR-Thinking", "MR-Thinking", "MR-Thinking", "live", False, _mr_thinking,
               aliases=("mrthinking", "mr")),
    )
}

#: Every method name, the live-only ones included (``optscale run --policy``).
POLICY_NAMES: tuple[str, ...] = tuple(REGISTRY)
#: The methods a sweep replays over a pool (``optscale replay --policy``).
SWEEP_METHODS: tuple[str, ...] = tuple(n for n, m in REGISTRY.items() if m.replayable)

_BY_KEY = {key: m for m in REGISTRY.values() for key in (m.name.lower(), *m.aliases)}


def names(*, replayable: bool | None = None) -> tuple[str, ...]:
    """Method names in table order.

    Args:
        replayable: True: only those a sweep can replay; False: only the live-only ones.

    Returns:
        The names.
    """
    if replayable is None:
        return POLICY_NAMES
    return tuple(n for n, m in REGISTRY.items() if m.replayable == replayable)


def lookup(name: str) -> Method | None:
    """The method of a name, case-insensitive, aliases accepted; None when unknown."""
    return _BY_KEY.get(name.strip().lower())


def resolve(name: str, *, replayable: bool | None = None) -> str:
    """The canonical name of a method.

    Args:
        name: any accepted spelling.
        replayable: restrict to the methods a sweep replays (True).

    Returns:
        The canonical name.

    Raises:
        ValueError: an unknown name (the message lists the choices).
    """
    m = lookup(name)
    if m is None or (replayable is not None and m.replayable != replayable):
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(names(replayable=replayable))}")
    return m.name


def make(
    name: str,
    *,
    n_max: int,
    s_min: float = 0.95,
    alpha: float = 0.95,
    prior: Any = None,
    mode: str = "oneshot",
    n_questions: int = 1,
    **options: Any,
) -> Policy:
    """Build a policy from its name.

    Args:
        name: a method name (case-insensitive; see :data:`POLICY_NAMES`).
        n_max: sample budget per question (the fixed N of BoN/SC/WeightedSC; rounds
            for MR-Thinking).
        s_min: OptScale target score.
        alpha: OptScale target probability that the best sample reaches ``s_min``
            (``1 - quantile``; default 0.95, i.e. quantile 0.05).
        prior: OptScaleᵗ prior (default: :func:`optscale_jax.model.population_prior`);
            ignored by every other method.
        mode: OptScale ``"oneshot"`` or ``"sequential"``.
        n_questions: questions, for the default prior.
        **options: method options; ``difficulty`` for the voters (DSC's ranking).

    Returns:
        The policy.

    Raises:
        ValueError: an unknown name, or bad parameters.

    Examples:
        >>> make("sc", n_max=8).name
        'SC'
    """
    m = lookup(name)
    if m is None:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
    return m.build(n_max, s_min=s_min, alpha=alpha, prior=prior, mode=mode, n_questions=n_questions,
                   **options)
