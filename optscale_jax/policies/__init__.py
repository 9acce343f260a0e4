"""Stopping and selection rules, vectorised over questions.

The :class:`Policy` protocol (:mod:`.base`), the selection rules every policy shares
(re-exported from :mod:`optscale_jax.selection`: Best-of-N, majority and weighted votes,
prefix variants of Best-of-N and majority),
the baselines of the OptScale paper's Table 1 (:mod:`.baselines`: Best-of-N,
self-consistency, weighted voting, ESC, ASC, DSC), OptScale⁰ / OptScaleᵗ in one-shot and
sequential modes with their stopping rule as pure functions (:mod:`.optscale`), the
live-only MR-Thinking (:mod:`.mr_thinking`), the budget policies OptScaleBudget and
UniformEliminate (:mod:`.budget`: one token budget across all questions) and the table
from method names to policies (:mod:`.registry`).
"""

from typing import TYPE_CHECKING, Any

from optscale_jax.selection import (
    answer_counts,
    best_of_n_index,
    majority_index,
    prefix_best_of_n_index,
    prefix_majority_index,
    weighted_vote_index,
)

from .base import Observed, Policy
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
from .budget import OptScaleBudget, UniformEliminate
from .mr_thinking import MRThinking
from .optscale import (
    OptScale,
    checkpoints,
    default_n_init,
    official_peek,
    oneshot_draws,
    sequential_draws,
    stops_at_check,
)
from .optscale_h import OptScaleH
from .registry import POLICY_NAMES, SWEEP_METHODS, Method, make

if TYPE_CHECKING:  # core names, re-exported lazily below so that importing this does not start JAX
    from optscale_jax.fit import fit_status_usable
    from optscale_jax.model import gaussian_prior
    from optscale_jax.nstar import n_star_for_fits as compute_n_star

__all__ = [
    "ASC",
    "BestOfN",
    "DSC",
    "ESC",
    "MRThinking",
    "Method",
    "Observed",
    "OptScale",
    "OptScaleBudget",
    "OptScaleH",
    "POLICY_NAMES",
    "Policy",
    "SWEEP_METHODS",
    "SelfConsistency",
    "UniformEliminate",
    "WeightedVote",
    "answer_counts",
    "best_of_n_index",
    "beta_majority_probability",
    "checkpoints",
    "compute_n_star",
    "default_n_init",
    "fit_status_usable",
    "gaussian_prior",
    "majority_index",
    "make",
    "official_peek",
    "oneshot_draws",
    "prefix_best_of_n_index",
    "prefix_majority_index",
    "sequential_draws",
    "stops_at_check",
    "top_two_counts",
    "weighted_vote_index",
]


def __getattr__(name: str) -> Any:
    if name in ("compute_n_star", "fit_status_usable", "gaussian_prior"):
        from . import optscale

        return getattr(optscale, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
