"""Stopping and selection rules, vectorised over questions.

The :class:`Policy` protocol, the baselines of the OptScale paper's Table 1 (Best-of-N,
self-consistency, weighted voting, ESC, ASC, DSC) and OptScale⁰ / OptScaleᵗ in one-shot
and sequential modes.
"""

from typing import TYPE_CHECKING, Any

from .base import (
    Observed,
    Policy,
    answer_counts,
    best_of_n_index,
    majority_index,
    weighted_vote_index,
)
from .baselines import (
    ASC,
    DSC,
    ESC,
    BestOfN,
    SelfConsistency,
    WeightedVote,
    beta_majority_probability,
    top_two_counts,
)
from .optscale import OptScale, official_peek

if TYPE_CHECKING:  # core names, re-exported lazily below so that importing this does not start JAX
    from optscale_jax.fit import fit_status_usable
    from optscale_jax.model import gaussian_prior
    from optscale_jax.nstar import n_star_for_fits as compute_n_star

__all__ = [
    "ASC",
    "BestOfN",
    "DSC",
    "ESC",
    "Observed",
    "OptScale",
    "Policy",
    "SelfConsistency",
    "WeightedVote",
    "answer_counts",
    "best_of_n_index",
    "beta_majority_probability",
    "compute_n_star",
    "fit_status_usable",
    "gaussian_prior",
    "majority_index",
    "official_peek",
    "top_two_counts",
    "weighted_vote_index",
]


def __getattr__(name: str) -> Any:
    if name in ("compute_n_star", "fit_status_usable", "gaussian_prior"):
        from . import optscale

        return getattr(optscale, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
