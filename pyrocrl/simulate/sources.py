"""Nonstationary sources: the i.i.d. setting of nonlinear ICA with an auxiliary variable
(TCL, iVAE; seed 001 "sufficient variability")."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from pyrocrl.simulate._random import seeded
from pyrocrl.simulate.dataset import Dataset
from pyrocrl.simulate.mixing import mix

NOISES = ("gaussian", "laplace")


class NonstationarySources:
    r"""Ground-truth process with domain-modulated, conditionally independent sources.

    .. math::
        z_i \mid u \sim p_\text{noise}\big(\mu_{u,i},\ \sigma_{u,i}\big)\ \text{independently},
        \qquad x = g(z)\ (+\ \text{observation noise})

    where ``p_noise`` is a Gaussian or a Laplace with standard deviation :math:`\sigma_{u,i}`.

    Args:
        loc: ``(num_domains, n)`` means :math:`\mu_{u,i}`.
        scale: ``(num_domains, n)`` standard deviations :math:`\sigma_{u,i}`.
        noise: ``"gaussian"`` or ``"laplace"``.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, noise: str = "gaussian"):
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        self.loc, self.scale, self.noise = loc, scale, noise

    @property
    def num_domains(self) -> int:
        return self.loc.shape[0]

    def distribution(self, u: torch.Tensor) -> dist.TorchDistribution:
        """``p(z | u)`` for ``u: (N,)``: batch shape ``(N,)``, event shape ``(n,)``."""
        loc, scale = self.loc[u], self.scale[u]
        if self.noise == "laplace":
            return dist.Laplace(loc, scale / math.sqrt(2.0)).to_event(1)
        return dist.Normal(loc, scale).to_event(1)

    def model(self, u: torch.Tensor) -> torch.Tensor:
        """The Pyro program: site ``"z"`` in plate ``"data"``."""
        with pyro.plate("data", u.shape[0]):
            return pyro.sample("z", self.distribution(u))

    def log_prob(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """True ``log p(z | u)`` per sample, ``(N,)``."""
        return self.distribution(u).log_prob(z)

    def conditional_log_prob(self, z: torch.Tensor, u: torch.Tensor,
                             context: torch.Tensor | None = None) -> torch.Tensor:
        """The density protocol of :func:`pyrocrl.diagnostics.sufficient_variability`:
        ``log p(z | u)`` for ``z: (P, n)``, ``u: (P,)``, returned as ``(P,)``. The sources
        are i.i.d., so ``context`` is ignored. Differentiable in ``z``."""
        return self.log_prob(z, u)


def nonstationary_sources(
    num_latents: int = 5,
    num_domains: int = 40,
    samples_per_domain: int = 1000,
    obs_dim: int | None = None,
    mixing_layers: int = 3,
    seed: int = 0,
    noise: str = "gaussian",
    variance_range: tuple[float, float] = (0.5, 3.0),
    mean_range: tuple[float, float] | None = None,
    mixing: str = "leaky_mlp",
    mixing_weights: str = "condition",
    negative_slope: float = 0.2,
    observation_noise: float = 0.0,
    standardize: bool = True,
) -> Dataset:
    r"""Sources whose variances (and optionally means) change across domains, mixed by an
    injective leaky-ReLU MLP: the iVAE/TCL setting of seed 001.

    For each domain :math:`u` and source :math:`i`, the variance :math:`\sigma^2_{u,i}` is
    drawn uniformly from ``variance_range`` and, if ``mean_range`` is given, the mean
    :math:`\mu_{u,i}` uniformly from it (otherwise 0). Then

    .. math::
        z \mid u \sim \prod_i p(z_i \mid u),\qquad x = g(z) + \nu,\quad
        \nu \sim \mathcal N(0, \texttt{observation\_noise}^2 I).

    Args:
        num_latents: n.
        num_domains: number of domains (segments). Identifiability by sufficient
            variability needs at least 2n + 1 diverse domains.
        samples_per_domain: samples drawn in each domain.
        obs_dim: D >= n (defaults to n).
        mixing_layers: layers of the mixing MLP (1 = linear).
        seed: fixes everything: domain parameters, mixing weights, samples.
        noise: ``"gaussian"`` or ``"laplace"`` sources.
        variance_range: range of the per-domain source variances.
        mean_range: range of the per-domain source means, or ``None`` for zero means.
        mixing: a name in :data:`pyrocrl.simulate.MIXINGS`.
        mixing_weights: ``"condition"`` or ``"orthogonal"``.
        negative_slope: slope of the mixing's leaky ReLUs for negative inputs.
        observation_noise: standard deviation of additive Gaussian noise on ``x`` (in the
            units of the standardized ``x``).
        standardize: rescale the mixing's last layer so that every feature of the
            noise-free ``x`` has unit standard deviation in this sample.

    Returns:
        :class:`Dataset` with ``x: (N, D)``, ``z: (N, n)``, ``u: (N,)`` sorted by domain,
        ``info["process"]`` (a :class:`NonstationarySources` with the true density) and
        ``info["mixing"]`` (the true :math:`g`).
    """
    obs_dim = num_latents if obs_dim is None else obs_dim
    for name, value in [("num_latents", num_latents), ("num_domains", num_domains),
                        ("samples_per_domain", samples_per_domain)]:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"nonstationary_sources: {name} must be a positive int, got {value!r}")
    low, high = variance_range
    if not 0 < low <= high:
        raise ValueError(f"nonstationary_sources: variance_range must satisfy 0 < low <= high, "
                         f"got {variance_range}")
    if observation_noise < 0:
        raise ValueError(f"nonstationary_sources: observation_noise must be >= 0, "
                         f"got {observation_noise}")
    with seeded(seed) as rng:
        variance = rng.uniform(low, high, size=(num_domains, num_latents))
        loc = (rng.uniform(*mean_range, size=(num_domains, num_latents))
               if mean_range is not None else 0.0 * variance)
        process = NonstationarySources(
            torch.as_tensor(loc, dtype=torch.float32),
            torch.as_tensor(variance, dtype=torch.float32).sqrt(),
            noise=noise,
        )
        u = torch.arange(num_domains).repeat_interleave(samples_per_domain)
        z = process.model(u)
        x, g = mix(z, mixing, obs_dim, seed, standardize, observation_noise,
                   num_layers=mixing_layers, weights=mixing_weights,
                   negative_slope=negative_slope)
    info = dict(
        seed=seed, process=process, mixing=g, noise=noise, num_domains=num_domains,
        samples_per_domain=samples_per_domain, variance_range=variance_range,
        mean_range=mean_range, mixing_layers=mixing_layers, mixing_weights=mixing_weights,
        negative_slope=negative_slope,
        observation_noise=observation_noise, standardize=standardize,
    )
    return Dataset(x=x, z=z, u=u, info=info)


