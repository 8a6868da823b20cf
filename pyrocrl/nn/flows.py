r"""Invertible layers for exact-likelihood models (:class:`pyrocrl.models.IFlow`).

Each layer is a Pyro :class:`~pyro.distributions.TransformModule` written in the *generative*
direction (latent :math:`h` to observation :math:`y`), so that
``dist.TransformedDistribution(base, layers)`` is the model's density of ``x``. Each layer
stores the parameters of its *inverse* (observation to latent), which is what training
evaluates (``TransformedDistribution.log_prob`` runs the layers backwards): the inverse and its
log-determinant are closed-form, and only sampling new ``x`` needs a linear solve or a few
Newton steps.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn
from torch.nn import functional as F


class InvertibleLinear(TransformModule):
    r"""An invertible affine layer, parametrized by its inverse:
    :math:`y = A^{-1}(h - c)` generatively (input :math:`h`, output :math:`y`),
    :math:`y \mapsto A y + c` backwards, with
    :math:`\log|\det \partial y / \partial h| = -\log|\det A|`.

    Args:
        dim: the width (input and output). :math:`A` starts as a Haar-random orthogonal
            matrix drawn from torch's RNG (``torch.manual_seed`` fixes it), :math:`c` at 0.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int):
        super().__init__(cache_size=0)
        q, r = torch.linalg.qr(torch.randn(dim, dim))
        weight = q * torch.sign(torch.diagonal(r))
        self.weight = nn.Parameter(weight)  # A
        self.bias = nn.Parameter(torch.zeros(dim))  # c

    def _call(self, h):
        # y with A y + c = h
        return torch.linalg.solve(self.weight, (h - self.bias).unsqueeze(-1)).squeeze(-1)

    def _inverse(self, y):
        return y @ self.weight.T + self.bias

    def log_abs_det_jacobian(self, h, y):
        return (-torch.linalg.slogdet(self.weight)[1]).expand(h.shape[:-1])


class SmoothLeakyReLU(TransformModule):
    r"""An element-wise, smoothed leaky ReLU of slope :math:`a` for negative inputs, defined by
    its inverse

    .. math::
        \rho(y) = y - (a^{-1} - 1)\,\tau\,\operatorname{softplus}(-y/\tau),\qquad
        \rho'(y) = 1 + (a^{-1} - 1)\,\operatorname{sigmoid}(-y/\tau) \in (1, a^{-1}),

    which tends to the exact inverse leaky ReLU (:math:`y` for :math:`y \ge 0`, :math:`y/a`
    below) as the smoothness :math:`\tau \to 0`. The generative direction
    :math:`\rho^{-1}` is computed by Newton's method (:math:`\rho` is increasing and concave,
    so the iterates converge monotonically after the first step).

    Why smooth: with the exact leaky ReLU the log-determinant is piecewise constant in the
    parameters, so its gradient is zero almost everywhere and misses the change of density
    as points cross a kink; maximum likelihood then walks away from the truth even when
    started there. With a small learned :math:`\tau` (started at ``smoothness``) the kinks'
    effect on the likelihood has a gradient (``benchmarks/ivae.py``, README B1).

    Args:
        dim: the width.
        negative_slope: :math:`a \in (0, 1]` (:math:`a = 1` is the identity).
        smoothness: initial :math:`\tau > 0` (learned; in the units of :math:`y`, the
            layer's output, which the inverse :math:`\rho` reads).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int, negative_slope: float = 0.2, smoothness: float = 0.01):
        super().__init__(cache_size=0)
        if not 0.0 < negative_slope <= 1.0:
            raise ValueError(f"SmoothLeakyReLU: negative_slope must lie in (0, 1], "
                             f"got {negative_slope}")
        if not smoothness > 0:
            raise ValueError(f"SmoothLeakyReLU: smoothness must be positive, got {smoothness}")
        self.dim, self.negative_slope = dim, negative_slope
        self.log_smoothness = nn.Parameter(torch.tensor(math.log(smoothness)))

    @property
    def smoothness(self) -> torch.Tensor:
        return self.log_smoothness.exp()

    def _rho(self, y):
        tau = self.smoothness
        return y - (1.0 / self.negative_slope - 1.0) * tau * F.softplus(-y / tau)

    def _log_rho_prime(self, y):
        gain = 1.0 / self.negative_slope - 1.0
        return torch.log1p(gain * torch.sigmoid(-y / self.smoothness))

    def _call(self, h, iterations: int = 60):
        y = F.leaky_relu(h, self.negative_slope)  # exact as tau -> 0
        for _ in range(iterations):
            y = y - (self._rho(y) - h) / self._log_rho_prime(y).exp()
        return y

    def _inverse(self, y):
        return self._rho(y)

    def log_abs_det_jacobian(self, h, y):
        return -self._log_rho_prime(y).sum(-1)


def leaky_relu_flow(dim: int, num_layers: int = 3, negative_slope: float = 0.2,
                    smoothness: float = 0.01) -> nn.ModuleList:
    r"""The generative layers of an invertible leaky-ReLU network of width ``dim``:

    .. math::
        x = W_L\,\sigma(W_{L-1} \cdots \sigma(W_1 z + b_1) \cdots + b_{L-1}) + b_L

    (:class:`InvertibleLinear` and :class:`SmoothLeakyReLU` alternating, ``num_layers``
    linear layers). ``num_layers=1`` is an invertible affine map. The same function class as
    :class:`pyrocrl.simulate.LeakyReLUMLPMixing` with ``obs_dim == latent_dim`` (plus biases and a
    small smoothing)."""
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"leaky_relu_flow: num_layers must be a positive int, got "
                         f"{num_layers!r}")
    layers: list[nn.Module] = []
    for i in range(num_layers):
        layers.append(InvertibleLinear(dim))
        if i < num_layers - 1:
            layers.append(SmoothLeakyReLU(dim, negative_slope, smoothness))
    return nn.ModuleList(layers)
