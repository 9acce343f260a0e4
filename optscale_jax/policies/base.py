"""The policy interface: what a policy sees (:class:`Observed`) and what it answers.

The selection rules policies share (Best-of-N, voting) are in
:mod:`optscale_jax.selection`.

A *policy* decides, for every question at once, how many samples it wants so far
(:meth:`Policy.want`) and which drawn sample it keeps (:meth:`Policy.select`).
It sees only the drawn prefix of each row, as an :class:`Observed`.

Round semantics (used by :func:`optscale_jax.replay.replay` and meant for any live
loop): ``want`` is re-evaluated every round on everything drawn so far; a question
whose ``want`` is ``<=`` what it has drawn draws nothing this round. The run ends at
the first round in which no question wants more than it has. A question may therefore
*wait* (ask for what it has) while others progress and resume later; policies whose
rule only looks at their own row (all but DSC) never do. ``want`` is clipped to the
policy's ``n_max`` and to the samples a pool row holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Observed", "Policy"]


@dataclass
class Observed:
    """What a policy may look at: the drawn prefix of every row.

    Attributes:
        scores: ``(Q, N)`` float aggregated PRM scores (0 where not drawn).
        mask: ``(Q, N)`` bool, True = drawn; rows are prefix-contiguous.
        answer_ids: ``(Q, N)`` int32 answer class per question, -1 = no answer.
        tokens: ``(Q, N)`` int completion tokens.
        selectable: ``(Q, N)`` bool, drawn samples that may be chosen (False for an
            empty completion, which is never selected: docs/CONTRACTS.md); None = all drawn.
        available: ``(Q,)`` int, the most samples each question can ever draw (a pool
            row's length capped at ``n_max``); None = unknown (a live run: unlimited).
            Lets a rule that needs a fixed number of samples (DSC's probe) see that a
            row holds fewer.

    In the answer classes ``answer_ids`` a replay passes, "no answer" is a class of its
    own under the authors' vote rule (it votes and can win) and -1 (never votes) under
    the math-verify rule; see :func:`optscale_jax.grading.vote_classes`.
    """

    scores: np.ndarray
    mask: np.ndarray
    answer_ids: np.ndarray
    tokens: np.ndarray
    selectable: np.ndarray | None = None
    available: np.ndarray | None = None

    @property
    def n_drawn(self) -> np.ndarray:
        """``(Q,)`` int64 number of drawn samples per question."""
        return self.mask.sum(axis=1).astype(np.int64)


@runtime_checkable
class Policy(Protocol):
    """A stopping + selection rule, vectorised over questions.

    Attributes:
        name: short label used in reports (e.g. ``"BoN"``, ``"OptScale0-oneshot"``).
        n_max: most samples the policy ever wants per question.
    """

    name: str
    n_max: int

    def want(self, obs: Observed) -> np.ndarray:
        """``(Q,)`` int: total samples wanted so far; ``<=`` drawn means stop (or wait)."""
        ...

    def select(self, obs: Observed) -> np.ndarray:
        """``(Q,)`` int index of the chosen drawn sample."""
        ...
