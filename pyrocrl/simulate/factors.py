"""Factor models with anchor features: the sparse-decoder setting of seed 002 (section 3.1).

An *anchor* feature depends on exactly one factor. Anchors remove the rotational
indeterminacy of factor analysis: a rotation of the factors would make every anchor depend on
several factors.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyrocrl.simulate._random import seeded
from pyrocrl.simulate.dataset import Dataset

DECODERS = ("linear", "masked_mlp")

_HIDDEN_DIM = 8  # hidden units of each feature's MLP in the "masked_mlp" decoder
_MIN_FEATURES_PER_FACTOR = 3  # fewer leave a factor unidentified (see factor_model)


class LinearDecoder:
    r"""``g(z) = W z`` with the ``(D, K)`` loading matrix ``W``."""

    def __init__(self, loadings: torch.Tensor):
        self.loadings = loadings

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.loadings.T

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, D, K)``: :math:`\\partial g / \\partial z` at each sample (constant here)."""
        return self.loadings.expand(z.shape[0], *self.loadings.shape)


class MaskedMLPDecoder:
    r"""One small tanh MLP per feature, seeing only the factors its mask allows.

    .. math::
        g_j(z) = \sum_{h=1}^H v_{jh} \tanh\big(a_{jh}^\top (m_j \odot z) + b_{jh}\big) + c_j

    with the binary mask row :math:`m_j` (``mask[j]``), so :math:`\partial g_j/\partial z_k
    = 0` exactly wherever ``mask[j, k]`` is false.

    Args:
        mask: ``(D, K)`` bool.
        hidden_weight: ``(D, H, K)`` :math:`a` (multiplied by the mask here).
        hidden_bias: ``(D, H)`` :math:`b`.
        output_weight: ``(D, H)`` :math:`v`.
        output_bias: ``(D,)`` :math:`c`.
    """

    def __init__(self, mask, hidden_weight, hidden_bias, output_weight, output_bias):
        self.mask = mask
        self.hidden_weight = hidden_weight * mask[:, None, :].to(hidden_weight.dtype)
        self.hidden_bias, self.output_weight, self.output_bias = (hidden_bias, output_weight,
                                                                  output_bias)

    def _pre(self, z):
        return torch.einsum("dhk,nk->ndh", self.hidden_weight, z) + self.hidden_bias

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ndh,dh->nd", torch.tanh(self._pre(z)), self.output_weight) \
            + self.output_bias

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, D, K)``: :math:`\\partial g / \\partial z` at each sample."""
        slope = 1.0 - torch.tanh(self._pre(z)) ** 2  # (N, D, H)
        return torch.einsum("ndh,dh,dhk->ndk", slope, self.output_weight, self.hidden_weight)

    def standardize(self, z: torch.Tensor) -> None:
        """Rescale so that every feature has mean 0 and standard deviation 1 on ``z``."""
        out = self(z)
        mean, std = out.mean(0), out.std(0).clamp_min(1e-8)
        self.output_weight = self.output_weight / std[:, None]
        self.output_bias = (self.output_bias - mean) / std


class FactorProcess:
    r"""Ground-truth factor model.

    .. math::
        z \sim \mathcal N(0, \Sigma),\qquad x = g(z) + \sigma \varepsilon,\quad
        \varepsilon \sim \mathcal N(0, I_D)

    with the factor covariance :math:`\Sigma` (unit variances), a decoder :math:`g`
    (:class:`LinearDecoder` or :class:`MaskedMLPDecoder`) and noise standard deviation
    :math:`\sigma`.
    """

    def __init__(self, factor_cov: torch.Tensor, decoder, noise: float):
        self.factor_cov, self.decoder, self.noise = factor_cov, decoder, noise

    @property
    def num_factors(self) -> int:
        return self.factor_cov.shape[0]

    def factor_distribution(self) -> dist.MultivariateNormal:
        """``p(z)``: event shape ``(K,)``."""
        return dist.MultivariateNormal(self.factor_cov.new_zeros(self.num_factors),
                                       covariance_matrix=self.factor_cov)

    def model(self, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The Pyro program: sites ``"z"`` and ``"x"`` in plate ``"data"``; returns
        ``(z, x)``, shapes ``(N, K)`` and ``(N, D)``."""
        with pyro.plate("data", num_samples):
            z = pyro.sample("z", self.factor_distribution())
            mean = self.decoder(z)
            if self.noise > 0:
                x = pyro.sample("x", dist.Normal(mean, self.noise).to_event(1))
            else:
                x = pyro.sample("x", dist.Delta(mean, event_dim=1))
        return z, x

    def marginal(self) -> dist.MultivariateNormal:
        r"""``p(x) = N(0, W \Sigma W^T + \sigma^2 I)`` (linear decoder only)."""
        if not isinstance(self.decoder, LinearDecoder):
            raise ValueError("FactorProcess.marginal: p(x) is Gaussian only for the linear "
                             "decoder")
        w = self.decoder.loadings
        cov = w @ self.factor_cov @ w.T + self.noise**2 * torch.eye(w.shape[0])
        return dist.MultivariateNormal(w.new_zeros(w.shape[0]), covariance_matrix=cov)


