"""A batched, box-constrained Newton maximiser for P-parameter families (private).

Rows are independent: each has its own P×P Hessian (eigenvalue-modified, so the step
is always an ascent direction), its own backtracking line search over a fixed ladder
of step sizes, and its own stopping test. The loop never raises; the caller turns
``(on_edge, done)`` into a :class:`~optscale_jax.fit.FitStatus`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["maximise", "row_value_grad_hess"]

#: Line-search step sizes 1, 1/2, ..., 2^-13.
_STEPS = 2.0 ** -np.arange(0, 14, dtype=float)


def row_value_grad_hess(
    objective: Callable[[jax.Array], jax.Array], theta: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-row value ``(Q,)``, gradient ``(Q, P)`` and Hessian ``(Q, P, P)`` of a separable objective."""

    def total(t):
        return jnp.sum(objective(t))

    grad_fn = jax.grad(total)
    value = objective(theta)
    grad = grad_fn(theta)
    p = theta.shape[-1]
    basis = jnp.broadcast_to(jnp.eye(p, dtype=theta.dtype)[:, None, :], (p,) + theta.shape)
    cols = jax.vmap(lambda v: jax.jvp(grad_fn, (theta,), (v,))[1])(basis)  # (P, Q, P)
    hess = jnp.moveaxis(cols, 0, -1)
    return value, grad, 0.5 * (hess + jnp.swapaxes(hess, -1, -2))


def maximise(objective, theta0, lower, upper, max_iter: int, frozen=None):
    """Maximise ``objective(theta (Q, P)) -> (Q,)`` row by row over a box.

    Returns:
        ``(theta, value, on_edge, done, iterations)``.
    """
    dtype = theta0.dtype
    lower = jnp.asarray(lower, dtype)
    upper = jnp.asarray(upper, dtype)
    q, p = theta0.shape
    theta0 = jnp.clip(theta0, lower, upper)
    value0 = objective(theta0)
    rtol = 1e3 * jnp.finfo(dtype).eps
    steps = jnp.asarray(_STEPS, dtype)[:, None, None]
    eye = jnp.eye(p, dtype=dtype)

    def cond(state):
        _, _, done, _, it = state
        return (it < max_iter) & ~jnp.all(done)

    def body(state):
        theta, value, done, iterations, it = state
        _, grad, hess = row_value_grad_hess(objective, theta)
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        # Bounds that the gradient pushes through are held (active set).
        at_lo = (theta <= lower) & (grad < 0)
        at_hi = (theta >= upper) & (grad > 0)
        free = ~(at_lo | at_hi)
        ff = free[:, :, None] & free[:, None, :]
        h = jnp.where(ff, -hess, eye)
        h = jnp.where(jnp.isfinite(h), h, eye)
        evals, evecs = jnp.linalg.eigh(h)
        floor = jnp.maximum(1e-8 * jnp.max(jnp.abs(evals), axis=-1, keepdims=True), 1e-12)
        evals = jnp.maximum(jnp.abs(evals), floor)
        g = jnp.where(free, grad, 0.0)
        coef = jnp.einsum("qji,qj->qi", evecs, g) / evals
        direction = jnp.einsum("qij,qj->qi", evecs, coef)
        direction = jnp.where(free & jnp.isfinite(direction), direction, 0.0)
        cand = jnp.clip(theta[None] + steps * direction[None], lower, upper)  # (K, Q, P)
        cand_val = jax.vmap(objective)(cand)  # (K, Q)
        ok = jnp.isfinite(cand_val) & (cand_val > value[None])
        first = jnp.argmax(ok, axis=0)  # largest step that improves
        any_ok = jnp.any(ok, axis=0)
        rows = jnp.arange(q)
        new_theta = jnp.where(any_ok[:, None], cand[first, rows], theta)
        new_value = jnp.where(any_ok, cand_val[first, rows], value)
        decrement = jnp.sum(g * direction, axis=-1)
        small = (decrement <= rtol * (1.0 + jnp.abs(value))) | (
            new_value - value <= 1e-12 * (1.0 + jnp.abs(value))
        )
        stop = ~any_ok | small
        theta = jnp.where(done[:, None], theta, new_theta)
        value = jnp.where(done, value, new_value)
        iterations = iterations + (~done).astype(jnp.int32)
        return theta, value, done | stop, iterations, it + 1

    state0 = (
        theta0,
        value0,
        jnp.zeros(q, bool) if frozen is None else frozen,
        jnp.zeros(q, jnp.int32),
        jnp.asarray(0),
    )
    theta, value, done, iterations, _ = jax.lax.while_loop(cond, body, state0)
    span = upper - lower
    tol = jnp.where(jnp.isfinite(span), 1e-6 * span, 0.0)
    on_edge = jnp.any((theta <= lower + tol) | (theta >= upper - tol), axis=-1)
    return theta, value, on_edge, done, iterations
