"""I.i.d. latent-variable models: the isotropic VAE and the identifiable iVAE."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch.nn import functional as F

from pyrocrl.models.base import LatentVariableModel, warn_if_too_few_domains
from pyrocrl.nn import mlp


class _GaussianVAE(LatentVariableModel):
    """Shared encoder/decoder; subclasses choose the prior and what the encoder sees."""

    def __init__(self, obs_dim, latent_dim, aux_dim, hidden_dim, num_layers, init_obs_scale,
                 init_posterior_scale):
        super().__init__(obs_dim, latent_dim)
        for name, value in [("init_obs_scale", init_obs_scale),
                            ("init_posterior_scale", init_posterior_scale)]:
            if not value > 0:
                raise ValueError(f"{type(self).__name__}: {name} must be positive, got {value}")
        self.encoder = mlp(obs_dim + aux_dim, 2 * latent_dim, hidden_dim, num_layers)
        # Start from sharp posteriors and little observation noise: with obs_dim close to
        # latent_dim, a model that starts noisy explains low-variance directions of x with
        # noise and never uses every latent (partial posterior collapse).
        with torch.no_grad():
            raw = math.log(math.expm1(init_posterior_scale))  # inverse softplus
            self.encoder[-1].bias[latent_dim:].fill_(raw)
        self.decoder = mlp(latent_dim, obs_dim, hidden_dim, num_layers)
        self.obs_scale = PyroParam(torch.full((obs_dim,), float(init_obs_scale)),
                                   constraint=constraints.positive)

    def encoder_input(self, x, u):
        return x

    def decode(self, z):
        """Mean of ``p(x | z)``."""
        return self.decoder(z)

    def prior(self, u, x) -> dist.TorchDistribution:  # pragma: no cover - abstract
        """``p(z | u)`` for the batch ``x``: batch shape ``(N,)``, event shape ``(n,)``."""
        raise NotImplementedError

    def posterior(self, x, u=None):
        """``q(z | x, u) = N(loc, diag(scale^2))``; returns ``(loc, scale)``, each ``(N, n)``."""
        out = self.encoder(self.encoder_input(x, u))
        loc, raw_scale = out.split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + 1e-4

    def model(self, x, u=None, num_data=None):
        with self.data_plate(x.shape[0], num_data, x.device):
            z = pyro.sample("z", self.prior(u, x))
            pyro.sample("x", dist.Normal(self.decode(z), self.obs_scale).to_event(1), obs=x)

    def guide(self, x, u=None, num_data=None):
        loc, scale = self.posterior(x, u)
        with self.data_plate(x.shape[0], num_data, x.device):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class VAE(_GaussianVAE):
    r"""Variational autoencoder with an isotropic Gaussian prior: the non-identifiable baseline.

    .. math::
        z \sim \mathcal N(0, I_n),\qquad x \mid z \sim \mathcal N(f_\theta(z),
        \operatorname{diag}(\sigma^2)),\qquad q_\phi(z \mid x) = \mathcal N(\mu_\phi(x),
        \operatorname{diag}(s_\phi(x)^2))

    with MLP decoder :math:`f_\theta`, MLP encoder and learned observation noise
    :math:`\sigma`. The prior is invariant to rotations :math:`z \mapsto Rz`, so the ELBO
    cannot prefer the true latent axes (seed 000): expect a low MCC on nonlinear ICA data.

    Shapes: ``x: (N, obs_dim)``; ``u`` is accepted and ignored, so the VAE can be fitted on
    the same data tuple as :class:`IVAE`.

    Args:
        obs_dim: D.
        latent_dim: n.
        hidden_dim, num_layers: MLP sizes of the encoder and the decoder.
        init_obs_scale: initial observation noise standard deviation (learned).
        init_posterior_scale: initial posterior standard deviation of the encoder.

    References:
        1. Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
        2. Locatello et al., "Challenging Common Assumptions in the Unsupervised Learning of
           Disentangled Representations", ICML 2019.
    """

    def __init__(self, obs_dim: int, latent_dim: int, hidden_dim: int = 64,
                 num_layers: int = 3, init_obs_scale: float = 0.02,
                 init_posterior_scale: float = 0.05):
        super().__init__(obs_dim, latent_dim, 0, hidden_dim, num_layers, init_obs_scale,
                         init_posterior_scale)

    def prior(self, u, x):
        zeros = x.new_zeros(x.shape[0], self.latent_dim)
        return dist.Normal(zeros, 1.0).to_event(1)


class ConditionalVAE(_GaussianVAE):
    """A :class:`_GaussianVAE` whose prior and encoder depend on a discrete auxiliary
    variable ``u`` (domain, environment) with ``num_domains`` values: shared input checks
    and the ``(x, one_hot(u))`` encoder input."""

    def __init__(self, obs_dim, latent_dim, num_domains, hidden_dim, num_layers,
                 init_obs_scale, init_posterior_scale):
        if not isinstance(num_domains, int) or isinstance(num_domains, bool) or num_domains < 1:
            raise ValueError(f"{type(self).__name__}: num_domains must be a positive int, "
                             f"got {num_domains!r}")
        super().__init__(obs_dim, latent_dim, num_domains, hidden_dim, num_layers,
                         init_obs_scale, init_posterior_scale)
        self.num_domains = num_domains

    def check_data(self, x, u=None):
        super().check_data(x, u)
        name = type(self).__name__
        if u is None:
            raise ValueError(f"{name}: u is required (the domain index of each sample, "
                             f"shape ({x.shape[0]},) with values in [0, {self.num_domains})), "
                             f"got None")
        if u.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"{name}: u must be an integer tensor of domain indices, "
                            f"got {u.dtype}")
        low, high = int(u.min()), int(u.max())
        if low < 0 or high >= self.num_domains:
            raise ValueError(f"{name}: u must take values in [0, num_domains="
                             f"{self.num_domains}), got values in [{low}, {high}]")

    def encoder_input(self, x, u):
        return torch.cat([x, F.one_hot(u.long(), self.num_domains).to(x.dtype)], dim=-1)


class IVAE(ConditionalVAE):
    r"""Identifiable VAE with a conditionally factorial prior :math:`p(z \mid u)`.

    .. math::
        z \mid u \sim \prod_{i=1}^n \mathcal N(\lambda_{u,i}, \tau_{u,i}^2),\qquad
        x \mid z \sim \mathcal N(f_\theta(z), \operatorname{diag}(\sigma^2)),\qquad
        q_\phi(z \mid x, u) = \mathcal N(\mu_\phi(x, u), \operatorname{diag}(s_\phi(x, u)^2))

    with learned per-domain prior means :math:`\lambda` and scales :math:`\tau`, an MLP
    decoder, an MLP encoder on ``(x, one_hot(u))`` and learned observation noise. If the
    prior's sufficient statistics vary enough across domains (at least 2n + 1 domains in
    general position; seed 001), the latents are identifiable up to permutation and
    component-wise transformation.

    Shapes: ``x: (N, obs_dim)`` float, ``u: (N,)`` long with values in
    ``[0, num_domains)``. ``encode(x, u)`` returns ``(N, latent_dim)``.

    Args:
        obs_dim: D.
        latent_dim: n.
        num_domains: number of values of the auxiliary variable ``u``. Fewer than
            ``2 * latent_dim + 1`` raises an :class:`IdentifiabilityWarning`.
        hidden_dim, num_layers: MLP sizes of the encoder and the decoder.
        init_obs_scale: initial observation noise standard deviation (learned). Start small:
            a noisy start lets the model explain low-variance directions of ``x`` as noise
            and leave a latent unused.
        init_posterior_scale: initial posterior standard deviation of the encoder.
        learn_prior_mean: learn :math:`\lambda` (else fixed at 0: variance modulation only).

    References:
        1. Khemakhem, Kingma, Monti & Hyvärinen, "Variational Autoencoders and Nonlinear
           ICA: A Unifying Framework", AISTATS 2020.
        2. Hyvärinen & Morioka, "Unsupervised Feature Extraction by Time-Contrastive Learning
           and Nonlinear ICA", NeurIPS 2016.
    """

    def __init__(self, obs_dim: int, latent_dim: int, num_domains: int, hidden_dim: int = 64,
                 num_layers: int = 3, init_obs_scale: float = 0.02,
                 init_posterior_scale: float = 0.05, learn_prior_mean: bool = True):
        super().__init__(obs_dim, latent_dim, num_domains, hidden_dim, num_layers,
                         init_obs_scale, init_posterior_scale)
        warn_if_too_few_domains("IVAE", latent_dim, num_domains)
        prior_loc = torch.zeros(num_domains, latent_dim)
        if learn_prior_mean:
            self.prior_loc = PyroParam(prior_loc)
        else:
            self.register_buffer("prior_loc", prior_loc)
        self.prior_scale = PyroParam(torch.ones(num_domains, latent_dim),
                                     constraint=constraints.positive)

    def check_training_data(self, x, u=None):
        self.check_data(x, u)
        warn_if_too_few_domains("IVAE (training data)", self.latent_dim, int(u.unique().numel()))

    def prior(self, u, x):
        return dist.Normal(self.prior_loc[u], self.prior_scale[u]).to_event(1)

    def conditional_log_prob(self, z, u, context=None):
        """The learned prior's ``log p(z | u)`` for ``z: (P, latent_dim)``, ``u: (P,)``,
        returned as ``(P,)`` and differentiable in ``z``: the density protocol of
        :func:`pyrocrl.diagnostics.sufficient_variability`. ``context`` is ignored (the
        latents are i.i.d. given ``u``)."""
        return self.prior(u, z).log_prob(z)
