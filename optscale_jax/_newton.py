"""The batched, box-constrained Newton solver behind every fit (private).

One solver for many independent 2-parameter problems at once: the objective is
separable over rows, so each row has its own 2×2 Hessian, line search and
stopping test, and the loop runs until every row is done. It never raises: a
row that cannot improve stops where it is, and the caller turns the final
state into a status (see :class:`optscale_jax.fit.FitStatus`).

The state carries what the next step needs (value, gradient, Hessian), so each
iteration costs one value/gradient/Hessian evaluation and one batch of
line-search values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SolverState", "value_grad_hess", "newton_box", "LINE_SEARCH_STEPS"]

#: Line-search step sizes 1, 1/4, ..., 4^-9 (numpy, so importing this module
#: creates no device array).
LINE_SEARCH_STEPS = 4.0 ** -np.arange(0, 10, dtype=float)


class SolverState(NamedTuple):
    """State of :func:`newton_box`; every field but ``it`` has the batch shape ``(Q, ...)``.

    Attributes:
        theta: current parameters, ``(Q, 2)``.
        value: objective at ``theta``, ``(Q,)``.
        grad: gradient at ``theta``, ``(Q, 2)``.
        hess: Hessian at ``theta``, ``(Q, 2, 2)``.
        done: rows that stopped, ``(Q,)`` bool.
        iterations: iterations taken per row, ``(Q,)`` int32.
        it: iterations of the batch loop (scalar).
    """

    theta: jax.Array
    value: jax.Array
    grad: jax.Array
    hess: jax.Array
    done: jax.Array
    iterations: jax.Array
    it: jax.Array


def value_grad_hess(
    objective: Callable[[jax.Array], jax.Array], theta: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-row value, gradient and 2×2 Hessian of a separable objective.

    The Hessian comes from two forward-over-reverse products of the summed
    objective (rows do not interact, so the sum's gradient is the per-row one).
    """

    def total(t):
        return jnp.sum(objective(t))

    grad_fn = jax.grad(total)
    value = objective(theta)
    grad = grad_fn(theta)
    cols = [
        jax.jvp(grad_fn, (theta,), (jnp.zeros_like(theta).at[:, k].set(1.0),))[1] for k in range(2)
    ]
    hess = jnp.stack(cols, axis=-1)  # (Q, 2, 2)
    return value, grad, 0.5 * (hess + jnp.swapaxes(hess, -1, -2))


