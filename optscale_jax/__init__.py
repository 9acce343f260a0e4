"""optscale-jax: probabilistically optimal inference-time scaling (OptScale) on JAX.

An LLM samples answers to a question; a process reward model scores each in
[0, 1]. The scores of one question are modelled as a normal truncated to
[0, 1]; (μ, σ) are fitted from the scores seen so far (MLE: OptScale⁰; MAP with
predicted priors: OptScaleᵗ), and sampling stops at
N* = ceil(log(1 − α) / log F(s_min)).

Submodules (the public names below are re-exported lazily, so that importing
the package, e.g. in a grading worker process, does not start JAX):

* :mod:`optscale_jax.distributions` — :class:`TruncatedNormal01`, moment maps
* :mod:`optscale_jax.model` — the numpyro score model and its priors
* :mod:`optscale_jax.fit` — batched MLE / MAP fits, NUTS posterior
* :mod:`optscale_jax.nstar` — N*, exceedance probabilities
* :mod:`optscale_jax.policies` — Best-of-N, SC, weighted SC, ESC, ASC, DSC, OptScale
* :mod:`optscale_jax.answers`, :mod:`.scores` — answer extraction, step-score aggregation
* :mod:`optscale_jax.pool` — the frozen completion pool and its transforms
* :mod:`optscale_jax.io` — pool files (authors' JSON, search-and-learn, Parquet),
  prompts/benchmark files, priors files, the shared data directory
* :mod:`optscale_jax.grading`, :mod:`.synthetic` — math-verify grading, synthetic twins
* :mod:`optscale_jax.replay`, :mod:`.sweep`, :mod:`.report` — replays, grid sweeps, tables and plots
* :mod:`optscale_jax.engines`, :mod:`.online` — live sampling over vLLM / transformers
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "distributions": [
        "TruncatedNormal01",
        "moments",
        "params_from_moments",
        "truncnorm01_log_prob",
        "truncnorm01_log_cdf",
        "truncnorm01_log_sf",
        "truncnorm01_icdf",
    ],
    "model": ["GaussianPrior", "Prior", "score_model", "log_joint", "weak_prior", "gaussian_prior",
              "population_prior", "POPULATION_PRIOR_CENTRES"],
    "fit": [
        "FitResult",
        "FitStatus",
        "PosteriorResult",
        "fit_status_usable",
        "fit_mle",
        "fit_map",
        "fit_prefixes",
        "posterior",
        "validate_scores",
    ],
    "nstar": [
        "n_star",
        "n_star_from_log_cdf",
        "n_star_official",
        "n_star_for_fits",
        "exceedance_probability",
        "posterior_exceedance_probability",
        "posterior_n_star",
    ],
    "answers": ["extract_answer", "extract_gold"],
    "scores": ["AGGREGATIONS", "aggregate_step_scores"],
    "pool": ["Pool"],
    "io": ["PoolFormatError", "read_pool", "read_official", "read_search_and_learn",
           "read_parquet", "write_parquet", "read_prompts", "shared_data_dir"],
    "grading": ["Grader", "equivalence_classes", "grade_pool"],
    "synthetic": ["synthetic_pool"],
    "policies": ["Observed", "Policy", "BestOfN", "SelfConsistency", "WeightedVote", "ESC", "ASC",
                 "DSC", "OptScale", "MRThinking", "OptScaleH"],
    "hierarchical": ["PopulationLaw", "PopulationFit", "PAPER_POPULATION", "fit_population",
                     "log_marginal_likelihood"],
    # The functions replay() and sweep() share their modules' names: the package
    # attributes are the modules (Python sets them on import anyway), so call
    # optscale_jax.replay.replay(...) and optscale_jax.sweep.sweep(...).
    "replay": ["pareto_frontier", "bootstrap_ci", "ReplayResult"],
    "sweep": ["SweepResult", "OFFICIAL_GRID", "Grid"],
    "report": ["write_report", "plot_frontier", "table_markdown", "table1_rows"],
    "online": ["Question", "RunResult"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
_WHERE["run_live"] = "online"

__all__ = sorted(_WHERE) + ["__version__", "replay", "sweep"]


_SUBMODULES = frozenset({"replay", "sweep"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"optscale_jax.{name}")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'optscale_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"optscale_jax.{module}"), "run" if name == "run_live" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
