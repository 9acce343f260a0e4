r"""The score-family protocol, the registry of families, and N* through a family's CDF.

A *score family* is the law of one PRM score on [0, 1] given a question's parameters.
OptScale's stopping rule only needs its CDF at s_min (N* = ceil(log(1-α)/log F(s_min)));
fits, posteriors and calibration need its log density. A family is one object with

* ``name``, ``param_names`` (the public parameters, each ``(Q,)`` in a fit),
* ``log_prob(params, x)``, ``log_cdf(params, s)`` (broadcasting, jit-able),
* ``sufficient_stats(scores, mask)`` (``None`` where none exist),
* ``init(scores, mask)`` (a starting point per row),
* ``fit(scores, mask, *, prior=None)`` -> :class:`FamilyFit` (MLE, or MAP with a prior;
  batched over rows, jitted),
* ``distribution(params)`` (a numpyro distribution for NUTS / ArviZ / ``score_model``),
* ``sample(key, params, shape)``.

:class:`BoxFamily` implements ``fit``, ``init``, ``distribution`` and the numpyro model
(:func:`family_model`) for any family given by a map from unconstrained parameters
θ ∈ ℝ^P (inside a box) to its parameters: a researcher adds a family in one file by
subclassing it (see ``beta.py``) and calling :func:`register`.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro.distributions import constraints

from optscale_jax.families._solver import maximise
from optscale_jax.fit import FitStatus, validate_scores
from optscale_jax.model import GaussianPrior
from optscale_jax.nstar import n_star_from_log_cdf

__all__ = [
    "FamilyFit",
    "ScoreFamily",
    "BoxFamily",
    "UnconstrainedPrior",
    "FamilyDistribution",
    "FAMILIES",
    "get",
    "register",
    "n_star_family",
    "family_model",
    "check_s_min",
]


class FamilyFit(NamedTuple):
    """Per-question fit of a score family (a pytree; every field has the batch shape).

    Attributes:
        params: the family's parameters, each ``(Q,)`` (``()`` for a single row).
        log_lik: the maximised log likelihood (log posterior for MAP), ``(Q,)``.
        status: :class:`~optscale_jax.fit.FitStatus` codes, int32 ``(Q,)``.
    """

    params: dict[str, jax.Array]
    log_lik: jax.Array
    status: jax.Array


@runtime_checkable
class ScoreFamily(Protocol):
    """What every score family provides (see the module docstring)."""

    name: str
    param_names: tuple[str, ...]

    def log_prob(self, params: dict, x: ArrayLike) -> jax.Array: ...

    def log_cdf(self, params: dict, s: ArrayLike) -> jax.Array: ...

    def sufficient_stats(self, scores: ArrayLike, mask: ArrayLike) -> dict | None: ...

    def init(self, scores: ArrayLike, mask: ArrayLike) -> dict[str, jax.Array]: ...

    def fit(self, scores: ArrayLike, mask: ArrayLike | None = None, *, prior: Any = None) -> FamilyFit: ...

    def distribution(self, params: dict) -> dist.Distribution: ...

    def sample(self, key: jax.Array, params: dict, shape: tuple[int, ...]) -> jax.Array: ...


class UnconstrainedPrior(NamedTuple):
    """Independent normal priors on a :class:`BoxFamily`'s unconstrained parameters θ.

    Attributes:
        loc: centres, shape ``(P,)`` or ``(Q, P)`` (P = ``len(family.theta_names)``).
        scale: standard deviations (> 0), same shapes.
    """

    loc: ArrayLike
    scale: ArrayLike


class FamilyDistribution(dist.Distribution):
    """A numpyro distribution on [0, 1] backed by a family's ``log_prob`` / ``log_cdf`` / ``sample``.

    ``batch_shape`` is the broadcast shape of the parameters.
    """

    support = constraints.unit_interval
    pytree_aux_fields = ("family",)
    pytree_data_fields = ("params",)

    def __init__(self, family, params: dict, *, validate_args=None):
        self.family = family
        self.params = {k: jnp.asarray(v) for k, v in params.items()}
        shape = jnp.broadcast_shapes(*(jnp.shape(v) for v in self.params.values()))
        super().__init__(batch_shape=shape, event_shape=(), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        return self.family.sample(key, self.params, tuple(sample_shape) + self.batch_shape)

    def log_prob(self, value):
        return self.family.log_prob(self.params, value)

    def cdf(self, value):
        return jnp.exp(self.family.log_cdf(self.params, value))

    def log_cdf(self, value):
        return self.family.log_cdf(self.params, value)


def _expand(params: dict, x: jax.Array) -> dict:
    """Parameters of shape ``(Q,)`` against scores ``(Q, N)``: add a trailing axis."""
    return {k: (v[..., None] if jnp.ndim(v) == jnp.ndim(x) - 1 and jnp.ndim(v) > 0 else v)
            for k, v in params.items()}


def _row_stats(scores, mask):
    n = jnp.sum(mask, axis=-1)
    hi = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1)
    lo = jnp.min(jnp.where(mask, scores, jnp.inf), axis=-1)
    return n, hi - lo


@dataclasses.dataclass(frozen=True)
class BoxFamily:
    """A family parameterised by unconstrained θ ∈ [lower, upper] ⊂ ℝ^P.

    Subclasses set ``name``, ``param_names``, ``theta_names``, ``lower``, ``upper``,
    ``weak_loc``/``weak_scale`` (the documented weak prior on θ used by ``prior="weak"``)
    and implement ``to_params(theta)``, ``to_theta(params)``, ``log_prob``, ``log_cdf``,
    ``sample``, ``starts(scores, mask) -> (Q, S, P)`` (S starting points per row) and
    optionally ``sufficient_stats`` and ``prior_from_gaussian``.

    ``fit`` maximises the masked log likelihood (plus the θ prior for MAP) from every
    start with a batched Newton method in θ and keeps the best; a maximum on the box
    edge is ``BOUNDARY``, one score or all scores equal is ``DEGENERATE``, no score is
    ``NO_DATA`` (MLE: NaN parameters; MAP: the prior centre).
    """

    name: ClassVar[str] = ""
    param_names: ClassVar[tuple[str, ...]] = ()
    theta_names: ClassVar[tuple[str, ...]] = ()
    lower: ClassVar[tuple[float, ...]] = ()
    upper: ClassVar[tuple[float, ...]] = ()
    weak_loc: ClassVar[tuple[float, ...]] = ()
    weak_scale: ClassVar[tuple[float, ...]] = ()
    max_iter: int = 100

    # -- to implement -------------------------------------------------------------
    def to_params(self, theta: jax.Array) -> dict[str, jax.Array]:  # theta (..., P)
        raise NotImplementedError

    def to_theta(self, params: dict) -> jax.Array:
        raise NotImplementedError

    def log_prob(self, params: dict, x: ArrayLike) -> jax.Array:
        raise NotImplementedError

    def log_cdf(self, params: dict, s: ArrayLike) -> jax.Array:
        raise NotImplementedError

    def sample(self, key: jax.Array, params: dict, shape: tuple[int, ...]) -> jax.Array:
        raise NotImplementedError

    def starts(self, scores: jax.Array, mask: jax.Array) -> jax.Array:
        raise NotImplementedError

    def sufficient_stats(self, scores: ArrayLike, mask: ArrayLike) -> dict | None:
        return None

    def prior_from_gaussian(self, prior: GaussianPrior, q: int) -> UnconstrainedPrior:
        raise ValueError(
            f"family {self.name!r} does not take a GaussianPrior (mu, sigma) prior; pass "
            "prior='weak' or an UnconstrainedPrior on its parameters "
            f"{self.theta_names}"
        )

    # -- provided -----------------------------------------------------------------
    def init(self, scores: ArrayLike, mask: ArrayLike | None = None) -> dict[str, jax.Array]:
        """The first starting point of every row, as parameters ``(Q,)``."""
        s, m = validate_scores(scores, mask)
        return self.to_params(self.starts(jnp.asarray(s), jnp.asarray(m))[:, 0])

    def distribution(self, params: dict) -> dist.Distribution:
        return FamilyDistribution(self, params)

    def theta_prior(self, prior: Any, q: int) -> UnconstrainedPrior | None:
        """Normalise a ``prior`` argument to per-row θ priors ``(Q, P)`` (or None: MLE)."""
        if prior is None:
            return None
        if isinstance(prior, str):
            if prior != "weak":
                raise ValueError(f"prior must be None, 'weak', a GaussianPrior or an "
                                 f"UnconstrainedPrior, got {prior!r}")
            prior = UnconstrainedPrior(np.asarray(self.weak_loc), np.asarray(self.weak_scale))
        elif isinstance(prior, GaussianPrior):
            prior = self.prior_from_gaussian(prior, q)
        elif not isinstance(prior, UnconstrainedPrior):
            raise ValueError(
                f"prior for family {self.name!r} must be None, 'weak', a GaussianPrior or an "
                f"UnconstrainedPrior, got {type(prior).__name__}"
            )
        p = len(self.theta_names)
        out = []
        for field, value in zip(("loc", "scale"), prior, strict=True):
            v = np.asarray(value, dtype=float)
            if v.shape not in ((p,), (q, p), (1, p)):
                raise ValueError(f"prior.{field} has shape {v.shape}; expected ({p},) or ({q}, {p})")
            bad = ~np.isfinite(v) | ((v <= 0) if field == "scale" else False)
            if bad.any():
                need = "finite and > 0" if field == "scale" else "finite"
                raise ValueError(f"prior.{field} must be {need}, got {float(v[bad].reshape(-1)[0])}")
            out.append(np.broadcast_to(v, (q, p)))
        return UnconstrainedPrior(*out)

    def fit(self, scores: ArrayLike, mask: ArrayLike | None = None, *, prior: Any = None) -> FamilyFit:
        """MLE (``prior=None``) or MAP of every row, batched and jitted.

        Args:
            scores: ``(Q, N)`` or ``(N,)`` scores in [0, 1].
            mask: True for drawn samples; default all.
            prior: None (MLE), ``"weak"`` (the family's weak prior on θ), an
                :class:`UnconstrainedPrior`, or a :class:`~optscale_jax.model.GaussianPrior`
                of (mean, std) centres that the family maps (see its docstring).

        Raises:
            ValueError: NaN or out-of-[0, 1] scores (naming row and column), a bad prior.
        """
        single = np.ndim(scores) == 1
        s, m = validate_scores(scores, mask)
        if s.shape[1] == 0:
            s, m = np.full((s.shape[0], 1), 0.5), np.zeros((s.shape[0], 1), bool)
        tp = self.theta_prior(prior, s.shape[0])
        dtype = jnp.result_type(float)
        if tp is None:
            loc = scale = None
        else:
            loc, scale = (jnp.asarray(v, dtype) for v in tp)
        result = _fit_box(self, jnp.asarray(s, dtype), jnp.asarray(m), loc, scale)
        if single:
            result = FamilyFit({k: v[0] for k, v in result.params.items()},
                               result.log_lik[0], result.status[0])
        return result

    def objective(self, theta, scores, mask, loc=None, scale=None):
        """Per-row log likelihood (+ log prior on θ) at θ ``(Q, P)``."""
        params = _expand(self.to_params(theta), scores)
        lp = jnp.where(mask, self.log_prob(params, scores), 0.0)
        value = jnp.sum(lp, axis=-1)
        if loc is not None:
            value = value + jnp.sum(jax.scipy.stats.norm.logpdf(theta, loc, scale), axis=-1)
        return value


@partial(jax.jit, static_argnums=0)
def _fit_box(family: BoxFamily, scores, mask, loc, scale) -> FamilyFit:
    q = scores.shape[0]
    starts = family.starts(scores, mask)  # (Q, S, P)
    if loc is not None:  # MAP: also start at the prior centre
        starts = jnp.concatenate([starts, loc[:, None, :]], axis=1)
    n_starts, p = starts.shape[1], starts.shape[2]
    s_r, m_r = (jnp.repeat(a, n_starts, axis=0) for a in (scores, mask))
    loc_r, scale_r = ((None, None) if loc is None
                      else (jnp.repeat(a, n_starts, axis=0) for a in (loc, scale)))

    def objective(theta):
        return family.objective(theta, s_r, m_r, loc_r, scale_r)

    theta, value, on_edge, done, _ = maximise(
        objective, starts.reshape(q * n_starts, p), family.lower, family.upper, family.max_iter
    )
    value = jnp.where(jnp.isfinite(value), value, -jnp.inf).reshape(q, n_starts)
    best = jnp.argmax(value, axis=1)
    rows = jnp.arange(q)
    theta = theta.reshape(q, n_starts, p)[rows, best]
    value = value[rows, best]
    on_edge = on_edge.reshape(q, n_starts)[rows, best]
    done = done.reshape(q, n_starts)[rows, best]
    n, spread = _row_stats(scores, mask)
    status = jnp.where(on_edge, FitStatus.BOUNDARY,
                       jnp.where(done, FitStatus.CONVERGED, FitStatus.MAX_ITER))
    status = jnp.where((n == 1) | ((n > 1) & (spread <= 0)), FitStatus.DEGENERATE, status)
    status = jnp.where(n == 0, FitStatus.NO_DATA, status).astype(jnp.int32)
    if loc is None:
        theta = jnp.where((n == 0)[:, None], jnp.nan, theta)
        value = jnp.where(n == 0, 0.0, value)
    else:
        theta = jnp.where((n == 0)[:, None], loc, theta)
    return FamilyFit(family.to_params(theta), value, status)


def family_model(family, scores, mask=None, prior: UnconstrainedPrior | None = None) -> None:
    """numpyro model of a batch of score rows under a :class:`BoxFamily`.

    Sites: ``"theta"`` (``(Q, P)``, normal priors: ``prior`` or the family's weak prior),
    one deterministic site per parameter name, and the observed ``"scores"`` ``(Q, N)``.
    """
    scores = jnp.asarray(scores)
    q, n = scores.shape
    mask = jnp.ones((q, n), bool) if mask is None else jnp.asarray(mask, bool)
    tp = family.theta_prior("weak" if prior is None else prior, q)
    with numpyro.plate("questions", q, dim=-1):
        theta = numpyro.sample(
            "theta", dist.Normal(jnp.asarray(tp.loc), jnp.asarray(tp.scale)).to_event(1)
        )
        params = family.to_params(theta)
        for k, v in params.items():
            numpyro.deterministic(k, v)
        per_score = family.distribution(_expand(params, scores)).mask(mask).to_event(1)
        numpyro.sample("scores", per_score, obs=jnp.where(mask, scores, 0.5))


# ----------------------------------------------------------------------------
# Registry and N*
# ----------------------------------------------------------------------------

FAMILIES: dict[str, ScoreFamily] = {}


def register(family: ScoreFamily) -> ScoreFamily:
    """Add a family to :data:`FAMILIES` under ``family.name`` (replacing one of that name)."""
    if not isinstance(getattr(family, "name", None), str) or not family.name:
        raise ValueError("a score family needs a non-empty str name")
    FAMILIES[family.name] = family
    return family


def get(name: str | ScoreFamily) -> ScoreFamily:
    """The family registered as ``name`` (a family object is returned as is).

    Raises:
        ValueError: unknown name, listing the known ones.
    """
    if not isinstance(name, str):
        if isinstance(name, ScoreFamily):
            return name
        raise ValueError(f"family must be a name, one of {sorted(FAMILIES)}, got {name!r:.60}")
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown score family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def check_s_min(s_min) -> None:
    """``s_min`` (host values) lies in [0, 1]."""
    if isinstance(s_min, jax.Array):
        return
    t = np.asarray(s_min, dtype=float)
    bad = ~((t >= 0) & (t <= 1))
    if bad.any():
        raise ValueError(f"s_min must lie in [0, 1] (a PRM score), got {float(t[bad].reshape(-1)[0])}")


def n_star_family(
    family: str | ScoreFamily,
    params: dict,
    s_min: ArrayLike,
    alpha: ArrayLike,
    *,
    n_min: int = 1,
    n_max: int | None = None,
) -> jax.Array:
    """N* = ceil(log(1 − α) / log F(s_min)) under any family, clipped to [n_min, n_max].

    Goes through the family's own ``n_star`` when it has one (``truncnorm``: exactly
    :func:`optscale_jax.nstar.n_star`), else through ``log_cdf`` and
    :func:`optscale_jax.nstar.n_star_from_log_cdf`. NaN parameters (no fit) give n_max.

    Examples:
        >>> import optscale_jax.families as fam
        >>> int(fam.n_star_family("beta", {"a": 1.0, "b": 1.0}, 0.5, 0.95))  # F = 1/2
        5
    """
    fam = get(family)
    check_s_min(s_min)
    own = getattr(fam, "n_star", None)
    if own is not None:
        return own(params, s_min, alpha, n_min=n_min, n_max=n_max)
    params = {k: jnp.asarray(v, jnp.result_type(float)) for k, v in params.items()}
    log_f = fam.log_cdf(params, jnp.asarray(s_min, jnp.result_type(float)))
    return n_star_from_log_cdf(log_f, alpha, n_min=n_min, n_max=n_max)