def newton_box(objective, vgh, theta0, lower, upper, max_iter: int, frozen=None):
    """Maximise a separable objective over a box, row by row.

    A projected Newton method with eigenvalue-modified Hessians, an active set
    on the box, a step-to-the-bound fallback, scaled projected gradient ascent
    as the last resort, and an Armijo line search over all three directions.

    Args:
        objective: ``theta (Q, 2) -> (Q,)`` values.
        vgh: ``theta -> (value (Q,), gradient (Q, 2), Hessian (Q, 2, 2))``.
        theta0: starting points ``(Q, 2)`` (clipped into the box).
        lower: lower bounds of the box, shape ``(2,)`` (may be ``-inf``).
        upper: upper bounds, shape ``(2,)`` (may be ``inf``).
        max_iter: iteration budget.
        frozen: optional ``(Q,)`` bool of rows not to move at all.

    Returns:
        ``(theta, value, on_edge, done, iterations)``: the final point and value
        per row, whether it lies on the edge of the box, whether the row
        stopped (converged or could not improve) before the budget ran out, and
        the iterations it took.
    """
    dtype = theta0.dtype
    lower = jnp.asarray(lower, dtype)
    upper = jnp.asarray(upper, dtype)
    eps_lo = jnp.where(jnp.isfinite(lower), 1e-9 * jnp.abs(lower), 0.0)
    eps_hi = jnp.where(jnp.isfinite(upper), 1e-9 * jnp.abs(upper), 0.0)
    theta0 = jnp.clip(theta0, lower, upper)
    value0, grad0, hess0 = vgh(theta0)
    finfo = jnp.finfo(dtype)
    rtol = 1e3 * finfo.eps

    def cond(state):
        return (state.it < max_iter) & ~jnp.all(state.done)

    def body(state):
        theta, value, grad, hess = state.theta, state.value, state.grad, state.hess
        # Minimise phi = -f.
        g = -grad
        h = -hess
        at_lo = theta <= lower + eps_lo
        at_hi = theta >= upper - eps_hi
        eye = jnp.eye(2, dtype=dtype)

        def newton_direction(free):
            ff = free[:, :, None] & free[:, None, :]
            h_r = jnp.where(ff, h, eye)
            g_r = jnp.where(free, g, 0.0)
            h_r = jnp.where(jnp.isfinite(h_r), h_r, eye)
            evals, evecs = jnp.linalg.eigh(h_r)
            floor = jnp.maximum(
                1e-10 * jnp.max(jnp.abs(evals), axis=-1, keepdims=True), finfo.tiny
            )
            evals = jnp.maximum(jnp.abs(evals), floor)
            coef = jnp.einsum("qji,qj->qi", evecs, g_r) / evals
            d = -jnp.einsum("qij,qj->qi", evecs, coef)
            return jnp.where(free & jnp.isfinite(d), d, 0.0), g_r

        # Active set: a bound is held if the gradient, or then the Newton step
        # (coupled through the Hessian), pushes through it.
        free = ~((at_lo & (g > 0)) | (at_hi & (g < 0)))
        direction, _ = newton_direction(free)
        free = free & ~((at_lo & (direction < 0)) | (at_hi & (direction > 0)))
        direction, g_r = newton_direction(free)
        # Fallback: scaled projected gradient ascent.
        scale = jnp.maximum(jnp.abs(jnp.diagonal(h, axis1=-2, axis2=-1)), finfo.tiny)
        free_g = ~((at_lo & (g > 0)) | (at_hi & (g < 0)))
        grad_dir = jnp.where(free_g & jnp.isfinite(g / scale), -g / scale, 0.0)
        # Where the Newton step runs through a bound, stop that coordinate on the bound
        # and take the Newton step of the other one given that move (a projected step
        # alone is not an ascent direction when the Hessian couples the two).
        full = theta + direction
        crossing = (full < lower) | (full > upper)
        move = jnp.clip(full, lower, upper) - theta
        other = 1 - jnp.arange(2)
        h_other = jnp.take_along_axis(h, other[None, :, None], axis=-1)[..., 0]  # h[i, 1-i]
        diag = jnp.diagonal(h, axis1=-2, axis2=-1)
        cross_move = jnp.where(crossing, move, 0.0)[:, other]
        d_rest = -(g + h_other * cross_move) / jnp.where(diag > 0, diag, jnp.inf)
        to_bound = jnp.where(crossing, move, jnp.where(crossing[:, other], d_rest, direction))
        to_bound = jnp.where(jnp.isfinite(to_bound) & free, to_bound, 0.0)
        steps = jnp.asarray(LINE_SEARCH_STEPS, dtype)[:, None, None]
        cand = jnp.concatenate(
            [
                theta[None] + steps * direction[None],
                theta[None] + steps * to_bound[None],
                theta[None] + steps * grad_dir[None],
            ]
        )
        cand = jnp.clip(cand, lower, upper)
        cand_val = jax.vmap(objective)(cand)  # (3K, Q)
        gain = jnp.einsum("qi,kqi->kq", grad, cand - theta[None])
        ok = (
            jnp.isfinite(cand_val)
            & (cand_val >= value[None] + 1e-4 * gain)
            & (cand_val > value[None])
        )
        first = jnp.argmax(jnp.where(ok, cand_val, -jnp.inf), axis=0)  # best passing candidate
        any_ok = jnp.any(ok, axis=0)
        rows = jnp.arange(theta.shape[0])
        new_theta = jnp.where(any_ok[:, None], cand[first, rows], theta)
        new_value = jnp.where(any_ok, cand_val[first, rows], value)
        decrement = jnp.sum(g_r * -direction, axis=-1)
        small = (decrement <= rtol * (1.0 + jnp.abs(value))) | (
            new_value - value <= finfo.eps * (1.0 + jnp.abs(value))
        )
        done = state.done | ~any_ok | small
        theta = jnp.where(state.done[:, None], theta, new_theta)
        _, new_grad, new_hess = vgh(theta)
        value = jnp.where(state.done, value, new_value)
        iterations = state.iterations + (~state.done).astype(jnp.int32)
        return SolverState(theta, value, new_grad, new_hess, done, iterations, state.it + 1)

    q = theta0.shape[0]
    state0 = SolverState(
        theta0,
        value0,
        grad0,
        hess0,
        jnp.zeros(q, bool) if frozen is None else frozen,
        jnp.zeros(q, jnp.int32),
        jnp.asarray(0),
    )
    state = jax.lax.while_loop(cond, body, state0)
    on_edge = (state.theta <= lower + eps_lo) | (state.theta >= upper - eps_hi)
    return state.theta, state.value, jnp.any(on_edge, axis=-1), state.done, state.iterations
