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
from .budget import OptScaleBudget, UniformEliminate
from .mr_thinking import MRThinking
from .optscale import OptScale
from .optscale_h import OptScaleH

__all__ = [
    "DEFAULT_METHODS",
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
            voting: ESC, ASC, DSC), ``"optscale"``, ``"budget"`` (one token budget across
            questions: OptScaleBudget, UniformEliminate; options ``token_budget``,
            ``wave_size``) or ``"live"`` (MR-Thinking: re-prompts, so it cannot be replayed
            from a pool).
        uses_prior: the method reads a per-question prior (OptScaleᵗ; OptScaleBudget's
            lattice posterior).
        aliases: other accepted spellings (lower case).
        build: ``build(n_max, s_min=, alpha=, prior=, mode=, **options)`` -> policy.
        in_all: part of the default method set (:data:`DEFAULT_METHODS`: a sweep's default,
            ``optscale replay --policy all``); False for opt-in methods (OptScaleH, and the
            budget methods, which answer another question: one token budget for all questions).
    """

    name: str
    label: str
    short: str
    family: str
    uses_prior: bool
    build: Callable[..., Policy]
    aliases: tuple[str, ...] = ()
    in_all: bool = True

    @property
    def replayable(self) -> bool:
        """The method can be replayed over a pool (everything but the live-only ones)."""
        return self.family != "live"

    @property
    def couples_questions(self) -> bool:
        """The policy's rule looks at every question at once (its class says so:
        ``couples_questions``), so sweeps and replays never cut it into question chunks."""
        return bool(getattr(getattr(self.build, "policy_class", None), "couples_questions", False))


def _fixed(cls: type) -> Callable[..., Policy]:
    def build(n_max: int, **options: Any) -> Policy:
        return cls(n_max)

    return build


def _voter(cls: type) -> Callable[..., Policy]:
    def build(n_max: int, *, difficulty: Any = None, **options: Any) -> Policy:
        if difficulty is not None:
            return cls(n_max, difficulty=difficulty)
        return cls(n_max=n_max)

    build.policy_class = cls
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
        family = options.get("family") or "truncnorm"  # score family (optscale_jax.families)
        return OptScale(n_max=n_max, s_min=s_min, alpha=alpha, mode=mode, prior=prior,
                        family=family)

    return build


def _optscale_h(
    n_max: int, *, s_min: float, alpha: float, mode: str = "oneshot", prior: Any = None, **options: Any
) -> Policy:
    """OptScaleH; options ``covariates``, ``method``, ``ridge``, ``population``, ``n_init``, ``step``, ``k``."""
    known = ("covariates", "method", "ridge", "population", "n_init", "step", "k")
    return OptScaleH(n_max=n_max, s_min=s_min, alpha=alpha, mode=mode,
                     **{k: v for k, v in options.items() if k in known})


_optscale_h.policy_class = OptScaleH


def _mr_thinking(n_max: int, **options: Any) -> Policy:
    return MRThinking(n_max)


def _budget(cls: type) -> Callable[..., Policy]:
    """A budget policy; ``token_budget``, ``wave_size`` and the class's other fields as options."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)} - {"n_max", "s_min", "name"}

    def build(n_max: int, *, s_min: float, prior: Any = None, **options: Any) -> Policy:
        kw = {k: v for k, v in options.items() if k in known}
        if prior is not None and "prior" in known:
            kw["prior"] = prior
        return cls(n_max=n_max, s_min=s_min, **kw)

    build.policy_class = cls
    return build


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
        Method("OptScaleH", "OptScale$^H$ (MAP, population law learned from the pool)", "OptScaleᴴ",
               "optscale", False, _optscale_h, aliases=("optscale-h", "hierarchical"), in_all=False),
        Method("MR-Thinking", "MR-Thinking", "MR-Thinking", "live", False, _mr_thinking,
               aliases=("mrthinking", "mr")),
        Method("OptScaleBudget", "OptScale-Budget (one token budget, greedy gain per token)",
               "OptScale-Budget", "budget", True, _budget(OptScaleBudget),
               aliases=("optscale-budget", "budget"), in_all=False),
        Method("UniformEliminate", "Uniform + elimination (after arXiv 2506.12721)",
               "UniformElim", "budget", False, _budget(UniformEliminate),
               aliases=("uniform-eliminate", "eliminate"), in_all=False),
    )
}

#: Every method name, the live-only ones included (``optscale run --policy``).
POLICY_NAMES: tuple[str, ...] = tuple(REGISTRY)
#: The methods a sweep replays over a pool (``optscale replay --policy``).
SWEEP_METHODS: tuple[str, ...] = tuple(n for n, m in REGISTRY.items() if m.replayable)
#: The replayable methods run by default (a sweep's default; ``--policy all``): all but the
#: opt-in ones (OptScaleH, which fits a population law per peek; the budget methods).
DEFAULT_METHODS: tuple[str, ...] = tuple(n for n in SWEEP_METHODS if REGISTRY[n].in_all)

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
