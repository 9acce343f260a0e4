"""The paper's whole comparison on one pool: every method over a grid, as flat records.

:func:`sweep` runs Best-of-N, self-consistency and weighted voting at N = 1, 2, 4, ...,
n_max; ESC, ASC and DSC at every n_max; and OptScale⁰ / OptScaleᵗ over the official
(s_min, alpha, n_max) grid. It works in named steps: check the options
(:func:`resolve_grid`), one helper per method family (:func:`fixed_records`,
:func:`voter_records`, :func:`optscale_records`) on each ordering of the pool, then
:func:`summarise` (average over orderings, bootstrap over questions). The OptScale fits
are computed once per (question, prefix length) and reused by every (s_min, alpha); the
stopping rule itself is the policy's (:mod:`optscale_jax.policies.optscale`), so a sweep
equals :func:`optscale_jax.replay.replay` of the corresponding policy.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from optscale_jax.grading import VOTE_RULES, vote_classes
from optscale_jax.policies.baselines import dsc_official_difficulty
from optscale_jax.policies.optscale import checkpoints, oneshot_draws, sequential_draws
from optscale_jax.policies.registry import DEFAULT_METHODS, REGISTRY, SWEEP_METHODS, make
from optscale_jax.pool import Pool
from optscale_jax.replay import (
    bootstrap_ci,
    pareto_frontier,
    prefix_best_of_n,
    run_policy,
    tokens_and_correct,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_FAMILIES",
    "Grid",
    "GridClippedWarning",
    "METHODS",
    "OFFICIAL_GRID",
    "Outcomes",
    "BUDGET_FRACTIONS",
    "Record",
    "SweepResult",
    "budget_records",
    "clip_grid",
    "fixed_records",
    "optscale_records",
    "pool_width",
    "resolve_families",
    "resolve_grid",
    "summarise",
    "sweep",
    "takes_prior",
    "voter_records",
]

#: Methods :func:`sweep` knows (every replayable method of the registry).
METHODS: tuple[str, ...] = SWEEP_METHODS

#: Questions per chunk of :func:`sweep` by default: pools up to this size run in one chunk.
DEFAULT_CHUNK_SIZE = 4096
#: Token budgets of the budget methods (OptScaleBudget, UniformEliminate) in a sweep: these
#: fractions of what Best-of-N at the largest n_max pays for the whole pool.
BUDGET_FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.5)

#: OptScale method name of each fit variant.
_OPTSCALE = {"MLE": "OptScale0", "MAP": "OptScaleT"}
#: The fields of a :class:`Record` that name its configuration.
_CONFIG_FIELDS = ("method", "variant", "mode", "n_max", "N", "k", "s_min", "quantile", "alpha", "family",
                  "token_budget")
#: The sweep's score families by default: the paper's truncated normal alone (records unlabelled).
DEFAULT_FAMILIES: tuple[str, ...] = ("truncnorm",)


# ----------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Grid:
    """A sweep grid.

    Attributes:
        s_min: target scores.
        quantile: ``1 - alpha`` values (the ``percentile`` field of the authors' files).
        n_max: sample budgets.
    """

    s_min: tuple[float, ...]
    quantile: tuple[float, ...]
    n_max: tuple[int, ...]

    def __post_init__(self) -> None:
        for s in self.s_min:
            if not 0.0 < s < 1.0:
                raise ValueError(f"Grid.s_min values must be in (0, 1), got {s!r}")
        for q in self.quantile:
            if not 0.0 < q < 1.0:
                raise ValueError(f"Grid.quantile (1 - alpha) values must be in (0, 1), got {q!r}")
        for n in self.n_max:
            if int(n) != n or n < 1:
                raise ValueError(f"Grid.n_max values must be integers >= 1, got {n!r}")

    @property
    def alpha(self) -> tuple[float, ...]:
        """Target probabilities ``alpha = 1 - quantile``."""
        return tuple(1.0 - q for q in self.quantile)

    @property
    def size(self) -> int:
        """Number of (s_min, alpha, n_max) configurations per OptScale variant."""
        return len(self.s_min) * len(self.quantile) * len(self.n_max)


#: The authors' grid (their result files; docs/CONTRACTS.md): 8 s_min x 6 (1 - alpha) x 4 n_max.
OFFICIAL_GRID = Grid(
    s_min=(0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99),
    quantile=(0.01, 0.02, 0.035, 0.05, 0.075, 0.1),
    n_max=(8, 16, 32, 64),
)


class GridClippedWarning(UserWarning):
    """A sweep budget exceeded the samples the pool holds and was clipped to them."""


def pool_width(pool: Pool) -> int:
    """Samples in the pool's widest row: no budget above it can be replayed."""
    return int(pool.n_samples.max(initial=0))


def clip_grid(grid: Grid, width: int) -> tuple[Grid, list[int]]:
    """Clip a grid's ``n_max`` budgets to the pool width (``width`` samples per question).

    Replaying N = 64 on a pool of 4 samples per question would draw 4 and label it 64;
    budgets above ``width`` are replaced by ``width`` (duplicates merged).

    Args:
        grid: the sweep grid.
        width: :func:`pool_width` of the pool, >= 1.

    Returns:
        ``(grid, clipped)``: the clipped grid and the budgets that were above ``width``.

    Raises:
        ValueError: ``width < 1`` (a pool without samples).
    """
    if width < 1:
        raise ValueError(f"the pool has no samples (width {width}): nothing to replay")
    clipped = [int(n) for n in grid.n_max if n > width]
    if not clipped:
        return grid, []
    ns = tuple(sorted({min(int(n), width) for n in grid.n_max}))
    return Grid(s_min=grid.s_min, quantile=grid.quantile, n_max=ns), clipped


# -------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Record:
    """One configuration of a sweep and what it measured.

    Attributes:
        method: e.g. ``"BoN"``, ``"OptScale0"``.
        variant: ``"MLE"``/``"MAP"`` (OptScale) or None.
        mode: ``"oneshot"``/``"sequential"`` (OptScale) or None.
        n_max: sample budget (the fixed N of BoN/SC/WeightedSC).
        N: the fixed N of BoN/SC/WeightedSC, else None.
        k: the one-shot peek, else None.
        s_min: OptScale target score, else None.
        quantile: OptScale ``1 - alpha``, else None.
        alpha: OptScale target probability, else None.
        family: OptScale's score family (:mod:`optscale_jax.families`) when the sweep ran
            families other than the default, else None (the paper's ``truncnorm``; not
            serialised, so a default sweep's records are unchanged).
        token_budget: total tokens for the whole pool (budget methods), else None (not
            serialised).
        accuracy: mean correctness over questions.
        mean_tokens: mean tokens paid per question.
        mean_samples: mean samples drawn per question.
        accuracy_ci: bootstrap interval of ``accuracy`` (None before :func:`summarise`).
        mean_tokens_ci: same for ``mean_tokens``.
        mean_samples_ci: same for ``mean_samples``.
        values: ``(Q, 3)`` per-question (correct, tokens, samples); not serialised.
    """

    method: str
    variant: str | None = None
    mode: str | None = None
    n_max: int | None = None
    N: int | None = None
    k: int | None = None
    s_min: float | None = None
    quantile: float | None = None
    alpha: float | None = None
    family: str | None = None
    token_budget: float | None = None
    accuracy: float = math.nan
    mean_tokens: float = math.nan
    mean_samples: float = math.nan
    accuracy_ci: tuple[float, float] | None = None
    mean_tokens_ci: tuple[float, float] | None = None
    mean_samples_ci: tuple[float, float] | None = None
    values: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def measured(
        cls, correct: np.ndarray, tokens: np.ndarray, drawn: np.ndarray, **config: Any
    ) -> Record:
        """A record of per-question outcomes (totals are filled by :func:`summarise`)."""
        values = np.stack([correct, tokens, drawn], axis=1).astype(np.float64)
        return cls(**config, values=values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``values`` left out; intervals as ``[lo, hi]`` lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "values" or ((f.name.endswith("_ci") or f.name in ("family", "token_budget"))
                                      and v is None):
                continue
            out[f.name] = list(v) if f.name.endswith("_ci") else v
        return out


@dataclass
class SweepResult:
    """Every configuration of a sweep, as flat records.

    Attributes:
        label: pool label (says "synthetic" for the synthetic twin).
        synthetic: True when the pool is synthetic.
        n_questions: questions in the pool.
        records: one dict per configuration (:meth:`Record.to_dict`) with keys ``method``
            (e.g. "BoN", "OptScale0"), ``variant`` ("MLE"/"MAP" or None), ``mode``,
            ``n_max``, ``N`` (fixed-size baselines), ``k``, ``s_min``, ``quantile``
            (1 - alpha), ``alpha``, ``accuracy``, ``mean_tokens``, ``mean_samples`` and
            their ``*_ci`` pairs.
        timings: seconds spent per stage.
        meta: grid, options and prior description.
    """

    label: str
    synthetic: bool
    n_questions: int
    records: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def where(self, **equal: Any) -> list[dict[str, Any]]:
        """Records whose fields equal every given value (e.g. ``method="ESC"``)."""
        return [r for r in self.records if all(r.get(k) == v for k, v in equal.items())]

    def frontier(self, records: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The accuracy-vs-tokens Pareto frontier of the given (default: all) records."""
        recs = self.records if records is None else records
        idx = pareto_frontier([r["mean_tokens"] for r in recs], [r["accuracy"] for r in recs])
        return [recs[i] for i in idx]

    def best(self, method: str, n_max: int, **equal: Any) -> dict[str, Any] | None:
        """The paper's Table 1 pick: highest accuracy, ties broken by fewest tokens.

        (This rule reproduces all 40 OptScale entries of the authors' Table 1 from their
        grid result files.)
        """
        recs = self.where(method=method, n_max=n_max, **equal)
        if not recs:
            return None
        return max(recs, key=lambda r: (r["accuracy"], -r["mean_tokens"]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (records, frontier, timings, meta)."""
        return {
            "pool": self.label,
            "synthetic": self.synthetic,
            "n_questions": self.n_questions,
            "records": self.records,
            "frontier": self.frontier(),
            "timings": self.timings,
            "meta": self.meta,
        }


# ------------------------------------------------------------------------- outcomes
class Outcomes:
    """Per-question outcomes of Best-of-N after any number of drawn samples, precomputed.

    Column ``d`` of each table is the outcome with ``d`` samples drawn (``d = 0``: none).
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.avail = pool.n_samples
        best = prefix_best_of_n(pool)
        q = np.arange(pool.n_questions)[:, None]
        self.correct_at = np.concatenate(
            [np.zeros((pool.n_questions, 1), bool), pool.correct[q, best]], axis=1
        )
        self.tokens_at = np.concatenate(
            [np.zeros((pool.n_questions, 1), np.int64), np.cumsum(pool.tokens, axis=1)], axis=1
        )

    def best_of_n(self, drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outcomes of Best-of-N over the first ``drawn`` samples.

        Args:
            drawn: ``(Q, ...)`` samples wanted per question (clipped to each row).

        Returns:
            ``(correct, tokens, drawn)``, each of the shape of ``drawn``.
        """
        d = np.minimum(drawn, self.avail.reshape((-1,) + (1,) * (drawn.ndim - 1)))
        flat = d.reshape(d.shape[0], -1)
        c = np.take_along_axis(self.correct_at, flat, axis=1).reshape(d.shape)
        t = np.take_along_axis(self.tokens_at, flat, axis=1).reshape(d.shape)
        return c, t, d


# ------------------------------------------------------------------- the steps
Tick = Callable[[str], None]


def resolve_grid(
    pool: Pool,
    grid: Grid | str,
    methods: Sequence[str],
    modes: Sequence[str],
    n_perms: int,
    vote: str,
) -> tuple[Grid, list[int], int]:
    """Check a sweep's options and clip its grid to the pool.

    Returns:
        ``(grid, clipped, width)``: the grid to run, the budgets that were clipped, and
        :func:`pool_width`.

    Raises:
        ValueError: an unknown grid, method, mode or vote rule, a negative ``n_perms``,
            or a pool with nothing to replay.
    """
    if isinstance(grid, str):
        if grid != "official":
            raise ValueError(f"unknown grid {grid!r}: use 'official' or a Grid")
        grid = OFFICIAL_GRID
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    bad_modes = [m for m in modes if m not in ("oneshot", "sequential")]
    if bad_modes:
        raise ValueError(f"unknown OptScale mode(s) {bad_modes}; known: oneshot, sequential")
    if n_perms < 0:
        raise ValueError(f"n_perms must be >= 0, got {n_perms}")
    if vote not in VOTE_RULES:
        raise ValueError(f"vote must be one of {list(VOTE_RULES)}, got {vote!r}")
    if pool.n_questions == 0:
        raise ValueError(f"pool {pool.label!r} has no questions: nothing to replay")
    width = pool_width(pool)
    if width == 0:
        raise ValueError(
            f"pool {pool.label!r}: all {pool.n_questions} questions have 0 samples: nothing to replay"
        )
    grid, clipped = clip_grid(grid, width)
    return grid, clipped, width


def _optscale_prior(pool: Pool, prior: Any, methods: Sequence[str]) -> tuple[Any, str]:
    """The OptScaleᵗ prior (default: the population prior) and its description."""
    if not any(REGISTRY[m].uses_prior for m in methods):
        return prior, "none"
    if prior is None:
        from optscale_jax.model import POPULATION_PRIOR_CENTRES, population_prior

        return population_prior(pool.n_questions), (
            f"population prior centres {POPULATION_PRIOR_CENTRES}, std 0.1"
        )
    for name, value in zip(getattr(prior, "_fields", ()), prior, strict=False):
        shape = np.shape(np.asarray(value)) if not hasattr(value, "batch_shape") else tuple(value.batch_shape)
        if shape not in ((), (pool.n_questions,)):
            raise ValueError(
                f"prior field {name!r} has shape {shape}, the pool has {pool.n_questions} questions"
            )
    return prior, "per-question prior (given)"


def resolve_families(families: str | Sequence[str]) -> tuple[str, ...]:
    """Score family names, checked, in order, without repeats.

    Args:
        families: names, or one comma-separated string (``"truncnorm,beta"``).

    Raises:
        ValueError: an empty list, or an unknown name (listing the known ones).
    """
    from optscale_jax.families import get as get_family

    items = families.split(",") if isinstance(families, str) else list(families)
    names = list(dict.fromkeys(str(n).strip() for n in items if str(n).strip()))
    if not names:
        raise ValueError(f"families must name at least one score family, got {families!r}")
    for n in names:
        get_family(n)  # ValueError naming the known families
    return tuple(names)


#: Stands for the default OptScaleᵗ prior (a GaussianPrior) in :func:`takes_prior`.
_default_prior_kind = "gaussian"


def takes_prior(family: str, prior: Any) -> bool:
    """Whether a score family's fit takes this OptScaleᵗ prior (None, MLE: always).

    A :class:`~optscale_jax.model.GaussianPrior` of (mean, std) centres is mapped by
    ``truncnorm``, ``beta`` and ``logitnormal``; ``mixture`` has no such map (one pair
    does not pin down two components), so OptScaleᵗ is not run under it.
    """
    if prior is None:
        return True
    from optscale_jax.families import BoxFamily
    from optscale_jax.families import get as get_family
    from optscale_jax.model import GaussianPrior

    fam = get_family(family)
    gaussian = prior == _default_prior_kind if isinstance(prior, str) else isinstance(prior, GaussianPrior)
    own = getattr(type(fam), "prior_from_gaussian", None)
    return not (gaussian and isinstance(fam, BoxFamily) and own is BoxFamily.prior_from_gaussian)


def _baseline_ns(n_max_values: Iterable[int]) -> list[int]:
    """N = 1, 2, 4, ... up to the largest budget, and every budget."""
    top = max(n_max_values)
    ns, n = [], 1
    while n < top:
        ns.append(n)
        n *= 2
    ns.append(top)
    return sorted(set(ns) | set(n_max_values))


def _family(methods: Sequence[str], family: str) -> list[str]:
    """The chosen methods of one family, in table order."""
    return [m for m in REGISTRY if m in methods and REGISTRY[m].family == family]


def fixed_records(
    pool: Pool, outcomes: Outcomes, votes: np.ndarray, methods: Sequence[str], ns: Sequence[int],
    tick: Tick,
) -> list[Record]:
    """BoN, SC and WeightedSC at every fixed N in ``ns`` (BoN read off ``outcomes``)."""
    recs = []
    for name in _family(methods, "fixed"):
        for n in ns:
            if name == "BoN":
                correct, tokens, drawn = outcomes.best_of_n(np.full(pool.n_questions, n))
            else:
                drawn, chosen, _ = run_policy(pool, make(name, n_max=n), votes=votes)
                tokens, correct = tokens_and_correct(pool, drawn, chosen)
            recs.append(Record.measured(correct, tokens, drawn, method=name, n_max=n, N=n))
            tick(f"{name} N={n}")
    return recs


def voter_records(
    pool: Pool, votes: np.ndarray, methods: Sequence[str], n_max_values: Sequence[int], tick: Tick
) -> list[Record]:
    """ESC, ASC and DSC at every budget, with their default parameters.

    DSC ranks questions as the authors' replay does: by 1 - the mean score of the row.
    """
    recs = []
    for name in _family(methods, "voter"):
        for n_max in n_max_values:
            difficulty = dsc_official_difficulty(pool.scores, pool.mask) if name == "DSC" else None
            drawn, chosen, _ = run_policy(pool, make(name, n_max=n_max, difficulty=difficulty), votes=votes)
            tokens, correct = tokens_and_correct(pool, drawn, chosen)
            recs.append(Record.measured(correct, tokens, drawn, method=name, n_max=n_max))
            tick(f"{name} n_max={n_max}")
    return recs


def budget_records(
    pool: Pool, votes: np.ndarray, methods: Sequence[str], grid: Grid, prior: Any, tick: Tick,
    fractions: Sequence[float] = BUDGET_FRACTIONS,
) -> list[Record]:
    """OptScaleBudget and UniformEliminate over a few token budgets for the whole pool.

    The budgets are ``fractions`` of the tokens Best-of-N at ``n_max = max(grid.n_max)``
    pays for the pool; ``s_min`` is the grid's value nearest 0.95 (the registry default);
    other options are the policies' defaults (one wave = ``Q`` samples). These policies
    share one budget across questions, so they always run on the whole pool (never in
    question chunks). ``prior`` goes to OptScaleBudget (its lattice posterior's prior).
    """
    names = _family(methods, "budget")
    if not names:
        return []
    n_top = int(max(grid.n_max))
    s_min = float(min(grid.s_min, key=lambda s: abs(s - 0.95)))
    cols = np.arange(pool.n_max)[None, :] < np.minimum(pool.n_samples, n_top)[:, None]
    full = float(np.where(cols, pool.tokens, 0).sum())
    recs = []
    for name in names:
        for frac in fractions:
            budget = max(float(frac) * full, 1.0)
            pol = make(name, n_max=n_top, s_min=s_min, token_budget=budget, n_questions=pool.n_questions,
                       prior=prior if REGISTRY[name].uses_prior else None)
            drawn, chosen, _ = run_policy(pool, pol, votes=votes)
            tokens, correct = tokens_and_correct(pool, drawn, chosen)
            recs.append(Record.measured(correct, tokens, drawn, method=name, n_max=n_top, s_min=s_min,
                                        token_budget=budget))
            tick(f"{name} budget {frac:g}")
    return recs


def _grid_records(
    config: dict[str, Any], grid: Grid, correct: np.ndarray, tokens: np.ndarray, drawn: np.ndarray
) -> list[Record]:
    """One record per (s_min, 1 − α) of the grid from (Q, S, A) outcome arrays."""
    return [
        Record.measured(
            correct[:, si, ai], tokens[:, si, ai], drawn[:, si, ai],
            **config, s_min=s, quantile=qv, alpha=1.0 - qv,
        )
        for si, s in enumerate(grid.s_min)
        for ai, qv in enumerate(grid.quantile)
    ]


def optscale_records(
    pool: Pool,
    outcomes: Outcomes,
    grid: Grid,
    variant: str,
    prior: Any,
    modes: Sequence[str],
    nstar_rule: str,
    step: int,
    timings: dict[str, float],
    tick: Tick,
    *,
    method: str | None = None,
    n_init: int | None = None,
    family: str | None = None,
) -> list[Record]:
    """OptScale of one fit variant over the grid, in each mode.

    ``prior`` may be a callable ``prior(n_early)`` (OptScaleH: the population law fitted
    on each row's first ``n_early`` scores); ``method`` names the records (default the
    variant's) and ``n_init`` is the first sequential fit.

    ``family`` names a score family (:mod:`optscale_jax.families`) and labels the records
    with it; None is the paper's ``truncnorm``, unlabelled. ``truncnorm`` runs the
    prefix fitter and N* below (the paper's numbers); any other family fits each prefix
    length ``L`` with ``family.fit(scores, mask & (column < L), prior=prior)`` and takes
    N* from :func:`optscale_jax.families.n_star_family` (its CDF), as
    :class:`~optscale_jax.policies.OptScale` with that ``family`` does.

    Every (question, prefix length) is fitted once for all configurations; the draws
    follow :func:`~optscale_jax.policies.optscale.oneshot_draws` and
    :func:`~optscale_jax.policies.optscale.sequential_draws`, the policy's own rule.
    """
    from optscale_jax.fit import fit_status_usable
    from optscale_jax.sharding import fit_prefixes_sharded as fit_prefixes
    from optscale_jax.sharding import n_star_sharded as n_star_for_fits

    recs: list[Record] = []
    method = _OPTSCALE[variant] if method is None else method
    s_min = np.asarray(grid.s_min, dtype=np.float64)
    alpha = np.asarray(grid.alpha, dtype=np.float64)
    n_cols = pool.n_max
    if family is not None and family != "truncnorm":
        return _family_records(pool, outcomes, grid, variant, prior, modes, nstar_rule, step, timings,
                               tick, method=method, n_init=n_init, family=family)
    label = {} if family is None else {"family": family}
    if "oneshot" in modes:
        peeks = sorted({int(checkpoints(n, mode="oneshot")[0]) for n in grid.n_max})
        t0 = time.perf_counter()
        if callable(prior):  # one prior per peek, fitted on that peek's scores
            parts = [fit_prefixes(pool.scores, pool.mask, prior(min(k, n_cols)), lengths=[min(k, n_cols)])
                     for k in peeks]
            fits = type(parts[0])(*(np.concatenate([np.asarray(f) for f in fs], axis=1)
                                    for fs in zip(*parts, strict=True)))
        else:
            fits = fit_prefixes(pool.scores, pool.mask, prior, lengths=[min(k, n_cols) for k in peeks])
        mu, sigma = np.asarray(fits.mu), np.asarray(fits.sigma)
        timings[f"fit_oneshot_{variant}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for n_max in grid.n_max:
            k = int(checkpoints(n_max, mode="oneshot")[0])
            j = peeks.index(k)
            ns = n_star_for_fits(
                mu[:, j, None, None], sigma[:, j, None, None],
                s_min[None, :, None], alpha[None, None, :], n_max=n_max, rule=nstar_rule,
            )  # (Q, S, A)
            correct, tokens, drawn = outcomes.best_of_n(oneshot_draws(ns, k, n_max))
            config = {"method": method, "variant": variant, "mode": "oneshot", "n_max": n_max, "k": k,
                      **label}
            recs.extend(_grid_records(config, grid, correct, tokens, drawn))
            tick(f"{method} one-shot n_max={n_max}")
        timings[f"nstar_oneshot_{variant}"] = time.perf_counter() - t0
    if "sequential" in modes:
        top = min(max(grid.n_max), n_cols)
        lengths = checkpoints(top, mode="sequential", step=step, variant=variant, n_init=n_init)
        t0 = time.perf_counter()
        seq_prior = prior(int(lengths[0])) if callable(prior) else prior
        fits = fit_prefixes(pool.scores, pool.mask, seq_prior, lengths=[int(n) for n in lengths])
        timings[f"fit_sequential_{variant}"] = time.perf_counter() - t0
        usable = fit_status_usable(np.asarray(fits.status))  # (Q, L)
        mu, sigma = np.asarray(fits.mu), np.asarray(fits.sigma)
        t0 = time.perf_counter()
        for n_max in grid.n_max:
            ns = n_star_for_fits(
                mu[:, :, None, None], sigma[:, :, None, None],
                s_min[None, None, :, None], alpha[None, None, None, :], n_max=n_max, rule=nstar_rule,
            )  # (Q, L, S, A)
            drawn = sequential_draws(lengths, ns, usable, np.minimum(outcomes.avail, n_max))
            correct, tokens, drawn = outcomes.best_of_n(drawn)
            config = {"method": method, "variant": variant, "mode": "sequential", "n_max": n_max, **label}
            recs.extend(_grid_records(config, grid, correct, tokens, drawn))
            tick(f"{method} sequential n_max={n_max}")
        timings[f"nstar_sequential_{variant}"] = time.perf_counter() - t0
    return recs


def _family_prefix_fits(
    family: Any, pool: Pool, prior: Any, lengths: Sequence[int]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A score family's fit on the first ``L`` samples of every row, for each ``L``.

    Cuts the mask, not the arrays (one compiled fit per pool shape), exactly as
    :meth:`OptScale.n_star <optscale_jax.policies.OptScale.n_star>` does.

    Returns:
        ``(params, status)``: each parameter ``(Q, len(lengths))`` and the statuses.
    """
    scores = np.asarray(pool.scores, dtype=np.float64)
    cols = np.arange(scores.shape[1])[None, :]
    fits = [family.fit(scores, pool.mask & (cols < int(n)), prior=prior) for n in lengths]
    params = {k: np.stack([np.asarray(f.params[k]) for f in fits], axis=1) for k in fits[0].params}
    return params, np.stack([np.asarray(f.status) for f in fits], axis=1)


def _family_n_star(family: Any, params: dict[str, np.ndarray], lead: tuple[slice | int, ...],
                   s_min: np.ndarray, alpha: np.ndarray, n_max: int) -> np.ndarray:
    """N* of the fits ``params[k][lead]`` at every (s_min, alpha): shape ``(..., S, A)``."""
    from optscale_jax.families import n_star_family

    picked = {k: v[lead][..., None, None] for k, v in params.items()}
    return np.asarray(n_star_family(family, picked, s_min[:, None], alpha[None, :], n_max=n_max),
                      dtype=np.int64)


def _family_records(
    pool: Pool, outcomes: Outcomes, grid: Grid, variant: str, prior: Any, modes: Sequence[str],
    nstar_rule: str, step: int, timings: dict[str, float], tick: Tick, *, method: str,
    n_init: int | None, family: str,
) -> list[Record]:
    """:func:`optscale_records` under a score family other than ``truncnorm``."""
    from optscale_jax.families import get as get_family
    from optscale_jax.fit import fit_status_usable

    if nstar_rule != "closed":
        raise ValueError(f"nstar_rule {nstar_rule!r} (the authors' grid scan) exists only for family "
                         f"'truncnorm', got family {family!r}")
    if callable(prior):
        raise ValueError(f"{method}: a prior fitted per peek (OptScaleH) exists only for family "
                         f"'truncnorm', got family {family!r}")
    fam = get_family(family)
    recs: list[Record] = []
    s_min = np.asarray(grid.s_min, dtype=np.float64)
    alpha = np.asarray(grid.alpha, dtype=np.float64)
    n_cols = pool.n_max
    key = f"{variant}_{family}"
    if "oneshot" in modes:
        peeks = sorted({int(checkpoints(n, mode="oneshot")[0]) for n in grid.n_max})
        t0 = time.perf_counter()
        params, _ = _family_prefix_fits(fam, pool, prior, [min(k, n_cols) for k in peeks])
        timings[f"fit_oneshot_{key}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for n_max in grid.n_max:
            k = int(checkpoints(n_max, mode="oneshot")[0])
            ns = _family_n_star(fam, params, (slice(None), peeks.index(k)), s_min, alpha, n_max)
            correct, tokens, drawn = outcomes.best_of_n(oneshot_draws(ns, k, n_max))
            config = {"method": method, "variant": variant, "mode": "oneshot", "n_max": n_max, "k": k,
                      "family": family}
            recs.extend(_grid_records(config, grid, correct, tokens, drawn))
            tick(f"{method} [{family}] one-shot n_max={n_max}")
        timings[f"nstar_oneshot_{key}"] = time.perf_counter() - t0
    if "sequential" in modes:
        top = min(max(grid.n_max), n_cols)
        lengths = checkpoints(top, mode="sequential", step=step, variant=variant, n_init=n_init)
        t0 = time.perf_counter()
        params, status = _family_prefix_fits(fam, pool, prior, [int(n) for n in lengths])
        timings[f"fit_sequential_{key}"] = time.perf_counter() - t0
        usable = fit_status_usable(status)  # (Q, L)
        t0 = time.perf_counter()
        for n_max in grid.n_max:
            ns = _family_n_star(fam, params, (slice(None), slice(None)), s_min, alpha, n_max)  # (Q, L, S, A)
            drawn = sequential_draws(lengths, ns, usable, np.minimum(outcomes.avail, n_max))
            correct, tokens, drawn = outcomes.best_of_n(drawn)
            config = {"method": method, "variant": variant, "mode": "sequential", "n_max": n_max,
                      "family": family}
            recs.extend(_grid_records(config, grid, correct, tokens, drawn))
            tick(f"{method} [{family}] sequential n_max={n_max}")
        timings[f"nstar_sequential_{key}"] = time.perf_counter() - t0
    return recs


def summarise(
    per_ordering: Sequence[Sequence[Record]], *, n_boot: int, level: float, seed: int
) -> list[Record]:
    """Average each configuration over the pool orderings, then bootstrap over questions.

    One bootstrap draws the same resampled questions for every configuration.

    Args:
        per_ordering: the records of each ordering, configurations in the same order.
        n_boot: bootstrap replicates (0: NaN intervals).
        level: confidence level.
        seed: bootstrap seed.

    Returns:
        One record per configuration with totals, intervals and the averaged ``values``.
    """
    averaged = []
    for i, rec in enumerate(per_ordering[0]):
        vals = np.mean([run[i].values for run in per_ordering], axis=0)
        acc, tok, smp = (float(v) for v in vals.mean(axis=0))
        averaged.append((rec, vals, acc, tok, smp))
    if not averaged:
        return []
    stacked = np.concatenate([vals for _, vals, *_ in averaged], axis=1)  # (Q, 3 * R)
    lo, hi = bootstrap_ci(stacked, n_boot=n_boot, level=level, seed=seed)
    out = []
    for i, (rec, vals, acc, tok, smp) in enumerate(averaged):
        ci = [(float(lo[3 * i + j]), float(hi[3 * i + j])) for j in range(3)]
        out.append(Record(
            **{f.name: getattr(rec, f.name) for f in fields(Record) if f.name in _CONFIG_FIELDS},
            accuracy=acc, mean_tokens=tok, mean_samples=smp,
            accuracy_ci=ci[0], mean_tokens_ci=ci[1], mean_samples_ci=ci[2], values=vals,
        ))
    return out


class _Progress:
    """A tqdm bar when asked for, else nothing."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step")

    def tick(self, desc: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(desc, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _one_ordering(
    pool: Pool, grid: Grid, methods: Sequence[str], modes: Sequence[str], prior: Any,
    nstar_rule: str, step: int, vote: str, timings: dict[str, float], tick: Tick,
    families: Sequence[str] | None = None,
) -> list[Record]:
    """Every chosen method on one ordering of the pool, timed per family.

    ``families``: OptScale⁰/ᵗ's score families, records labelled (None: truncnorm, unlabelled).
    """
    outcomes = Outcomes(pool)
    votes = vote_classes(pool, vote)

    def add_time(key: str, t0: float) -> None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0

    t0 = time.perf_counter()
    recs = fixed_records(pool, outcomes, votes, methods, _baseline_ns(grid.n_max), tick)
    add_time("fixed_baselines", t0)
    t0 = time.perf_counter()
    recs += voter_records(pool, votes, methods, grid.n_max, tick)
    add_time("adaptive_baselines", t0)
    t0 = time.perf_counter()
    for variant, name in _OPTSCALE.items():
        if name in methods:
            variant_prior = prior if REGISTRY[name].uses_prior else None
            for fam in families or (None,):
                if fam is not None and not takes_prior(fam, variant_prior):
                    continue  # sweep() warned and listed it in meta["skipped"]
                recs += optscale_records(pool, outcomes, grid, variant, variant_prior, modes, nstar_rule,
                                         step, timings, tick, family=fam)
    if "OptScaleH" in methods:  # the population law fitted on each peek's / n_init's scores
        from optscale_jax.policies.optscale_h import hierarchical_prior

        def learned(n_early: int) -> Any:
            return hierarchical_prior(pool.scores, pool.mask, n_early)[1]

        recs += optscale_records(pool, outcomes, grid, "MAP", learned, modes, nstar_rule, step, timings, tick,
                                 method="OptScaleH", n_init=2, family="truncnorm" if families else None)
    add_time("optscale", t0)
    t0 = time.perf_counter()
    recs += budget_records(pool, votes, methods, grid, prior, tick)
    if _family(methods, "budget"):
        add_time("budget", t0)
    return recs


def _chunked_ordering(
    pool: Pool, grid: Grid, methods: Sequence[str], modes: Sequence[str], prior: Any,
    nstar_rule: str, step: int, vote: str, timings: dict[str, float], tick: Tick, chunk_size: int,
    families: Sequence[str] | None = None,
) -> list[Record]:
    """:func:`_one_ordering` over questions in chunks of ``chunk_size``, merged exactly.

    Every method but DSC is per question: each chunk gives per-question ``values`` that
    are concatenated in pool order, so totals and bootstrap intervals (computed by
    :func:`summarise` from the concatenated vectors) equal the unchunked run's. DSC ranks
    all questions of the pool, so it runs once on the whole pool.
    """
    q = pool.n_questions
    if chunk_size >= q:
        return _one_ordering(pool, grid, methods, modes, prior, nstar_rule, step, vote, timings, tick,
                             families)
    separable = [m for m in methods if not REGISTRY[m].couples_questions]
    whole = [m for m in methods if REGISTRY[m].couples_questions]
    from optscale_jax.sharding import slice_rows  # here: sharding imports JAX

    merged: list[list[Record]] = []
    for start in range(0, q, chunk_size):
        rows = np.arange(start, min(q, start + chunk_size))
        part_times: dict[str, float] = {}
        recs = _one_ordering(pool.subset(rows), grid, separable, modes, slice_rows(prior, rows, q),
                             nstar_rule, step, vote, part_times, tick, families)
        for key, v in part_times.items():
            timings[key] = timings.get(key, 0.0) + v
        if not merged:
            merged = [[r] for r in recs]
        else:
            for acc, r in zip(merged, recs, strict=True):
                acc.append(r)
    out = [replace(parts[0], values=np.concatenate([r.values for r in parts], axis=0)) for parts in merged]
    if whole:
        t0 = time.perf_counter()
        out += voter_records(pool, vote_classes(pool, vote), whole, grid.n_max, tick)
        timings["adaptive_baselines"] = timings.get("adaptive_baselines", 0.0) + time.perf_counter() - t0
    if "OptScaleH" in whole:
        out += _one_ordering(pool, grid, ["OptScaleH"], modes, None, nstar_rule, step, vote, timings, tick,
                             families)
    if _family(whole, "budget"):  # one budget shared by every question: the whole pool
        out += _one_ordering(pool, grid, _family(whole, "budget"), modes, prior, nstar_rule, step, vote,
                             timings, tick)
    order = _family(methods, "fixed") + _family(methods, "voter") + list(_OPTSCALE.values())
    rank = {m: i for i, m in enumerate(order)}
    return sorted(out, key=lambda r: rank.get(r.method, len(order)))  # stable: as unchunked


def sweep(
    pool: Pool,
    *,
    grid: Grid | str = "official",
    methods: Sequence[str] = DEFAULT_METHODS,
    modes: Sequence[str] = ("oneshot",),
    prior: Any = None,
    nstar_rule: str = "closed",
    step: int = 1,
    n_perms: int = 0,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    progress: bool = False,
    vote: str = "official",
    chunk_size: int | None = None,
    families: str | Sequence[str] = DEFAULT_FAMILIES,
) -> SweepResult:
    """Run every method over a grid on one pool.

    Fixed-size baselines (``BoN``, ``SC``, ``WeightedSC``) run at N = 1, 2, 4, ...,
    max(n_max) and at each n_max; ``ESC``, ``ASC``, ``DSC`` at each n_max with their
    default parameters; ``OptScale0`` (MLE) and ``OptScaleT`` (MAP) at every
    (s_min, alpha, n_max) of the grid, in each of ``modes``. OptScale fits are computed
    once per (question, prefix length) for the whole grid; results equal
    :func:`~optscale_jax.replay.replay` of the corresponding
    :class:`~optscale_jax.policies.OptScale`.

    Args:
        pool: completions in drawing order.
        grid: a :class:`Grid` or ``"official"``.
        methods: subset of :data:`METHODS` (default: all but the opt-in OptScaleH).
        modes: OptScale modes, any of ``"oneshot"``, ``"sequential"``.
        prior: prior for OptScaleT (``GaussianPrior`` with per-question arrays); default
            a constant prior at :data:`optscale_jax.model.POPULATION_PRIOR_CENTRES` with std 0.1.
        nstar_rule: ``"closed"`` or ``"official"`` N*.
        step: refit interval ``b`` of the sequential mode.
        n_perms: average over this many random re-orderings of each row (0 = pool order).
        seed: seed for re-orderings and bootstrap.
        n_boot: bootstrap replicates for confidence intervals (0 = none).
        level: confidence level.
        progress: show a tqdm progress bar.
        vote: answer classes of SC, ESC, ASC and DSC: ``"official"`` (the authors' rule:
            exact extracted strings, "no answer" a class that can win) or
            ``"math-verify"`` (equivalence classes). Recorded in ``meta["vote"]``.
        chunk_size: questions per chunk (default :data:`DEFAULT_CHUNK_SIZE`): fits, N*
            and outcome tables are built one chunk at a time, so their memory is bounded
            by the chunk, not the pool. Results equal the unchunked run's (DSC, which
            ranks all questions, runs on the whole pool). Recorded in ``meta``.
        families: score families of OptScale⁰ and OptScaleᵗ (names or one comma-separated
            string, :mod:`optscale_jax.families`): each runs the whole grid under that
            family's fit and CDF. The default, ``("truncnorm",)``, is the paper's rule with
            unlabelled records; otherwise every OptScale record has a ``family`` field
            (OptScaleH's is ``truncnorm``). Recorded in ``meta["families"]``.

    Returns:
        A :class:`SweepResult`.

    Raises:
        ValueError: also for an unknown family, or a family other than ``truncnorm``
            with ``nstar_rule="official"``.
    """
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a whole number >= 1, got {chunk_size!r}")
    fams = resolve_families(families)
    if fams != DEFAULT_FAMILIES and nstar_rule != "closed":
        raise ValueError(f"nstar_rule {nstar_rule!r} (the authors' grid scan) exists only for family "
                         f"'truncnorm'; families {list(fams)} need nstar_rule 'closed'")
    run_families = None if fams == DEFAULT_FAMILIES else fams
    skipped = [f"{m} under {f}: the family takes no (mean, std) prior" for m in _OPTSCALE.values()
               if m in methods and REGISTRY[m].uses_prior for f in fams
               if not takes_prior(f, prior if prior is not None else _default_prior_kind)]
    for note in skipped:
        warnings.warn(f"sweep: skipping {note}", stacklevel=2)
    grid, clipped, width = resolve_grid(pool, grid, methods, modes, n_perms, vote)
    if clipped:
        warnings.warn(
            f"n_max {clipped} exceed the pool's {width} samples per question; clipped to {width}",
            GridClippedWarning, stacklevel=2,
        )
    prior, prior_desc = _optscale_prior(pool, prior, methods)
    steps = (
        len(_baseline_ns(grid.n_max)) * len(_family(methods, "fixed"))
        + len(grid.n_max) * len(_family(methods, "voter"))
        + len(_family(methods, "optscale")) * len(fams) * len(modes) * len(grid.n_max)
        + len(_family(methods, "budget")) * len(BUDGET_FRACTIONS)
    ) * max(1, n_perms) * math.ceil(pool.n_questions / int(chunk_size))
    bar = _Progress(steps, f"sweep {pool.label}", progress)
    timings: dict[str, float] = {}
    pools = [pool] if n_perms == 0 else pool.permuted(seed, n_perms)
    t_start = time.perf_counter()
    try:
        per_ordering = [
            _chunked_ordering(p, grid, methods, modes, prior, nstar_rule, step, vote, timings, bar.tick,
                              int(chunk_size), run_families)
            for p in pools
        ]
    finally:
        bar.close()
    t0 = time.perf_counter()
    records = summarise(per_ordering, n_boot=n_boot, level=level, seed=seed)
    timings["bootstrap"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    return SweepResult(
        label=pool.label,
        synthetic=pool.synthetic,
        n_questions=pool.n_questions,
        records=[r.to_dict() for r in records],
        timings=timings,
        meta={
            "grid": {"s_min": list(grid.s_min), "quantile": list(grid.quantile), "n_max": list(grid.n_max)},
            "pool_width": width,
            "n_max_clipped": clipped,
            "methods": list(methods),
            "modes": list(modes),
            "prior": prior_desc,
            "nstar_rule": nstar_rule,
            "step": step,
            "n_perms": n_perms,
            "seed": seed,
            "n_boot": n_boot,
            "level": level,
            "vote": vote,
            "chunk_size": int(chunk_size),
            "families": list(fams),
            "skipped": skipped,
        },
    )
