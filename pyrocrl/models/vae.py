"""I.i.d. latent-variable models: the isotropic VAE and the identifiable iVAE."""

from __future__ import annotations

import contextlib
import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch.nn import functional as F

from pyrocrl._checks import check_positive_int
from pyrocrl.models.base import LatentVariableModel, warn_if_too_few_domains
from pyrocrl.nn import mlp
from pyrocrl.nn.flows import leaky_relu_flow
from pyrocrl.nn.side_by_side import keep_copies


class _GaussianVAE(LatentVariableModel):
    """Shared encoder/decoder; subclasses choose the prior and what the encoder sees."""

    def __init__(self, obs_dim, latent_dim, aux_dim, hidden_dim, num_layers, init_obs_scale,
                 init_posterior_scale, covariance="diagonal"):
        super().__init__(obs_dim, latent_dim)
        for name, value in [("init_obs_scale", init_obs_scale),
                            ("init_posterior_scale", init_posterior_scale)]:
            if not value > 0:
                raise ValueError(f"{type(self).__name__}: {name} must be positive, got {value}")
        if covariance not in ("diagonal", "full"):
            raise ValueError(f"{type(self).__name__}: covariance must be 'diagonal' or 'full', "
                             f"got {covariance!r}")
        self.covariance = covariance
        # "full" adds the n(n-1)/2 strictly-lower entries of the posterior's Cholesky factor
        num_off = latent_dim * (latent_dim - 1) // 2 if covariance == "full" else 0
        self.encoder = mlp(obs_dim + aux_dim, 2 * latent_dim + num_off, hidden_dim, num_layers)
        # Start from sharp posteriors and little observation noise: with obs_dim close to
        # latent_dim, a model that starts noisy explains low-variance directions of x with
        # noise and never uses every latent (partial posterior collapse).
        with torch.no_grad():
            raw = math.log(math.expm1(init_posterior_scale))  # inverse softplus
            self.encoder[-1].bias[latent_dim:2 * latent_dim].fill_(raw)
            # a full-covariance posterior starts mean-field
            self.encoder[-1].weight[2 * latent_dim:].zero_()
            self.encoder[-1].bias[2 * latent_dim:].zero_()
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

    def _posterior_tril(self, x, u=None):
        """``(loc, scale, scale_tril)`` of ``q(z | x, u)``: ``(N, n)``, ``(N, n)`` (the
        Cholesky diagonal) and the ``(N, n, n)`` lower-triangular Cholesky factor, which is
        ``None`` unless ``covariance="full"``."""
        n = self.latent_dim
        out = self.encoder(self.encoder_input(x, u))
        loc, scale = out[..., :n], F.softplus(out[..., n:2 * n]) + 1e-4
        if self.covariance == "diagonal":
            return loc, scale, None
        rows, cols = torch.tril_indices(n, n, -1, device=x.device)
        lower = out.new_zeros(out.shape[:-1] + (n, n))
        lower[..., rows, cols] = out[..., 2 * n:]
        return loc, scale, lower + torch.diag_embed(scale)

    def posterior(self, x, u=None):
        """``q(z | x, u)``'s mean and marginal standard deviations, ``(loc, scale)``, each
        ``(N, n)``. With ``covariance="full"`` the correlations are in
        :meth:`posterior_distribution`."""
        loc, scale, scale_tril = self._posterior_tril(x, u)
        return loc, scale if scale_tril is None else scale_tril.pow(2).sum(-1).sqrt()

    def posterior_distribution(self, x, u=None) -> dist.TorchDistribution:
        """``q(z | x, u)`` with batch shape ``(N,)`` and event shape ``(n,)``: a diagonal
        Normal, or with ``covariance="full"`` a ``MultivariateNormal`` whose Cholesky factor
        the encoder outputs."""
        if self.covariance == "diagonal":
            return dist.Normal(*self.posterior(x, u)).to_event(1)
        loc, _, scale_tril = self._posterior_tril(x, u)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    def model(self, x, u=None, num_data=None):
        with self.data_plate(x.shape[0], num_data, x.device):
            z = pyro.sample("z", self.prior(u, x))
            pyro.sample("x", dist.Normal(self.decode(z), self.obs_scale).to_event(1), obs=x)

    def guide(self, x, u=None, num_data=None):
        q = self.posterior_distribution(x, u)
        with self.data_plate(x.shape[0], num_data, x.device):
            pyro.sample("z", q)


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
        covariance: ``"diagonal"`` (mean-field :math:`q`) or ``"full"`` (the encoder also
            outputs the strictly-lower Cholesky entries, started at zero). Mean-field
            :math:`q` biases the ELBO towards decoders with orthogonal Jacobian columns, which
            competes with the prior's identifying signal; ``"full"`` removes that bias at
            :math:`O(n^2)` extra outputs.

    References:
        1. Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
        2. Locatello et al., "Challenging Common Assumptions in the Unsupervised Learning of
           Disentangled Representations", ICML 2019.
    """

    def __init__(self, obs_dim: int, latent_dim: int, hidden_dim: int = 64,
                 num_layers: int = 3, init_obs_scale: float = 0.02,
                 init_posterior_scale: float = 0.05, covariance: str = "diagonal"):
        super().__init__(obs_dim, latent_dim, 0, hidden_dim, num_layers, init_obs_scale,
                         init_posterior_scale, covariance)

    def prior(self, u, x):
        zeros = x.new_zeros(x.shape[0], self.latent_dim)
        return dist.Normal(zeros, 1.0).to_event(1)


class ConditionalVAE(_GaussianVAE):
    """A :class:`_GaussianVAE` whose prior and encoder depend on a discrete auxiliary
    variable ``u`` (domain, environment) with ``num_domains`` values: shared input checks
    and the ``(x, one_hot(u))`` encoder input."""

    def __init__(self, obs_dim, latent_dim, num_domains, hidden_dim, num_layers,
                 init_obs_scale, init_posterior_scale, covariance="diagonal"):
        check_positive_int(type(self).__name__, "num_domains", num_domains)
        super().__init__(obs_dim, latent_dim, num_domains, hidden_dim, num_layers,
                         init_obs_scale, init_posterior_scale, covariance)
        self.num_domains = num_domains

    def check_data(self, x, u=None):
        super().check_data(x, u)
        self.check_domain_labels(x, u, self.num_domains)

    def encoder_input(self, x, u):
        return torch.cat([x, F.one_hot(u.long(), self.num_domains).to(x.dtype)], dim=-1)


class DomainGaussianPrior:
    r"""The identifiable prior of :class:`IVAE` and :class:`IFlow`, as a mixin for a
    :class:`LatentVariableModel`:
    :math:`p(z \mid u) = \prod_i \mathcal N(z_i; \lambda_{u,i}, \tau_{u,i}^2)` with learned
    per-domain means (unless ``learn_prior_mean=False``) and scales, the too-few-domains
    warnings, and the density protocol of :func:`pyrocrl.diagnostics.sufficient_variability`."""

    def init_domain_prior(self, num_domains: int, learn_prior_mean: bool,
                          batch_shape: tuple[int, ...] = ()) -> None:
        # 2: means and variances vary across domains; 1: variances only
        self.sufficient_statistics = 2 if learn_prior_mean else 1
        warn_if_too_few_domains(type(self).__name__, self.latent_dim, num_domains,
                                self.sufficient_statistics)
        prior_loc = torch.zeros(*batch_shape, num_domains, self.latent_dim)
        if learn_prior_mean:
            self.prior_loc = PyroParam(prior_loc)
        else:
            self.register_buffer("prior_loc", prior_loc)
        self.prior_scale = PyroParam(torch.ones(*batch_shape, num_domains, self.latent_dim),
                                     constraint=constraints.positive)

    def check_training_data(self, x, u=None):
        self.check_data(x, u)
        warn_if_too_few_domains(f"{type(self).__name__} (training data)", self.latent_dim,
                                int(u.unique().numel()), self.sufficient_statistics)

    def prior(self, u, x=None) -> dist.TorchDistribution:
        """``p(z | u)``: batch shape ``u.shape`` (``(K, *u.shape)`` for parameters with a
        leading dimension of K starts, :class:`IFlow`'s ``num_starts``), event shape
        ``(n,)``."""
        return dist.Normal(self.prior_loc[..., u, :], self.prior_scale[..., u, :]).to_event(1)

    def conditional_log_prob(self, z, u, context=None):
        """The learned prior's ``log p(z | u)`` for ``z: (P, latent_dim)``, ``u: (P,)``,
        returned as ``(P,)`` and differentiable in ``z``: the density protocol of
        :func:`pyrocrl.diagnostics.sufficient_variability`. ``context`` is ignored (the
        latents are i.i.d. given ``u``)."""
        return self.prior(u, z).log_prob(z)


class IVAE(DomainGaussianPrior, ConditionalVAE):
    r"""Identifiable VAE with a conditionally factorial prior :math:`p(z \mid u)`.

    .. math::
        z \mid u \sim \prod_{i=1}^n \mathcal N(\lambda_{u,i}, \tau_{u,i}^2),\qquad
        x \mid z \sim \mathcal N(f_\theta(z), \operatorname{diag}(\sigma^2)),\qquad
        q_\phi(z \mid x, u) = \mathcal N(\mu_\phi(x, u), \operatorname{diag}(s_\phi(x, u)^2))

    (or :math:`\mathcal N(\mu_\phi, L_\phi L_\phi^\top)` with ``covariance="full"``),
    with learned per-domain prior means :math:`\lambda` and scales :math:`\tau`, an MLP
    decoder, an MLP encoder on ``(x, one_hot(u))`` and learned observation noise. If the
    prior's sufficient statistics vary enough across domains (at least 2n + 1 domains in
    general position; seed 001), the latents are identifiable up to permutation and
    component-wise transformation.

    Identifiable is not the same as found: from a random start SVI ends in local optima of
    the ELBO. Through deep mixings use ``covariance="full"`` and start at the linear ICA
    solution (:func:`pyrocrl.inference.initialize_linear`; ``benchmarks/ivae.py`` measures
    both recipes). For noise-free data with ``obs_dim == latent_dim``, :class:`IFlow` keeps
    this prior and fits the exact likelihood instead of the ELBO (better on B1, README).

    Shapes: ``x: (N, obs_dim)`` float, ``u: (N,)`` long with values in
    ``[0, num_domains)``. ``encode(x, u)`` returns ``(N, latent_dim)``.

    Args:
        obs_dim: D.
        latent_dim: n.
        num_domains: number of values of the auxiliary variable ``u``. Fewer than
            ``2 * latent_dim + 1`` (``latent_dim + 1`` with ``learn_prior_mean=False``: only
            the variances vary, and they pin the axes from rank ``n``) raises an
            :class:`IdentifiabilityWarning`.
        hidden_dim, num_layers: MLP sizes of the encoder and the decoder.
        init_obs_scale: initial observation noise standard deviation (learned). Start small:
            a noisy start lets the model explain low-variance directions of ``x`` as noise
            and leave a latent unused.
        init_posterior_scale: initial posterior standard deviation of the encoder.
        learn_prior_mean: learn :math:`\lambda` (else fixed at 0: variance modulation only).
        covariance: ``"diagonal"`` or ``"full"`` posterior, as in :class:`VAE`.

    References:
        1. Khemakhem, Kingma, Monti & Hyvärinen, "Variational Autoencoders and Nonlinear
           ICA: A Unifying Framework", AISTATS 2020.
        2. Hyvärinen & Morioka, "Unsupervised Feature Extraction by Time-Contrastive Learning
           and Nonlinear ICA", NeurIPS 2016.
    """

    def __init__(self, obs_dim: int, latent_dim: int, num_domains: int, hidden_dim: int = 64,
                 num_layers: int = 3, init_obs_scale: float = 0.02,
                 init_posterior_scale: float = 0.05, learn_prior_mean: bool = True,
                 covariance: str = "diagonal"):
        super().__init__(obs_dim, latent_dim, num_domains, hidden_dim, num_layers,
                         init_obs_scale, init_posterior_scale, covariance)
        self.init_domain_prior(num_domains, learn_prior_mean)


class IFlow(DomainGaussianPrior, LatentVariableModel):
    r"""Identifiable flow: :class:`IVAE`'s prior with an invertible decoder and the exact
    likelihood instead of an ELBO (iFlow, Li et al. 2020).

    .. math::
        z \mid u \sim \prod_{i=1}^n \mathcal N(\lambda_{u,i}, \tau_{u,i}^2),\qquad
        x = g_\theta(z),\qquad
        \log p_\theta(x \mid u) = \log p\big(g_\theta^{-1}(x) \mid u\big)
        + \log\big|\det J_{g_\theta^{-1}}(x)\big|

    with :math:`g_\theta` an invertible leaky-ReLU network of width ``n``
    (:func:`pyrocrl.nn.flows.leaky_relu_flow`: ``num_layers`` invertible affine layers with
    smoothed leaky ReLUs between them). For noise-free data from an injective mixing with
    ``obs_dim == latent_dim`` this model has no encoder, no decoder noise and no variational
    gap: the posterior is the point mass at :math:`g_\theta^{-1}(x)`, the guide is empty and
    SVI maximizes the exact log-likelihood (the loss is :math:`-\log p(x \mid u)` per point).
    The prior's identifiability conditions are :class:`IVAE`'s (2n + 1 domains, or n + 1 with
    ``learn_prior_mean=False``).

    Exact is not the same as found: the likelihood of a leaky-ReLU flow has local optima, so
    fit several starts and keep the one with the best held-out likelihood. ``num_starts=K``
    trains K independent random starts side by side in one model (every parameter gets a
    leading dimension of size K; the loss is the sum of the K negative log-likelihoods, so
    Adam moves each start exactly as if it were trained alone on the same minibatches) at a
    fraction of the cost of K separate fits, since a CPU step on B1-sized tensors is mostly
    overhead (measured, one thread, batch 1024, n = 5: 3.3 ms per step for one start, 11.5 ms
    for 16, 37 ms for 64; 21.6 ms for 64 on two threads); :meth:`select_start` then keeps the
    start with the highest likelihood on held-out data. A start whose loss or gradient turns
    non-finite is dropped (:meth:`drop_diverged`, with a ``RuntimeWarning`` from
    :func:`~pyrocrl.inference.fit_svi`) while the others train on bit for bit as they would
    have (tested); :meth:`select_start` never keeps it, and only when every start diverges
    does training stop with :class:`~pyrocrl.inference.NonFiniteLossError`.
    ``fit_and_score("iflow", ..., model_options={"num_starts": K})`` does both
    (:func:`pyrocrl.inference.fit_restarts` restarts any model one after another).
    On B1 (5 sources, 40 domains, 3-layer mixing) 64 starts of 20 000 steps side by side
    reach a held-out MCC of 1.000 on each of data seeds 0-4 (1.000 / 0.974 on seeds 5 / 6)
    in 427-489 s per fit on 2 CPU cores, the kept start within 0.03 nats of the truth's
    likelihood on seeds 0-5 (0.49 above it on seed 6, where no start escaped), where IVAE reaches
    0.740 and 5 starts one after another 0.938 (``benchmarks/ivae.py --variants
    iflow_starts``).

    Shapes: ``x: (N, obs_dim)`` float, ``u: (N,)`` long in ``[0, num_domains)``;
    ``encode(x, u)`` returns :math:`g_\theta^{-1}(x)`, ``(N, latent_dim)`` (``u`` is checked,
    not used).

    Args:
        obs_dim: D; must equal ``latent_dim`` (a square bijection).
        latent_dim: n.
        num_domains: number of values of ``u``.
        num_layers: affine layers of :math:`g_\theta` (1 = linear ICA with this prior).
        negative_slope: slope of the leaky ReLUs for negative inputs.
        smoothness: initial smoothing :math:`\tau` of the leaky ReLUs (learned; see
            :class:`pyrocrl.nn.flows.SmoothLeakyReLU` for why it is not 0).
        learn_prior_mean: learn :math:`\lambda` (else 0: variance modulation only).
        num_starts: K random starts trained side by side (above); until
            :meth:`select_start` picks one, :meth:`log_likelihood` returns ``(K, N)`` and
            the posterior methods refuse.

    References:
        1. Li, Hooi, Lee, "Identifying through Flows for Recovering Latent Representations",
           ICLR 2020.
        2. Khemakhem, Kingma, Monti & Hyvärinen, "Variational Autoencoders and Nonlinear
           ICA: A Unifying Framework", AISTATS 2020.
    """

    def __init__(self, obs_dim: int, latent_dim: int, num_domains: int, num_layers: int = 3,
                 negative_slope: float = 0.2, smoothness: float = 0.01,
                 learn_prior_mean: bool = True, num_starts: int = 1):
        super().__init__(obs_dim, latent_dim)
        if obs_dim != latent_dim:
            raise ValueError(f"IFlow: obs_dim must equal latent_dim (an invertible map), got "
                             f"obs_dim={obs_dim}, latent_dim={latent_dim}; for obs_dim > "
                             f"latent_dim use IVAE")
        check_positive_int("IFlow", "num_domains", num_domains)
        check_positive_int("IFlow", "num_starts", num_starts)
        self.num_domains, self.num_starts = num_domains, num_starts
        copies = None if num_starts == 1 else num_starts
        self.layers = leaky_relu_flow(latent_dim, num_layers, negative_slope, smoothness, copies)
        self.init_domain_prior(num_domains, learn_prior_mean,
                               () if copies is None else (copies,))
        # starts still training; drop_diverged clears a start whose loss or gradient diverged
        self.register_buffer("alive", torch.ones(num_starts, dtype=torch.bool))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # state dicts saved before `alive` existed (2026-12-07) had every start alive
        if prefix + "alive" not in state_dict:
            state_dict[prefix + "alive"] = torch.ones_like(self.alive)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def check_data(self, x, u=None):
        super().check_data(x, u)
        self.check_domain_labels(x, u, self.num_domains)

    def distribution(self, u) -> dist.TorchDistribution:
        """:math:`p_\\theta(x \\mid u)`: batch shape ``u.shape`` (``(K, *u.shape)`` with
        ``num_starts=K > 1``), event shape ``(D,)``."""
        return dist.TransformedDistribution(self.prior(u), list(self.layers))

    def model(self, x, u=None, num_data=None):
        # independent starts are a plate of their own (dim -2): the loss is their sum
        with contextlib.ExitStack() as plates:
            if self.num_starts > 1:
                plates.enter_context(pyro.plate("starts", self.num_starts, dim=-2,
                                                device=x.device))
                # a dropped start adds nothing (a select, so its NaN cannot leak into the sum)
                plates.enter_context(poutine.mask(mask=self.alive[:, None]))
            plates.enter_context(self.data_plate(x.shape[0], num_data, x.device))
            pyro.sample("x", self.distribution(u), obs=x)

    @torch.no_grad()
    def drop_diverged(self, x, u=None, num_data=None) -> list[int] | None:
        """:func:`~pyrocrl.inference.fit_svi` calls this on a non-finite loss or gradient
        of the batch ``(x, u)``: the starts whose log-likelihood of the batch or whose
        gradient (every parameter has a leading dimension of K starts) is not finite stop
        training. Their loss is masked out of the sum from now on, their gradients are
        zeroed, and their parameters are overwritten with a living start's, so that nothing
        non-finite is computed for them again (no NaN in a backward pass, none in Pyro's
        argument checks); the others go on exactly as they would have. Returns the starts
        dropped now (``[]``: only gradients of earlier ones were zeroed), or ``None``,
        changing nothing, when no start would be left."""
        if self.num_starts == 1:
            return None
        with pyro.validation_enabled(False):  # NaN parameters are what is looked for
            bad = ~torch.isfinite(self.distribution(u).log_prob(x)).all(-1)  # (K,)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        for g in grads:
            bad |= ~torch.isfinite(g.reshape(self.num_starts, -1)).all(1)
        alive = self.alive & ~bad
        if not alive.any():
            return None
        dropped = (self.alive & bad).nonzero().flatten().tolist()
        self.alive.copy_(alive)
        donor = int(alive.nonzero()[0])
        for p in self.parameters():
            p.copy_(keep_copies(p, alive, p[donor]))
            if p.grad is not None:
                p.grad.copy_(keep_copies(p.grad, alive, 0.0))
        return dropped

    @property
    def dropped_starts(self) -> list[int]:
        """The starts that diverged during training and were dropped
        (:meth:`drop_diverged`); :meth:`select_start` never keeps one."""
        return (~self.alive).nonzero().flatten().tolist()

    def guide(self, x, u=None, num_data=None):
        """Empty: the latents are a deterministic function of ``x``."""

    @torch.no_grad()
    def select_start(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Keep the start with the highest mean log-likelihood of held-out ``(x, u)`` and drop
        the others (``num_starts`` becomes 1). Returns every start's mean held-out
        log-likelihood, ``(K,)`` (NaN for a start dropped in training); the kept index is its
        nan-argmax (a dropped start, or one whose likelihood is not finite, is never
        kept)."""
        self.check_data(x, u)
        device = self.device
        scores = self.distribution(u.to(device)).log_prob(x.to(device)).mean(-1)
        scores = scores.reshape(self.num_starts).cpu()
        scores[~self.alive.cpu()] = torch.nan
        finite = torch.isfinite(scores)
        if not finite.any():
            raise ValueError("IFlow.select_start: no start has a finite held-out likelihood"
                             + (f" (dropped in training: {self.dropped_starts})"
                                if self.dropped_starts else ""))
        if self.num_starts > 1:
            keep = int(torch.where(finite, scores, -torch.inf).argmax())
            for tensor in [*self.parameters(), *self.buffers()]:
                tensor.data = tensor.data[keep].clone()
            self.alive = torch.ones(1, dtype=torch.bool, device=self.alive.device)
            self.num_starts = 1
        return scores

    def _single_start(self, what: str) -> None:
        if self.num_starts > 1:
            raise RuntimeError(f"IFlow.{what}: this model holds {self.num_starts} starts; "
                               f"keep one with select_start(x_heldout, u_heldout) first")

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`g_\\theta^{-1}(x)`, ``(N, latent_dim)`` (``(K, N, latent_dim)`` while
        ``num_starts=K > 1``), differentiable."""
        z = x
        for layer in reversed(self.layers):
            z = layer.inv(z)
        return z

    def posterior(self, x, u=None):
        """The point mass at :math:`g_\\theta^{-1}(x)`: ``(loc, zeros)``."""
        self._single_start("posterior")
        z = self.inverse(x)
        return z, torch.zeros_like(z)

    def sample_posterior(self, x, u=None, num_samples: int = 1) -> torch.Tensor:
        """``num_samples`` copies of :math:`g_\\theta^{-1}(x)`, ``(num_samples, N, n)``: the
        exact (point-mass) posterior, which :func:`~pyrocrl.inference.to_inference_data`
        uses as the posterior group."""
        self.check_data(x, u)
        self._single_start("sample_posterior")
        check_positive_int("IFlow.sample_posterior", "num_samples", num_samples)
        return self.inverse(x).expand(num_samples, *x.shape[:1], self.latent_dim)

    def log_likelihood(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """Exact :math:`\\log p_\\theta(x \\mid u)` of each point, ``(N,)`` (``(K, N)`` while
        ``num_starts=K > 1``; differentiable)."""
        self.check_data(x, u)
        return self.distribution(u).log_prob(x)
