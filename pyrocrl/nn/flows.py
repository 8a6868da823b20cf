r"""Invertible layers for exact-likelihood models (:class:`pyrocrl.models.IFlow`).

Each layer is a Pyro :class:`~pyro.distributions.TransformModule` written in the *generative*
direction (latent :math:`h` to observation :math:`y`), so that
``dist.TransformedDistribution(base, layers)`` is the model's density of ``x``. Each layer
stores the parameters of its *inverse* (observation to latent), which is what training
evaluates (``TransformedDistribution.log_prob`` runs the layers backwards): the inverse and its
log-determinant are closed-form, and only sampling new ``x`` needs a linear solve or a few
Newton steps.

Every layer takes ``copies=K`` to hold K independent sets of parameters with a leading
dimension of size K (a population of starts trained side by side, :class:`IFlow`'s
``num_starts``): an input ``(N, dim)`` or ``(K, N, dim)`` maps to ``(K, N, dim)``, and the
log-determinants have shape ``(K, N)``. The default ``copies=None`` keeps no such dimension.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn
from torch.nn import functional as F

from pyrocrl._checks import check_positive_int


class InvertibleLinear(TransformModule):
    r"""An invertible affine layer, parametrized by its inverse:
    :math:`y = A^{-1}(h - c)` generatively (input :math:`h`, output :math:`y`),
    :math:`y \mapsto A y + c` backwards, with
    :math:`\log|\det \partial y / \partial h| = -\log|\det A|`.

    Args:
        dim: the width (input and output). :math:`A` starts as a Haar-random orthogonal
            matrix drawn from torch's RNG (``torch.manual_seed`` fixes it), :math:`c` at 0.
        copies: K independent copies (a leading parameter dimension; module docstring), or
            None for one without that dimension.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int, copies: int | None = None):
        super().__init__(cache_size=0)
        batch = _batch_shape(copies, "InvertibleLinear")
        q, r = torch.linalg.qr(torch.randn(*batch, dim, dim))
        weight = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
        self.weight = nn.Parameter(weight)  # A: (*batch, dim, dim)
        self.bias = nn.Parameter(torch.zeros(*batch, dim))  # c

    def _per_point(self):
        # A and c broadcast over points: copies get a point dimension left of the feature one
        if self.weight.dim() == 2:
            return self.weight, self.bias
        return self.weight.unsqueeze(-3), self.bias.unsqueeze(-2)

    def _call(self, h):
        weight, bias = self._per_point()  # y with A y + c = h
        return torch.linalg.solve(weight, (h - bias).unsqueeze(-1)).squeeze(-1)

    def _inverse(self, y):
        return y @ self.weight.mT + self._per_point()[1]

    def log_abs_det_jacobian(self, h, y):
        log_det = -torch.linalg.slogdet(self._per_point()[0])[1]  # () or (K, 1)
        return log_det.expand(torch.broadcast_shapes(h.shape[:-1], log_det.shape))


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
    effect on the likelihood has a gradient (``benchmarks/ivae.py``; ``benchmarks/NOTES.md``, B1).

    Args:
        dim: the width.
        negative_slope: :math:`a \in (0, 1]` (:math:`a = 1` is the identity).
        smoothness: initial :math:`\tau > 0` (learned; in the units of :math:`y`, the
            layer's output, which the inverse :math:`\rho` reads).
        copies: K independent copies of :math:`\tau` (module docstring), or None.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int, negative_slope: float = 0.2, smoothness: float = 0.01,
                 copies: int | None = None):
        super().__init__(cache_size=0)
        if not 0.0 < negative_slope <= 1.0:
            raise ValueError(f"SmoothLeakyReLU: negative_slope must lie in (0, 1], "
                             f"got {negative_slope}")
        if not smoothness > 0:
            raise ValueError(f"SmoothLeakyReLU: smoothness must be positive, got {smoothness}")
        self.dim, self.negative_slope = dim, negative_slope
        self.log_smoothness = nn.Parameter(torch.full(_batch_shape(copies, "SmoothLeakyReLU"),
                                                      math.log(smoothness)))

    @property
    def smoothness(self) -> torch.Tensor:
        r""":math:`\tau`: a scalar, or ``(K, 1, 1)`` with copies (broadcasts over points)."""
        tau = self.log_smoothness.exp()
        return tau if tau.dim() == 0 else tau[:, None, None]

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


def _batch_shape(copies: int | None, owner: str) -> tuple[int, ...]:
    if copies is None:
        return ()
    return (int(check_positive_int(owner, "copies", copies)),)


def leaky_relu_flow(dim: int, num_layers: int = 3, negative_slope: float = 0.2,
                    smoothness: float = 0.01, copies: int | None = None) -> nn.ModuleList:
    r"""The generative layers of an invertible leaky-ReLU network of width ``dim``:

    .. math::
        x = W_L\,\sigma(W_{L-1} \cdots \sigma(W_1 z + b_1) \cdots + b_{L-1}) + b_L

    (:class:`InvertibleLinear` and :class:`SmoothLeakyReLU` alternating, ``num_layers``
    linear layers). ``num_layers=1`` is an invertible affine map. The same function class as
    :class:`pyrocrl.simulate.LeakyReLUMLPMixing` with ``obs_dim == latent_dim`` (plus biases and a
    small smoothing). ``copies=K``: K independent networks side by side (module docstring)."""
    check_positive_int("leaky_relu_flow", "num_layers", num_layers)
    layers: list[nn.Module] = []
    for i in range(num_layers):
        layers.append(InvertibleLinear(dim, copies))
        if i < num_layers - 1:
            layers.append(SmoothLeakyReLU(dim, negative_slope, smoothness, copies))
    return nn.ModuleList(layers)
