r"""``mixture``: two beta components, wrong (low) and right (high) samples.

.. math:: p(x) = (1 - w)\,\mathrm{Beta}(x; a_{lo}, b_{lo}) + w\,\mathrm{Beta}(x; a_{hi}, b_{hi})

``w`` is the question's chance of a good (high-component) sample. Parameters ``w``,
``a_lo``, ``b_lo``, ``a_hi``, ``b_hi``. Scores are clamped to [ε, 1 − ε] (ε = 1e-6) as
for ``beta``.

**Label switching.** The fit runs in θ = (logit w, logit m_lo, logit r, log κ_lo,
log κ_hi) with component means m_lo and m_hi = m_lo + (1 − m_lo)·sigmoid(r) and
concentrations κ = a + b, so the low component's mean is always below the high one's.

**Singularity guard.** A component collapsing onto one score makes the likelihood
unbounded, so θ lives in a box: logit w ∈ [−8, 8], logit m_lo and logit r ∈ [−10, 10],
κ ∈ [2, 1000]; a maximum on the edge is ``BOUNDARY`` (usable: F(s_min) is still that
of a fitted law). Fits start from four splits of the scores (at 0.5, 0.8, 0.95 and the
row's mid-range) and keep the best maximum.

Priors: ``"weak"`` (logit w ~ N(0, 2²), logit m_lo ~ N(−1, 2²), logit r ~ N(0, 2²),
log κ ~ N(log 10, 1.5²)) or an :class:`~optscale_jax.families.base.UnconstrainedPrior`
on θ. A :class:`~optscale_jax.model.GaussianPrior` (μ̄, σ̄) is not taken (ValueError):
one (mean, std) pair does not pin down two components.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betainc, logit

from optscale_jax.families.base import BoxFamily, register
from optscale_jax.families.beta import EPS, beta_log_prob, clamp

__all__ = ["BetaMixture", "MIXTURE"]

_KAPPA = (2.0, 1000.0)
_SPLITS = (0.5, 0.8, 0.95)


@dataclasses.dataclass(frozen=True)
class BetaMixture(BoxFamily):
    """(1 − w) Beta(a_lo, b_lo) + w Beta(a_hi, b_hi), low mean < high mean."""

    name = "mixture"
    param_names = ("w", "a_lo", "b_lo", "a_hi", "b_hi")
    theta_names = ("logit_w", "logit_m_lo", "logit_r", "log_kappa_lo", "log_kappa_hi")
    lower = (-8.0, -10.0, -10.0, float(np.log(_KAPPA[0])), float(np.log(_KAPPA[0])))
    upper = (8.0, 10.0, 10.0, float(np.log(_KAPPA[1])), float(np.log(_KAPPA[1])))
    weak_loc = (0.0, -1.0, 0.0, float(np.log(10.0)), float(np.log(10.0)))
    weak_scale = (2.0, 2.0, 2.0, 1.5, 1.5)

    def to_params(self, theta):
        w = jax.nn.sigmoid(theta[..., 0])
        m_lo = jax.nn.sigmoid(theta[..., 1])
        m_hi = m_lo + (1.0 - m_lo) * jax.nn.sigmoid(theta[..., 2])
        k_lo, k_hi = jnp.exp(theta[..., 3]), jnp.exp(theta[..., 4])
        return {"w": w, "a_lo": m_lo * k_lo, "b_lo": (1.0 - m_lo) * k_lo,
                "a_hi": m_hi * k_hi, "b_hi": (1.0 - m_hi) * k_hi}

    def to_theta(self, params):
        k_lo = params["a_lo"] + params["b_lo"]
        k_hi = params["a_hi"] + params["b_hi"]
        m_lo, m_hi = params["a_lo"] / k_lo, params["a_hi"] / k_hi
        r = (m_hi - m_lo) / (1.0 - m_lo)
        return jnp.stack([logit(params["w"]), logit(m_lo), logit(r), jnp.log(k_lo),
                          jnp.log(k_hi)], -1)

    def log_prob(self, params, x):
        lo = beta_log_prob(x, params["a_lo"], params["b_lo"])
        hi = beta_log_prob(x, params["a_hi"], params["b_hi"])
        return jnp.logaddexp(jnp.log1p(-params["w"]) + lo, jnp.log(params["w"]) + hi)

    def log_cdf(self, params, s):
        s = jnp.asarray(s)
        inner = jnp.clip(s, EPS, 1.0 - EPS)
        f = ((1.0 - params["w"]) * betainc(params["a_lo"], params["b_lo"], inner)
             + params["w"] * betainc(params["a_hi"], params["b_hi"], inner))
        return jnp.where(s >= 1.0, 0.0, jnp.where(s <= 0.0, -jnp.inf, jnp.log(f)))

    def sample(self, key, params, shape):
        k1, k2, k3 = jax.random.split(key, 3)
        shape = tuple(shape)
        good = jax.random.bernoulli(k1, params["w"], shape)
        lo = jax.random.beta(k2, params["a_lo"], params["b_lo"], shape)
        hi = jax.random.beta(k3, params["a_hi"], params["b_hi"], shape)
        return jnp.where(good, hi, lo)

    def starts(self, scores, mask):
        x = clamp(scores)
        lo_s = jnp.min(jnp.where(mask, x, 1.0), -1)
        hi_s = jnp.max(jnp.where(mask, x, 0.0), -1)
        cuts = [jnp.full(lo_s.shape, c) for c in _SPLITS] + [0.5 * (lo_s + hi_s)]
        out = []
        for t in cuts:
            high = mask & (x >= t[:, None])
            low = mask & ~(x >= t[:, None])
            n_hi, n_lo = jnp.sum(high, -1), jnp.sum(low, -1)
            m_hi = jnp.where(n_hi > 0, jnp.sum(jnp.where(high, x, 0.0), -1)
                             / jnp.maximum(n_hi, 1), 0.5 * (1.0 + t))
            m_lo = jnp.where(n_lo > 0, jnp.sum(jnp.where(low, x, 0.0), -1)
                             / jnp.maximum(n_lo, 1), 0.5 * t)
            m_lo = jnp.clip(m_lo, 1e-3, 0.98)
            m_hi = jnp.clip(jnp.maximum(m_hi, m_lo + 0.5 * (1 - m_lo) * 0.1), m_lo + 1e-4, 0.999)
            w = jnp.clip((n_hi + 0.5) / (n_hi + n_lo + 1.0), 0.05, 0.95)
            r = (m_hi - m_lo) / (1.0 - m_lo)
            k = jnp.full(w.shape, jnp.log(20.0))
            out.append(jnp.stack([logit(w), logit(m_lo), logit(r), k, k], -1))
        return jnp.stack(out, axis=1)


MIXTURE = register(BetaMixture())
