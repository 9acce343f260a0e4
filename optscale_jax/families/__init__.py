"""Score families: the law of one PRM score on [0, 1], selected by name.

``truncnorm`` (the paper), ``beta``, ``logitnormal`` and ``mixture`` (two betas: wrong
and right samples). Each implements :class:`ScoreFamily`; :func:`get` looks one up by
name, :func:`register` adds one, :func:`n_star_family` turns fitted parameters into N*
through the family's CDF. See ``docs/ARCHITECTURE.md`` ("Where new things go: a score
family").

Examples:
    >>> import optscale_jax.families as fam
    >>> fit = fam.get("truncnorm").fit([[0.2, 0.4, 0.5, 0.6, 0.9]])
    >>> round(float(fit.params["mu"][0]), 3)
    0.529
"""

from optscale_jax.families.base import (
    FAMILIES,
    BoxFamily,
    FamilyDistribution,
    FamilyFit,
    ScoreFamily,
    UnconstrainedPrior,
    check_s_min,
    family_model,
    get,
    n_star_family,
    register,
)
from optscale_jax.families.beta import BETA, EPS, Beta
from optscale_jax.families.logitnormal import LOGITNORMAL, LogitNormal
from optscale_jax.families.mixture import MIXTURE, BetaMixture
from optscale_jax.families.truncnorm import TRUNCNORM, TruncNorm

__all__ = [
    "FAMILIES",
    "BoxFamily",
    "FamilyDistribution",
    "FamilyFit",
    "ScoreFamily",
    "UnconstrainedPrior",
    "check_s_min",
    "family_model",
    "get",
    "n_star_family",
    "register",
    "TRUNCNORM",
    "BETA",
    "Beta",
    "EPS",
    "LOGITNORMAL",
    "LogitNormal",
    "MIXTURE",
    "BetaMixture",
    "TruncNorm",
]
