"""Ground-truth mixing functions ``x = g(z)`` (one implementation, used everywhere).

A mixing is a frozen :class:`torch.nn.Module`, so it can be differentiated with autograd
(e.g. to compare the Jacobian of a learned encoder against the true one). New kinds go in the
:data:`MIXINGS` registry, which tests parametrize over.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A ``rows x cols`` matrix with orthonormal columns (``rows >= cols``)."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))  # make the draw unique (Haar-distributed)


def _condition_screened(
    rng: np.random.Generator, rows: int, cols: int, quantile: float = 0.25
) -> np.ndarray:
    """A Gaussian ``rows x cols`` matrix whose condition number lies below the ``quantile``
    of such matrices' condition numbers (the iVAE/TCL recipe for well-posed mixing)."""
    probe = rng.standard_normal((1000, rows, cols))
    threshold = np.quantile(np.linalg.cond(probe), quantile)
    while True:
        w = rng.standard_normal((rows, cols))
        if np.linalg.cond(w) <= threshold:
            return w / np.sqrt(cols)


class LeakyReLUMLPMixing(nn.Module):
    r"""Injective leaky-ReLU MLP mixing.

    .. math::
        h_0 = z,\qquad h_l = \sigma(W_l h_{l-1})\ (l < L),\qquad x = W_L h_{L-1}

    with :math:`\sigma` the leaky ReLU of slope ``negative_slope``, :math:`W_1` of shape
    ``(obs_dim, latent_dim)`` and the other :math:`W_l` ``(obs_dim, obs_dim)``. Every
    :math:`W_l` has full column rank and the leaky ReLU is a bijection, so :math:`g` is
    injective; :meth:`inverse` undoes it on its image. ``num_layers=1`` is a linear mixing.

    Args:
        latent_dim: n, the number of sources.
        obs_dim: D >= n.
        num_layers: L >= 1.
        negative_slope: slope of the leaky ReLU for negative inputs, in (0, 1].
        weights: ``"orthogonal"`` (orthonormal columns) or ``"condition"`` (Gaussian,
            condition number below the 25% quantile, as in the iVAE and TCL experiments).
            The weights are drawn so; :meth:`rescale_output` (which the simulators'
            ``standardize=True`` applies) then scales the rows of the last one, so a
            standardized "orthogonal" mixing's last layer is orthogonal only up to a
            per-feature scale.
        seed: fixes the weights.
    """

    def __init__(
        self,
        latent_dim: int,
        obs_dim: int,
        num_layers: int = 3,
        negative_slope: float = 0.2,
        weights: str = "condition",
        seed: int = 0,
    ):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"mixing: latent_dim must be >= 1, got {latent_dim}")
        if obs_dim < latent_dim:
            raise ValueError(
                f"mixing: obs_dim must be >= latent_dim={latent_dim} for an injective "
                f"mixing, got {obs_dim}"
            )
        if num_layers < 1:
            raise ValueError(f"mixing: num_layers must be >= 1, got {num_layers}")
        if not 0.0 < negative_slope <= 1.0:
            raise ValueError(f"mixing: negative_slope must lie in (0, 1], got {negative_slope}")
        draw = {"orthogonal": _orthogonal, "condition": _condition_screened}.get(weights)
        if draw is None:
            raise ValueError(f"mixing: weights must be 'orthogonal' or 'condition', "
                             f"got {weights!r}")
        rng = np.random.default_rng(seed)
        self.latent_dim, self.obs_dim = latent_dim, obs_dim
        self.num_layers, self.negative_slope = num_layers, negative_slope
        shapes = [(obs_dim, latent_dim)] + [(obs_dim, obs_dim)] * (num_layers - 1)
        for i, (rows, cols) in enumerate(shapes):
            w = torch.as_tensor(draw(rng, rows, cols), dtype=torch.float32)
            self.register_buffer(f"weight{i}", w)

    @property
    def weights(self) -> list[torch.Tensor]:
        return [getattr(self, f"weight{i}") for i in range(self.num_layers)]

    @torch.no_grad()
    def rescale_output(self, scale: torch.Tensor) -> None:
        """Divide output feature ``j`` by ``scale[j]`` (folded into the last layer, so the
        mixing stays injective and exact)."""
        last = self.weights[-1]
        last.div_(scale.to(last.dtype)[:, None])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z: (..., n)`` -> ``x: (..., D)``."""
        h = z
        for i, w in enumerate(self.weights):
            h = h @ w.to(h.dtype).T
            if i < self.num_layers - 1:
                h = nn.functional.leaky_relu(h, self.negative_slope)
        return h

    def log_volume(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\tfrac12 \log\det(J_g(z)^\top J_g(z))` per point for ``z: (N, n)``,
        ``(N,)``, with the Jacobian :math:`J_g` from ``torch.func``: the change of
        volume from the sources to the (n-dimensional) image of :math:`g`, so the exact
        density of a noise-free ``x = g(z)`` on that image is
        :math:`\log p(x) = \log p(z) - \tfrac12 \log\det(J^\top J)` (for ``obs_dim == n``,
        :math:`\log|\det J_g|`)."""
        jac = torch.func.vmap(torch.func.jacrev(self))(z)  # (N, D, n)
        return 0.5 * torch.linalg.slogdet(jac.mT @ jac)[1]

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (..., D)`` on the image of the mixing -> ``z: (..., n)``."""
        h = x
        for i in reversed(range(self.num_layers)):
            if i < self.num_layers - 1:
                h = torch.where(h >= 0, h, h / self.negative_slope)
            h = h @ torch.linalg.pinv(self.weights[i].to(h.dtype)).T
        return h


def _linear(latent_dim: int, obs_dim: int, seed: int = 0, weights: str = "condition", **_):
    return LeakyReLUMLPMixing(latent_dim, obs_dim, num_layers=1, weights=weights, seed=seed)


#: name -> constructor ``(latent_dim, obs_dim, seed=..., **options) -> nn.Module``
MIXINGS = {"leaky_mlp": LeakyReLUMLPMixing, "linear": _linear}


def make_mixing(name: str, latent_dim: int, obs_dim: int, seed: int = 0, **options) -> nn.Module:
    """Build a registered mixing by name (see :data:`MIXINGS`)."""
    if name not in MIXINGS:
        raise ValueError(f"mixing must be one of {sorted(MIXINGS)}, got {name!r}")
    return MIXINGS[name](latent_dim, obs_dim, seed=seed, **options)


def mix(z: torch.Tensor, name: str, obs_dim: int, seed: int, standardize: bool = True,
        observation_noise: float = 0.0, **options) -> tuple[torch.Tensor, nn.Module]:
    """Push latents ``z`` ``(N, n)`` through a freshly built mixing ``name`` (seeded by
    ``seed``), optionally rescaling its output so every noise-free feature has unit standard
    deviation in this sample, then add Gaussian noise of std ``observation_noise``.
    Returns ``(x, g)``; the RNG in use draws the noise."""
    if observation_noise < 0:
        raise ValueError(f"observation_noise must be >= 0, got {observation_noise}")
    g = make_mixing(name, z.shape[-1], obs_dim, seed=seed, **options)
    with torch.no_grad():
        x = g(z)
        if standardize:
            g.rescale_output(x.std(0))
            x = g(z)
        if observation_noise > 0:
            x = x + observation_noise * torch.randn_like(x)
    return x, g