def exact_log_prob(dataset: Dataset) -> torch.Tensor:
    r"""The true ``log p(x | u)`` of each point of a noise-free :func:`nonstationary_sources`
    data set (or a split of one), ``(N,)``:

    .. math::
        \log p(x \mid u) = \log p(z \mid u) - \tfrac12 \log\det\big(J_g(z)^\top J_g(z)\big),
        \qquad x = g(z),

    the density on the image of :math:`g` (for ``obs_dim == n``, the ordinary density of
    ``x``). Its negative mean is the lowest loss per point any model of ``x`` can reach on
    average: ``benchmarks/ivae_optimum.py`` compares it with the negative ELBO a fit ends at.
    Uses the ground truth (``z`` and the stored mixing), so it is a diagnostic, never a
    training signal.
    """
    info = dataset.info
    if "process" not in info or not hasattr(info.get("mixing"), "log_volume"):
        raise ValueError("exact_log_prob: dataset must come from nonstationary_sources with a "
                         "registered mixing (info['process'] and info['mixing'])")
    if info.get("observation_noise", 0.0) > 0:
        raise ValueError(f"exact_log_prob: needs noise-free x, the data set has "
                         f"observation_noise={info['observation_noise']}")
    z = dataset.z.double()
    with torch.no_grad():
        log_volume = info["mixing"].log_volume(z)
    return info["process"].log_prob(dataset.z, dataset.u).double() - log_volume