def _float(array) -> torch.Tensor:
    return torch.as_tensor(array, dtype=torch.float32)


def _check_int(name, value, minimum):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"factor_model: {name} must be an int >= {minimum}, got {value!r}")


def factor_model(
    num_factors: int = 3,
    obs_dim: int = 12,
    anchors_per_factor: int = 2,
    factor_correlation: float = 0.0,
    noise: float = 0.1,
    seed: int = 0,
    decoder: str = "linear",
    loading_density: float = 0.5,
    num_samples: int = 2000,
) -> Dataset:
    r"""Factors observed through a sparse decoder with anchor features (seed 002, §3.1).

    .. math::
        z \sim \mathcal N(0, \Sigma),\quad \Sigma_{kk} = 1,\ \Sigma_{kl} = \rho\ (k \ne l),
        \qquad x_j = g_j(m_j \odot z) + \sigma\varepsilon_j

    The binary mask :math:`m` (``(D, K)``) says which factors feature :math:`j` depends on.
    ``anchors_per_factor`` features per factor, chosen at random, are anchors: their mask row
    is one-hot on their own factor. Every other feature depends on each factor with
    probability ``loading_density`` (and on at least one); then non-anchor features are
    added to any factor that has fewer than three, as far as there are any: with only two
    features, an uncorrelated factor's two loadings are identified only through their
    product (classical factor-analysis identification).

    * ``decoder="linear"``: :math:`g(z) = W z` with :math:`W = m \odot s \odot a`, random
      signs :math:`s` and magnitudes :math:`a \sim U(0.5, 1.5)`. Features are not rescaled.
    * ``decoder="masked_mlp"``: feature :math:`j` is a small tanh MLP of
      :math:`m_j \odot z` (:class:`MaskedMLPDecoder`), scaled to roughly zero mean and unit
      variance before the noise is added. Anchor features are strictly monotone in their
      factor, so they carry it up to an element-wise transform (the sparse-VAE setting).

    Args:
        num_factors: K.
        obs_dim: D >= K, and >= ``K * anchors_per_factor``.
        anchors_per_factor: anchors per factor (0: no anchors, the rotation-invariant case).
        factor_correlation: :math:`\rho`, the correlation of every pair of factors; needs
            :math:`-1/(K-1) < \rho < 1` so that :math:`\Sigma` is positive definite.
        noise: :math:`\sigma`, the observation noise standard deviation (0: none).
        seed: fixes everything: mask, loadings, MLP weights, samples.
        decoder: ``"linear"`` or ``"masked_mlp"``.
        loading_density: probability that a non-anchor feature depends on a given factor.
        num_samples: N.

    Returns:
        :class:`Dataset` with ``x: (N, D)``, ``z: (N, K)``, ``u=None`` and ``info`` holding
        ``"loadings"`` (``(D, K)`` NumPy; for ``"linear"`` the true :math:`W`, for
        ``"masked_mlp"`` the average Jacobian :math:`E[\partial g/\partial z]`; zero outside
        the mask, so anchor rows have exactly one nonzero, on their own factor),
        ``"anchors"`` (K lists of feature indices), ``"factor_cov"`` (``(K, K)`` NumPy),
        ``"mask"`` (``(D, K)`` bool NumPy), ``"num_samples"``, ``"process"``
        (:class:`FactorProcess`) and the arguments.
    """
    _check_int("num_factors", num_factors, 1)
    _check_int("obs_dim", obs_dim, 1)
    _check_int("anchors_per_factor", anchors_per_factor, 0)
    _check_int("num_samples", num_samples, 1)
    if obs_dim < num_factors or obs_dim < num_factors * anchors_per_factor:
        raise ValueError(f"factor_model: obs_dim={obs_dim} is too small for num_factors="
                         f"{num_factors} with anchors_per_factor={anchors_per_factor} "
                         f"(needs obs_dim >= {max(num_factors, num_factors * anchors_per_factor)})")
    low = -1.0 / (num_factors - 1) if num_factors > 1 else -1.0
    if not low < factor_correlation < 1.0:
        raise ValueError(f"factor_model: factor_correlation must lie in ({low:.3g}, 1) for "
                         f"{num_factors} factors (positive-definite covariance), "
                         f"got {factor_correlation!r}")
    if not noise >= 0:
        raise ValueError(f"factor_model: noise must be >= 0, got {noise!r}")
    if decoder not in DECODERS:
        raise ValueError(f"factor_model: decoder must be one of {DECODERS}, got {decoder!r}")
    if not 0.0 <= loading_density <= 1.0:
        raise ValueError(f"factor_model: loading_density must lie in [0, 1], "
                         f"got {loading_density!r}")

    with seeded(seed) as rng:
        # --- structure: anchors and mask ------------------------------------------------
        order = rng.permutation(obs_dim)
        anchor_array = order[:num_factors * anchors_per_factor].reshape(num_factors,
                                                                        anchors_per_factor)
        anchors = [sorted(int(j) for j in row) for row in anchor_array]
        mask = rng.random((obs_dim, num_factors)) < loading_density
        for j in range(obs_dim):
            if not mask[j].any():
                mask[j, rng.integers(num_factors)] = True
        is_anchor = np.zeros(obs_dim, dtype=bool)
        for k, features in enumerate(anchors):
            mask[features] = False
            mask[features, k] = True
            is_anchor[features] = True
        # Two indicators of an uncorrelated factor only fix the product of their loadings:
        # give every factor at least three features where the non-anchor features allow.
        for k in range(num_factors):
            candidates = rng.permutation(np.flatnonzero(~is_anchor & ~mask[:, k]))
            missing = max(0, _MIN_FEATURES_PER_FACTOR - int(mask[:, k].sum()))
            mask[candidates[:missing], k] = True
        factor_cov = np.full((num_factors, num_factors), float(factor_correlation))
        np.fill_diagonal(factor_cov, 1.0)
        cov = _float(factor_cov)
        mask_t = torch.as_tensor(mask)

        # --- decoder --------------------------------------------------------------------
        # a calibration sample (from the seeded NumPy stream) to standardize and average over
        calibration = _float(
            rng.multivariate_normal(np.zeros(num_factors), factor_cov, size=10_000))
        if decoder == "linear":
            signs = rng.choice([-1.0, 1.0], size=(obs_dim, num_factors))
            magnitudes = rng.uniform(0.5, 1.5, size=(obs_dim, num_factors))
            g = LinearDecoder(_float(mask * signs * magnitudes))
        else:
            shape = (obs_dim, _HIDDEN_DIM, num_factors)
            fan_in = mask.sum(1).clip(min=1)[:, None, None]
            hidden_weight = rng.standard_normal(shape) * 1.5 / np.sqrt(fan_in)
            output_weight = rng.standard_normal((obs_dim, _HIDDEN_DIM))
            # anchors: every hidden unit increases (or every one decreases) with the factor
            direction = rng.choice([-1.0, 1.0], size=obs_dim)
            hidden_weight[is_anchor] = np.abs(hidden_weight[is_anchor]) \
                * direction[is_anchor, None, None]
            output_weight[is_anchor] = np.abs(output_weight[is_anchor])
            g = MaskedMLPDecoder(mask_t, _float(hidden_weight),
                                 _float(rng.standard_normal((obs_dim, _HIDDEN_DIM))),
                                 _float(output_weight), torch.zeros(obs_dim))
            g.standardize(calibration)
        loadings = g.jacobian(calibration).mean(0) * mask_t

        # --- samples (torch's global RNG, seeded and restored by `seeded`) ----------------
        process = FactorProcess(cov, g, float(noise))
        z, x = process.model(num_samples)

    info = dict(
        loadings=loadings.numpy(), anchors=anchors, factor_cov=factor_cov, mask=mask,
        num_samples=num_samples, process=process, seed=seed, decoder=decoder,
        noise=float(noise), factor_correlation=float(factor_correlation),
        anchors_per_factor=anchors_per_factor, loading_density=loading_density,
    )
    return Dataset(x=x, z=z, u=None, info=info)
