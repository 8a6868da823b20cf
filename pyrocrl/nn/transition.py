"""The learned inverse transition of the temporal prior (TDRL / LEAP), monotone by design."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from pyrocrl.nn.mlp import mlp


class MonotoneInverseTransition(nn.Module):
    r"""Component-wise inverse transition :math:`\epsilon_t = r(z_t;\ z_{t-L:t-1}, u)`.

    For each component :math:`i`, given the context :math:`c = (z_{t-L:t-1}, e_u)` (the whole
    lagged history and a learned embedding of the domain :math:`u`),

    .. math::
        \epsilon_{t,i} = e^{a_i(c)} \big(z_{t,i} - m_i(c)\big)
            + \sum_{k=1}^{K} \alpha_{ik}(c) \tanh\!\big(e^{\beta_{ik}(c)}
              (z_{t,i} - \gamma_{ik}(c))\big),
        \qquad \alpha_{ik} = \operatorname{softplus}(\cdot) \ge 0,

    with all coefficients produced by one MLP of the context. :math:`z_{t,i}` enters only
    :math:`\epsilon_{t,i}` (the "component-wise" condition of TDRL/LEAP: the Jacobian
    :math:`\partial\epsilon_t/\partial z_t` is diagonal), and

    .. math::
        \frac{\partial \epsilon_{t,i}}{\partial z_{t,i}} = e^{a_i}
            + \sum_k \alpha_{ik}\, e^{\beta_{ik}} \operatorname{sech}^2(\cdot) \;\ge\; e^{a_i} > 0

    in closed form, so :math:`r` is strictly increasing in :math:`z_{t,i}`: the prior is
    cheap to evaluate (no autograd Jacobian, unlike TDRL's unconstrained MLP) and can be
    sampled by inverting :math:`r` (:meth:`inverse`). Monotonicity costs no generality: any
    conditional density of :math:`z_{t,i}` is the pull-back of :math:`\mathcal N(0, 1)`
    through an increasing map (its conditional CDF followed by the Gaussian quantile); ``K``
    sets how non-Gaussian the learned conditional can be.

    Args:
        latent_dim: n.
        lag: L, the number of past steps the transition sees.
        num_domains: number of domains; 1 means stationary (no embedding).
        hidden_dim, num_layers: size of the context MLP.
        num_components: K, the number of tanh terms (0 gives a conditional Gaussian).
        embedding_dim: size of the domain embedding.
    """

    def __init__(self, latent_dim: int, lag: int = 1, num_domains: int = 1,
                 hidden_dim: int = 64, num_layers: int = 3, num_components: int = 4,
                 embedding_dim: int = 8):
        super().__init__()
        self.latent_dim, self.lag, self.num_domains = latent_dim, lag, num_domains
        self.num_components = num_components
        self.embedding = nn.Embedding(num_domains, embedding_dim) if num_domains > 1 else None
        in_dim = lag * latent_dim + (embedding_dim if num_domains > 1 else 0)
        self.net = mlp(in_dim, latent_dim * (2 + 3 * num_components), hidden_dim, num_layers)
        # Start at the identity map (eps = z): the prior begins as N(0, I) at every step, and
        # the tanh terms start small so early training is not dominated by them.
        with torch.no_grad():
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.zero_()
            if num_components:
                amplitude = self.net[-1].bias.view(latent_dim, -1)[:, 2:2 + num_components]
                amplitude.fill_(math.log(math.expm1(0.05)))

    def coefficients(self, context: torch.Tensor, u: torch.Tensor | None):
        """Coefficients ``(a, m, alpha, beta, gamma)`` for ``context: (..., L, n)``."""
        features = context.flatten(-2)
        if self.embedding is not None:
            if u is None:
                raise ValueError(f"MonotoneInverseTransition: u is required with "
                                 f"num_domains={self.num_domains}")
            emb = self.embedding(u)
            features = torch.cat([features, emb.expand(*features.shape[:-1], -1)], -1)
        out = self.net(features).unflatten(-1, (self.latent_dim, 2 + 3 * self.num_components))
        K = self.num_components
        a, m = out[..., 0], out[..., 1]
        alpha = F.softplus(out[..., 2:2 + K])
        beta, gamma = out[..., 2 + K:2 + 2 * K], out[..., 2 + 2 * K:]
        return a, m, alpha, beta, gamma

    @staticmethod
    def _evaluate(z, coeffs):
        a, m, alpha, beta, gamma = coeffs
        slope = a.exp()
        eps = slope * (z - m)
        deriv = slope
        if alpha.shape[-1]:
            h = torch.tanh(beta.exp() * (z.unsqueeze(-1) - gamma))
            eps = eps + (alpha * h).sum(-1)
            deriv = deriv + (alpha * beta.exp() * (1 - h * h)).sum(-1)
        return eps, deriv

    def forward(self, z: torch.Tensor, context: torch.Tensor, u: torch.Tensor | None = None):
        """``(eps, log_abs_det)``, each shaped like ``z: (..., n)``; ``context: (..., L, n)``
        ordered oldest to newest; ``u: (...)`` long or ``None``."""
        eps, deriv = self._evaluate(z, self.coefficients(context, u))
        return eps, deriv.log()

    @torch.no_grad()
    def inverse(self, eps: torch.Tensor, context: torch.Tensor, u: torch.Tensor | None = None,
                num_iterations: int = 60) -> torch.Tensor:
        """The ``z`` with ``r(z; context, u) = eps``, by bisection on the bracket that the
        slope bound :math:`\\partial\\epsilon/\\partial z \\ge e^{a}` guarantees."""
        coeffs = self.coefficients(context, u)
        a, m, alpha = coeffs[0], coeffs[1], coeffs[2]
        spread = alpha.sum(-1)
        low = m + (eps - spread) / a.exp() - 1e-6
        high = m + (eps + spread) / a.exp() + 1e-6
        for _ in range(num_iterations):
            mid = 0.5 * (low + high)
            above = self._evaluate(mid, coeffs)[0] > eps
            high = torch.where(above, mid, high)
            low = torch.where(above, low, mid)
        return 0.5 * (low + high)
