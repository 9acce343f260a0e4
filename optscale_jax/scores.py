"""Step-score aggregation: per-step PRM scores to one score per completion.

The one home of the rule: the pool readers (:mod:`optscale_jax.io`) and the live PRM
scorers (:mod:`optscale_jax.engines.prm`, re-exported there) both call
:func:`aggregate_step_scores`, so a pool read from a file and one scored live agree.
A leaf module (numpy only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["AGGREGATIONS", "aggregate_step_scores"]

AGGREGATIONS: tuple[str, ...] = ("mean", "last", "min", "product")
"""Ways to turn per-step PRM scores into one score per completion."""


def aggregate_step_scores(steps: Sequence[float], how: str = "mean") -> float:
    """Aggregate the per-step PRM scores of one completion into one score in [0, 1].

    Args:
        steps: step scores (probabilities that each step is correct), in order.
        how: ``"mean"`` (the paper and its official code), ``"last"``, ``"min"`` or
            ``"product"``.

    Returns:
        The aggregated score; 0.0 when ``steps`` is empty (as the official scorer does,
        so a completion without steps is never preferred).

    Raises:
        ValueError: for an unknown aggregation, or a step score that is NaN or outside
            [0, 1] (the message names the step).

    Examples:
        >>> aggregate_step_scores([0.5, 1.0], "mean"), aggregate_step_scores([0.5, 1.0], "product")
        (0.75, 0.5)
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}: aggregate must be one of {AGGREGATIONS}")
    a = np.asarray(list(steps) if not isinstance(steps, np.ndarray) else steps, dtype=np.float64)
    if a.size == 0:
        return 0.0
    bad = ~((a >= 0.0) & (a <= 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"step score {i} is {float(a[i])!r}, outside [0, 1]")
    if how == "mean":
        return float(a.mean())
    if how == "last":
        return float(a[-1])
    if how == "min":
        return float(a.min())
    return float(np.prod(a))
