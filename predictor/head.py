"""The prior head in Flax NNX: attention pooling and two MLPs for (μ̄, σ̄).

The paper's head: attention pooling over the backbone's token states, then two
MLPs (512-256-128, GELU, dropout 0.2/0.2/0.1), one for μ̄ and one for σ̄ > 0
(softplus). The same head accepts pre-pooled embeddings ``(B, d)``; then the
pooling layer is skipped.

Dropout takes an explicit PRNG key per call (``key=``); without a key the head
is deterministic (evaluation). The module therefore holds only parameters, so
training can split it once and run the step under plain ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

__all__ = ["AttentionPool", "MLP", "PriorHead", "inverse_softplus"]


def inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = y`` for ``y > 0`` (stable for small and large y)."""
    if not y > 0:
        raise ValueError(f"inverse_softplus needs y > 0, got {y}")
    return float(y + np.log(-np.expm1(-y)))


class AttentionPool(nnx.Module):
    """Masked attention pooling: ``Σ_t softmax_t(w·h_t + b) h_t`` over valid tokens.

    Args:
        in_features: token width ``d``.
        rngs: parameter initialisation.
    """

    def __init__(self, in_features: int, *, rngs: nnx.Rngs):
        self.score = nnx.Linear(in_features, 1, rngs=rngs)

    def __call__(self, hidden: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
        """Pool ``hidden (B, T, d)`` with ``mask (B, T)`` (True = token) to ``(B, d)``.

        A row without any valid token pools to zeros.
        """
        hidden = jnp.asarray(hidden)
        logits = self.score(hidden)[..., 0]
        if mask is None:
            mask = jnp.ones(hidden.shape[:2], bool)
        mask = jnp.asarray(mask, bool)
        logits = jnp.where(mask, logits, -jnp.inf)
        # guard all-masked rows: softmax of all -inf is NaN
        any_valid = mask.any(-1, keepdims=True)
        weights = jax.nn.softmax(jnp.where(any_valid, logits, 0.0), axis=-1)
        weights = jnp.where(mask, weights, 0.0)
        return jnp.einsum("bt,btd->bd", weights, hidden)


class MLP(nnx.Module):
    """``Linear → GELU → Dropout`` blocks, then a linear output of width 1.

    Args:
        in_features: input width.
        hidden: hidden widths, e.g. ``(512, 256, 128)``.
        dropout: dropout rate after each hidden block (same length as ``hidden``).
        out_bias: initial bias of the output unit.
        rngs: parameter initialisation.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        dropout: Sequence[float],
        *,
        out_bias: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if len(hidden) != len(dropout):
            raise ValueError(
                f"hidden {tuple(hidden)} and dropout {tuple(dropout)} differ in length"
            )
        widths = [in_features, *hidden]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.drops = nnx.List([nnx.Dropout(float(r)) for r in dropout])
        # zero output kernel: the untrained head predicts exactly ``out_bias``
        self.out = nnx.Linear(
            widths[-1],
            1,
            kernel_init=nnx.initializers.zeros,
            bias_init=nnx.initializers.constant(out_bias),
            rngs=rngs,
        )

    def __call__(self, x: ArrayLike, *, key: jax.Array | None = None) -> jax.Array:
        """Map ``(B, in_features)`` to ``(B,)``; dropout only when ``key`` is given."""
        x = jnp.asarray(x)
        keys = (
            [None] * len(self.layers)
            if key is None
            else list(jax.random.split(key, len(self.layers)))
        )
        for layer, drop, k in zip(self.layers, self.drops, keys, strict=True):
            x = jax.nn.gelu(layer(x))
            if k is not None:
                x = drop(x, deterministic=False, rngs=k)
        return self.out(x)[..., 0]


class PriorHead(nnx.Module):
    """Question representation → prior centres ``(μ̄, σ̄)``, ``σ̄ > 0``.

    ``μ̄`` is an unconstrained linear output, ``σ̄ = softplus(·)``. Which
    quantities they stand for depends on the training objective (the label
    moments for ``"regression"``, the truncated-normal parameters for
    ``"score_model"``; see :mod:`predictor.training`).

    Args:
        in_features: backbone width ``d``.
        hidden: MLP widths (paper: ``(512, 256, 128)``).
        dropout: MLP dropout rates (paper: ``(0.2, 0.2, 0.1)``).
        loc_init: initial output of the μ̄ head (e.g. the training mean).
        scale_init: initial output of the σ̄ head, > 0.
        normalize: apply a LayerNorm to the input features (token- or row-wise).
        rngs: parameter initialisation (keyword-only).

    Examples:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> head = PriorHead(8, hidden=(4,), dropout=(0.1,), rngs=nnx.Rngs(0))
        >>> loc, scale = head(jnp.ones((3, 5, 8)), jnp.ones((3, 5), bool))
        >>> loc.shape, bool((scale > 0).all())
        ((3,), True)
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden: Sequence[int] = (512, 256, 128),
        dropout: Sequence[float] = (0.2, 0.2, 0.1),
        loc_init: float = 0.0,
        scale_init: float = 0.1,
        normalize: bool = True,
        rngs: nnx.Rngs,
    ):
        self.in_features = int(in_features)
        self.norm = nnx.LayerNorm(in_features, rngs=rngs) if normalize else None
        self.pool = AttentionPool(in_features, rngs=rngs)
        self.mu = MLP(in_features, hidden, dropout, out_bias=loc_init, rngs=rngs)
        self.sigma = MLP(
            in_features, hidden, dropout, out_bias=inverse_softplus(scale_init), rngs=rngs
        )

    def embed(self, x: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
        """The pooled ``(B, d)`` representation of tokens ``(B, T, d)`` or embeddings ``(B, d)``."""
        x = jnp.asarray(x)
        if x.ndim not in (2, 3) or x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected features (B, T, {self.in_features}) or (B, {self.in_features}), "
                f"got shape {x.shape}"
            )
        if self.norm is not None:
            x = self.norm(x)
        if x.ndim == 3:
            x = self.pool(x, mask)
        return x

    def __call__(
        self, x: ArrayLike, mask: ArrayLike | None = None, *, key: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Predict ``(μ̄, σ̄)``, each of shape ``(B,)``.

        Args:
            x: token states ``(B, T, d)`` (with ``mask (B, T)``) or pooled ``(B, d)``.
            mask: attention mask for token states (True = token); ignored for 2-D input.
            key: dropout key; ``None`` for deterministic evaluation.

        Returns:
            ``(loc, scale)`` with ``scale > 0``.
        """
        z = self.embed(x, mask)
        k_mu, k_sigma = (None, None) if key is None else jax.random.split(key)
        loc = self.mu(z, key=k_mu)
        scale = jax.nn.softplus(self.sigma(z, key=k_sigma))
        # softplus underflows to 0 for very negative inputs in float32
        return loc, jnp.maximum(scale, jnp.finfo(scale.dtype).tiny)
