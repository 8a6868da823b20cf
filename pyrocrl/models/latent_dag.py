"""Latent causal-DAG family (seed 002): latent factors observed through a decoder, made
identifiable by structure on the decoder (anchor features, sparsity) or by interventions.

* :class:`FactorAnalysis`: linear-Gaussian factor analysis whose anchor features remove the
  rotational indeterminacy (seed 002, section 3.1); fitted by SVI (MAP globals, exact
  Gaussian posterior of the factors) or by NUTS on the marginal likelihood
  (:func:`pyrocrl.inference.fit_mcmc`).
* :class:`LatentCausalVAE`: a VAE whose prior is a learnable linear SEM on a DAG with known
  single-node interventions (seed 002, section 3), fitted by the ELBO and a
  linear-causal-disentanglement stage (:meth:`LatentCausalVAE.disentangle`).
* :class:`SparseVAE`: a deep generative model made identifiable by a sparse decoder: each
  feature reads a sparse subset of the factors through nonnegative selection weights with a
  spike-and-slab lasso prior (Moran, Sridhar, Wang & Blei, TMLR 2022); with anchor features
  the factors are identifiable up to permutation and element-wise transformation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping

import networkx as nx
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch import nn
from torch.distributions import biject_to, transform_to
from torch.distributions.transforms import Transform
from torch.nn import functional as F

from pyrocrl.distributions import LinearSEM, SpikeAndSlabLasso
from pyrocrl.models.base import IdentifiabilityWarning, LatentVariableModel
from pyrocrl.models.vae import VAE, ConditionalVAE

__all__ = ["FactorAnalysis", "LatentCausalVAE", "SparseVAE"]


# --------------------------------------------------------------------------------------------
# Factor analysis with anchor features
# --------------------------------------------------------------------------------------------
class _LoadingsConstraint(constraints.Constraint):
    """``(D, K)`` matrices that are zero outside the ``free`` mask and positive on the
    ``positive`` mask (the sign-fixing anchor loadings)."""

    event_dim = 2

    def __init__(self, free: torch.Tensor, positive: torch.Tensor):
        self.free, self.positive = free, positive
        super().__init__()

    def check(self, value):
        ok = (self.free | (value == 0)) & (~self.positive | (value > 0))
        return ok.flatten(-2).all(-1)


class _LoadingsTransform(Transform):
    """Free loadings ``(..., num_free)`` -> loading matrix ``(..., D, K)``: scatter them into a
    zero matrix, then flip every column whose sign-fixing anchor loading is negative.

    The flip makes the map 2^(number of sign-fixed columns)-to-1, not a bijection: it *folds*
    the sign-free space onto the sign-constrained support. That is exact for sampling and
    optimization whenever the density is invariant under flipping a column of ``W`` (true of
    :meth:`FactorAnalysis.marginal_model`, whose likelihood depends on ``W`` only through
    ``W W^T``, and of the symmetric prior): the sampler explores the sign-free posterior, a
    smooth density with no barrier at zero loadings, and every draw is mapped onto the
    constrained posterior. The inverse returns the preimage with the anchors positive.
    """

    domain = constraints.real_vector
    bijective = True  # on the canonical half (anchors positive); see the class docstring

    def __init__(self, free: torch.Tensor, positive: torch.Tensor, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self.free, self.positive = free, positive
        self._index = free.flatten().nonzero().squeeze(-1)
        self._anchor_row = positive.int().argmax(0)  # (K,): the sign-fixing anchor's row
        self._has_anchor = positive.any(0)  # (K,)
        self._columns = torch.arange(free.shape[1], device=free.device)

    @property
    def codomain(self):
        return _LoadingsConstraint(self.free, self.positive)

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return _LoadingsTransform(self.free, self.positive, cache_size=cache_size)

    def _call(self, u):
        flat = u.new_zeros(u.shape[:-1] + (self.free.numel(),))
        loadings = flat.index_copy(-1, self._index, u).reshape(
            u.shape[:-1] + tuple(self.free.shape))
        anchor_values = loadings[..., self._anchor_row, self._columns]  # (..., K)
        flip = self._has_anchor & (anchor_values < 0)
        return torch.where(flip.unsqueeze(-2), -loadings, loadings)

    def _inverse(self, loadings):
        return loadings.flatten(-2).index_select(-1, self._index)

    def log_abs_det_jacobian(self, u, loadings):
        return u.new_zeros(u.shape[:-1])  # a flip is an isometry

    def forward_shape(self, shape):
        return tuple(shape[:-1]) + tuple(self.free.shape)

    def inverse_shape(self, shape):
        return tuple(shape[:-2]) + (len(self._index),)


@biject_to.register(_LoadingsConstraint)
@transform_to.register(_LoadingsConstraint)
def _loadings_transform(constraint):
    return _LoadingsTransform(constraint.free, constraint.positive)


class _LoadingsPrior(dist.TorchDistribution):
    """``p(W)``: ``Normal(0, scale)`` on the free entries, ``HalfNormal(scale)`` on the
    sign-fixed ones, exactly zero elsewhere. Event shape ``(D, K)``."""

    arg_constraints = {}

    def __init__(self, free, positive, scale: float, batch_shape=(), validate_args=None):
        self.free, self.positive, self.scale = free, positive, float(scale)
        super().__init__(torch.Size(batch_shape), free.shape, validate_args=validate_args)

    @property
    def support(self):
        return _LoadingsConstraint(self.free, self.positive)

    def expand(self, batch_shape, _instance=None):
        return _LoadingsPrior(self.free, self.positive, self.scale, batch_shape,
                              validate_args=self._validate_args)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            draw = self.scale * torch.randn(shape, device=self.free.device)
            return torch.where(self.positive, draw.abs(), draw) * self.free

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        normal = (-0.5 * (value / self.scale) ** 2 - math.log(self.scale)
                  - 0.5 * math.log(2 * math.pi))
        normal = normal + math.log(2.0) * self.positive  # half-normal on the sign-fixed ones
        return torch.where(self.free, normal, 0.0).sum((-2, -1))


def _as_feature_list(name: str, factor: int, value, obs_dim: int) -> list[int]:
    features = [value] if isinstance(value, (int, np.integer)) else value
    if isinstance(features, (str, bytes)) or not isinstance(features, Iterable):
        raise ValueError(f"{name}: anchors[{factor}] must be a feature index or a list of "
                         f"feature indices, got {value!r}")
    out: list[int] = []
    for j in features:
        if not isinstance(j, (int, np.integer)) or isinstance(j, bool):
            raise ValueError(f"{name}: anchors[{factor}] must hold int feature indices, "
                             f"got {j!r}")
        if not 0 <= j < obs_dim:
            raise ValueError(f"{name}: anchors[{factor}] holds feature {int(j)}, outside "
                             f"[0, obs_dim={obs_dim})")
        if int(j) not in out:
            out.append(int(j))
    if not out:
        raise ValueError(f"{name}: factor {factor} has no anchor feature; with anchors, every "
                         f"factor needs at least one (anchors[{factor}] = {value!r})")
    return out


def _parse_anchors(name: str, anchors, obs_dim: int, latent_dim: int) -> list[list[int]] | None:
    """Normalise ``anchors`` to ``latent_dim`` lists of feature indices (or ``None``)."""
    if anchors is None:
        return None
    if isinstance(anchors, Mapping):
        keys = sorted(anchors, key=repr)
        bad = [k for k in keys if not isinstance(k, (int, np.integer)) or isinstance(k, bool)
               or not 0 <= k < latent_dim]
        if bad:
            raise ValueError(f"{name}: anchors keys must be factor indices in "
                             f"[0, latent_dim={latent_dim}), got {bad}")
        missing = [k for k in range(latent_dim) if k not in anchors]
        if missing:
            raise ValueError(f"{name}: factors {missing} have no anchor feature; with anchors, "
                             f"every factor needs at least one")
        anchors = [anchors[k] for k in range(latent_dim)]
    elif isinstance(anchors, (str, bytes)) or not isinstance(anchors, Iterable):
        raise ValueError(f"{name}: anchors must be a list of latent_dim lists of feature "
                         f"indices or a dict {{factor: features}}, got {anchors!r}")
    anchors = list(anchors)
    if len(anchors) != latent_dim:
        raise ValueError(f"{name}: anchors must hold one list of features per factor "
                         f"(latent_dim={latent_dim}), got {len(anchors)}")
    parsed = [_as_feature_list(name, k, a, obs_dim) for k, a in enumerate(anchors)]
    owner: dict[int, int] = {}
    for k, features in enumerate(parsed):
        for j in features:
            if j in owner:
                raise ValueError(f"{name}: feature {j} anchors both factor {owner[j]} and "
                                 f"factor {k}; an anchor depends on exactly one factor")
            owner[j] = k
    return parsed


def _warn_if_unidentified(obs_dim: int, latent_dim: int, free: torch.Tensor) -> None:
    """Warn when the factor model cannot be identified whatever the data: fewer than three
    features may load on some factor (two indicators of a factor fix only the product of
    their loadings), or more parameters than covariances (Ledermann's bound)."""
    thin = [k for k in range(latent_dim) if int(free[:, k].sum()) < 3]
    if thin:
        warnings.warn(
            f"FactorAnalysis: with these anchors, factors {thin} can load on fewer than three "
            f"features; their loadings are identified only up to products", IdentifiabilityWarning,
            stacklevel=3)
    if (obs_dim - latent_dim) ** 2 < obs_dim + latent_dim:
        warnings.warn(
            f"FactorAnalysis: {latent_dim} factors for {obs_dim} features exceed Ledermann's "
            f"bound (obs_dim - latent_dim)^2 >= obs_dim + latent_dim; the loadings and noise "
            f"variances are not identified", IdentifiabilityWarning, stacklevel=3)


class FactorAnalysis(LatentVariableModel):
    r"""Linear-Gaussian factor analysis, optionally with anchor features.

    .. math::
        W \sim p(W),\quad \mu \sim \mathcal N(0, 10^2 I),\quad
        \psi_j \sim \operatorname{LogNormal}(-1, 2^2),\qquad
        z_i \sim \mathcal N(0, I_K),\quad
        x_i \mid z_i \sim \mathcal N(W z_i + \mu,\ \operatorname{diag}(\psi))

    so that, with the factors integrated out, :math:`x_i \sim \mathcal N(\mu,\ W W^\top +
    \operatorname{diag}(\psi))`.

    **Sites.** Global (outside plate ``"data"``): ``"W"`` ``(D, K)``, ``"mu"`` ``(D,)``,
    ``"psi"`` ``(D,)`` (noise *variances*). Local: ``"z"`` ``(N, K)``; observed ``"x"``
    ``(N, D)``.

    **Loading prior and anchors.** ``anchors[k]`` lists the features that load on factor
    :math:`k` only: their rows of :math:`W` are fixed to zero off factor :math:`k` (a mask on
    :math:`W`). The other entries are free with prior :math:`\mathcal N(0, s^2)`
    (``prior_scale`` :math:`s`), except, with ``positive_anchors=True``, the loading of the
    first anchor of each factor on its own factor, which is positive with prior
    :math:`\operatorname{HalfNormal}(s)`. Site ``"W"`` is always the full ``(D, K)``
    matrix; its support is the masked, sign-constrained set. Both SVI and NUTS move in the
    sign-free coordinates of the free entries, and each column is flipped so that its
    sign-fixing anchor is positive (the transform registered for the support). The
    marginal likelihood and the prior are invariant under such flips, so this is exact, and
    it spares the fit the barrier a positivity constraint puts at zero: a constrained
    loading would have to cross zero to reach the mirror mode, and gets stuck there with the
    anchor explained as noise (seen in SVI fits and NUTS chains alike).

    **What is identifiable.** Without anchors the model (likelihood *and* prior) is invariant
    under :math:`W \mapsto W R`, :math:`z \mapsto R^\top z` for every orthogonal :math:`R`:
    fits from different initializations differ by a rotation; only the factor *subspace* is
    identified. Anchors break this (seed 002, section 3.1): a rotation would make an anchor
    row load on several factors, so with at least one anchor per factor only a sign flip of
    each factor remains, and ``positive_anchors=True`` fixes that sign, so nothing remains:
    factor :math:`k` is the one its anchors name, with its sign. This assumes every anchor
    truly loads on its factor and the factor model itself is identified (e.g. at least
    three features per factor; an :class:`IdentifiabilityWarning` says when the anchors or
    the dimensions rule that out). The prior takes the factors to be uncorrelated; with
    anchors, correlated factors leave the cross-covariances of anchors of different factors
    unexplained (no rotation may absorb them), though in simulations with correlation 0.6
    the loadings and factors were still recovered closely. With ``positive_anchors=False``
    the posterior has :math:`2^K` mirror-image modes: one NUTS chain stays in one, but
    several chains may disagree (``r_hat`` large).

    **Fitting.**

    * SVI (:func:`~pyrocrl.inference.fit_svi`): :meth:`guide` puts point masses (``Delta``)
      on the globals (MAP estimates, module parameters) and the *exact* conditional posterior
      :math:`q(z_i \mid x_i) = p(z_i \mid x_i, W, \mu, \psi)` on the factors. The ELBO then
      equals :math:`\log p(x, W, \mu, \psi)` for every draw of :math:`z` (zero-variance
      gradients), so SVI is MAP estimation of the marginal likelihood, like EM.
    * NUTS (:func:`~pyrocrl.inference.fit_mcmc`): :meth:`marginal_model` integrates the
      factors out analytically (``LowRankMultivariateNormal``), so the sampler only moves the
      globals; ``full_mass=True`` (loadings are correlated a posteriori) and
      ``jit_compile=True`` make it several times faster. :meth:`load_posterior_mean` copies
      the posterior means into the point estimates, so that :meth:`encode` and
      :meth:`loadings` use them. (:func:`~pyrocrl.inference.to_inference_data` needs every
      latent site in plate ``"data"`` and refuses this model; use
      :func:`~pyrocrl.inference.mcmc_to_inference_data` on a NUTS run.)

    Shapes: ``x: (N, obs_dim)``; ``u`` is accepted and ignored. ``encode(x)`` returns the
    posterior mean :math:`E[z \mid x] = (I + W^\top \Psi^{-1} W)^{-1} W^\top \Psi^{-1}
    (x - \mu)`, ``(N, K)``, at the point estimates. The priors suit roughly standardized
    features.

    Args:
        obs_dim: D.
        latent_dim: K.
        anchors: ``None``, a list of K lists of feature indices (``anchors[k]``: features
            that load on factor ``k`` only; a single int stands for a one-element list), or
            a dict ``{factor: features}`` with every factor as a key.
        positive_anchors: constrain the first anchor's loading of each factor to be positive
            (removes the sign flips).
        prior_scale: :math:`s`, the prior scale of the loadings.
        init_scale: standard deviation of the random initial loadings; the initial point
            comes from torch's global RNG.

    References:
        1. Anderson & Rubin, "Statistical Inference in Factor Analysis", Berkeley Symposium
           1956 (rotational indeterminacy; identification by zero loadings).
        2. Arora, Ge, Halpern, Mimno, Moitra, Sontag, Wu & Zhu, "A Practical Algorithm for
           Topic Modeling with Provable Guarantees", ICML 2013 (anchor words).
        3. Moran, Sridhar, Wang & Blei, "Identifiable Deep Generative Models via Sparse
           Decoding", TMLR 2022.
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        anchors=None,
        positive_anchors: bool = True,
        prior_scale: float = 1.0,
        init_scale: float = 0.5,
    ):
        super().__init__(obs_dim, latent_dim)
        for name, value in [("prior_scale", prior_scale), ("init_scale", init_scale)]:
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not 0 < value < math.inf):
                raise ValueError(f"FactorAnalysis: {name} must be a positive number, "
                                 f"got {value!r}")
        self.anchors = _parse_anchors("FactorAnalysis", anchors, obs_dim, latent_dim)
        self.positive_anchors = bool(positive_anchors) and self.anchors is not None
        self.prior_scale = float(prior_scale)
        free = torch.ones(obs_dim, latent_dim, dtype=torch.bool)
        positive = torch.zeros(obs_dim, latent_dim, dtype=torch.bool)
        for k, features in enumerate(self.anchors or []):
            free[features] = False
            free[features, k] = True
            positive[features[0], k] = self.positive_anchors
        self.register_buffer("free_mask", free)
        self.register_buffer("positive_mask", positive)
        _warn_if_unidentified(obs_dim, latent_dim, free)
        # Point estimates of the globals (the SVI guide's Delta sites). The free loadings are
        # stored sign-free; loadings_transform() flips the anchored columns.
        self.loadings_free = nn.Parameter(init_scale * torch.randn(int(free.sum())))
        self.mean = nn.Parameter(torch.zeros(obs_dim))
        self.noise_variance = PyroParam(torch.ones(obs_dim), constraint=constraints.positive)

    # -- priors --------------------------------------------------------------------------
    def loadings_transform(self) -> Transform:
        """Map from the free loadings ``(num_free,)``, signs unconstrained, to ``W (D, K)``
        (zeros off the anchor mask, sign-fixed columns flipped to positive anchors)."""
        return _LoadingsTransform(self.free_mask, self.positive_mask)

    def loadings_prior(self) -> dist.TorchDistribution:
        """``p(W)``: event shape ``(D, K)``, support the masked, sign-constrained matrices."""
        return _LoadingsPrior(self.free_mask, self.positive_mask, self.prior_scale)

    def _sample_globals(self):
        """Sample ``W, mu, psi``; return them with a singleton dim where the ``"data"`` plate
        goes (``(..., 1, D, K)``, ``(..., 1, D)``), so that draws batched on the left
        (``Predictive``, ``arviz.from_pyro``) broadcast against the data."""
        zeros = torch.zeros(self.obs_dim, device=self.free_mask.device)
        loadings = pyro.sample("W", self.loadings_prior())
        mean = pyro.sample("mu", dist.Normal(zeros, 10.0).to_event(1))
        variance = pyro.sample("psi", dist.LogNormal(zeros - 1.0, 2.0).to_event(1))
        return loadings.unsqueeze(-3), mean.unsqueeze(-2), variance.unsqueeze(-2)

    # -- the Pyro programs ---------------------------------------------------------------
    def model(self, x, u=None, num_data=None):
        """Generative program with the factors as latent site ``"z"``."""
        loadings, mean, variance = self._sample_globals()
        with self.data_plate(x.shape[0], num_data, x.device):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            loc = mean + (loadings @ z.unsqueeze(-1)).squeeze(-1)
            pyro.sample("x", dist.Normal(loc, variance.sqrt()).to_event(1), obs=x)

    def marginal_model(self, x, u=None, num_data=None):
        r"""The same model with the factors integrated out, for NUTS:
        :math:`x_i \sim \mathcal N(\mu, W W^\top + \operatorname{diag}(\psi))`."""
        loadings, mean, variance = self._sample_globals()
        with self.data_plate(x.shape[0], num_data, x.device):
            pyro.sample("x", dist.LowRankMultivariateNormal(mean, loadings, variance), obs=x)

    def point_estimates(self) -> dict[str, torch.Tensor]:
        """The current point estimates of the global sites ``"W"``, ``"mu"``, ``"psi"``."""
        return {"W": self.loadings_transform()(self.loadings_free), "mu": self.mean,
                "psi": self.noise_variance}

    def guide(self, x, u=None, num_data=None):
        """Point masses on the globals, the exact Gaussian conditional posterior on ``"z"``."""
        point = self.point_estimates()
        pyro.sample("W", dist.Delta(point["W"], event_dim=2))
        pyro.sample("mu", dist.Delta(point["mu"], event_dim=1))
        pyro.sample("psi", dist.Delta(point["psi"], event_dim=1))
        loc, scale_tril = self._conditional(x, point)
        with self.data_plate(x.shape[0], num_data, x.device):
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=scale_tril))

    def _conditional(self, x, point):
        """``p(z | x, W, mu, psi) = N(loc, S)``: ``loc (N, K)`` and ``cholesky(S) (K, K)``."""
        loadings, mean, variance = point["W"], point["mu"], point["psi"]
        weighted = loadings.T / variance  # W^T Psi^{-1}, (K, D)
        precision = torch.eye(self.latent_dim, device=x.device, dtype=x.dtype) \
            + weighted @ loadings
        covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        loc = (x - mean) @ (covariance @ weighted).T
        return loc, torch.linalg.cholesky(covariance)

    def posterior(self, x, u=None):
        """``(loc, scale)``, each ``(N, K)``: the mean and the marginal standard deviations of
        the exact conditional posterior of ``z`` at the point estimates (the factors are
        correlated a posteriori; :meth:`guide` uses the full covariance)."""
        loc, scale_tril = self._conditional(x, self.point_estimates())
        return loc, scale_tril.pow(2).sum(-1).sqrt().expand_as(loc)

    # -- fitted state --------------------------------------------------------------------
    @torch.no_grad()
    def loadings(self) -> np.ndarray:
        """The point estimate of :math:`W`, ``(obs_dim, latent_dim)`` NumPy."""
        return self.point_estimates()["W"].cpu().numpy()

    @torch.no_grad()
    def load_posterior_mean(self, samples: Mapping[str, torch.Tensor]) -> FactorAnalysis:
        """Set the point estimates to the posterior means of MCMC ``samples``.

        Args:
            samples: ``{"W": (..., D, K), "mu": (..., D), "psi": (..., D)}`` with any leading
                sample dims, e.g. ``fit_mcmc(...).get_samples()``.

        Returns:
            ``self``.
        """
        shapes = {"W": (self.obs_dim, self.latent_dim), "mu": (self.obs_dim,),
                  "psi": (self.obs_dim,)}
        means = {}
        for name, shape in shapes.items():
            if name not in samples:
                raise ValueError(f"FactorAnalysis.load_posterior_mean: samples lack site "
                                 f"{name!r} (got {sorted(samples)})")
            value = torch.as_tensor(samples[name], dtype=torch.float32, device=self.device)
            if value.ndim <= len(shape) or tuple(value.shape[-len(shape):]) != shape:
                raise ValueError(f"FactorAnalysis.load_posterior_mean: samples[{name!r}] must "
                                 f"have shape (num_samples, ..., {', '.join(map(str, shape))}), "
                                 f"got {tuple(value.shape)}")
            means[name] = value.reshape((-1,) + shape).mean(0)
        if not bool(self.loadings_prior().support.check(means["W"])):
            raise ValueError("FactorAnalysis.load_posterior_mean: samples['W'] break this "
                             "model's anchor mask or sign constraint; were they drawn from it?")
        self.loadings_free.copy_(self.loadings_transform().inv(means["W"]))
        self.mean.copy_(means["mu"])
        self.noise_variance = means["psi"]
        return self


# --------------------------------------------------------------------------------------------
# Latent causal DAG with known interventions
# --------------------------------------------------------------------------------------------
class LatentCausalVAE(ConditionalVAE):
    r"""VAE whose prior is a learnable linear latent SEM with known single-node interventions.

    Generative story, for a sample in environment :math:`e` with intervened latent
    :math:`t_e` (``-1``: observational):

    .. math::
        z \mid e &\sim \mathrm{LinearSEM}(W_e, b_e, s_e), \qquad
        z_j = \textstyle\sum_i (W_e)_{ij} z_i + (b_e)_j + (s_e)_j \varepsilon_j,\\
        x \mid z &\sim \mathcal N\big(f_\theta(z), \operatorname{diag}(\sigma^2)\big),

    where :math:`W_e = W` except column :math:`t_e` (zero for a perfect intervention, a
    learned column :math:`\tilde w_e` for a soft one) and :math:`(b_e, s_e) = (b, s)` except
    at :math:`t_e`, where they are the learned intervened mean and scale
    :math:`(\tilde b_e, \tilde s_e)`. The density of :class:`pyrocrl.distributions.LinearSEM`
    is exact for any :math:`W` (it adds :math:`\log|\det(I - W)|`), and the ELBO adds, per
    data point, :math:`\lambda_1 \lVert W \rVert_1 + \rho\, h(W)` with NOTEARS'
    :math:`h(W) = \operatorname{tr} e^{W \circ W} - n`, which is zero exactly on DAGs.
    The guide is :math:`q(z \mid x, e) = \mathcal N(\mu_\phi(x, e), \operatorname{diag}
    s_\phi(x, e)^2)` (encoder on ``(x, one_hot(e))``).

    Identifiability: with a linear Gaussian latent SEM, an injective mixing and one perfect
    intervention per latent with known targets, the latents are identified up to
    component-wise affine maps and the graph exactly (Buchholz et al., NeurIPS 2023; seed 002
    §3). Known targets fix the labels: latent ``j`` is the variable intervened on in the
    environments with ``targets[e] == j``.

    Args:
        obs_dim: D.
        latent_dim: n.
        num_envs: number of environments (values of ``u``).
        targets: length-``num_envs`` sequence, the latent intervened on in each environment
            (``-1`` observational). ``None`` assumes environment 0 is observational and
            environment ``k`` intervenes on latent ``k - 1`` (``num_envs == latent_dim + 1``);
            with unknown but distinct single-node targets that labelling loses nothing, as
            latents are only identified up to permutation anyway.
        interventions: ``"perfect"`` or ``"soft"``.
        sparsity: :math:`\lambda_1`, per data point.
        acyclicity: :math:`\rho`, per data point.
        leakage: weight, per data point, of :meth:`leakage_penalty` on each minibatch's
            encoder means — once :meth:`restrict_graph` has fixed a graph, it pushes the
            latents toward what that graph implies under the interventions (0: off). On B7
            through the 3-layer mixing, with the contrastive start's graph kept, weight 1
            raised MCC from 0.882 to 0.895 over seeds 0-9 (0.912 to 0.934 on seeds 0-4) and
            the median SHD went from 2.5 to 2 (``benchmarks/NOTES.md``).
        hidden_dim, num_layers, init_obs_scale, init_posterior_scale: as in :class:`IVAE`.
    """

    def __init__(self, obs_dim: int, latent_dim: int, num_envs: int, targets=None,
                 interventions: str = "perfect", sparsity: float = 1e-2,
                 acyclicity: float = 1.0, leakage: float = 0.0, hidden_dim: int = 64,
                 num_layers: int = 3,
                 init_obs_scale: float = 0.02, init_posterior_scale: float = 0.05):
        super().__init__(obs_dim, latent_dim, num_envs, hidden_dim, num_layers, init_obs_scale,
                         init_posterior_scale)
        n = latent_dim
        if targets is None:
            if num_envs != n + 1:
                raise ValueError(f"LatentCausalVAE: targets=None means environment 0 is "
                                 f"observational and environment k intervenes on latent k-1, "
                                 f"which needs num_envs = latent_dim + 1 = {n + 1}; got "
                                 f"num_envs={num_envs}. Pass targets explicitly")
            targets = list(range(-1, n))
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        if targets.shape != (num_envs,):
            raise ValueError(f"LatentCausalVAE: targets must have one entry per environment "
                             f"(num_envs={num_envs}), got shape {tuple(targets.shape)}")
        if ((targets < -1) | (targets >= n)).any():
            raise ValueError(f"LatentCausalVAE: targets must lie in [-1, latent_dim={n}) "
                             f"(-1: observational), got {targets.tolist()}")
        if interventions not in ("perfect", "soft"):
            raise ValueError(f"LatentCausalVAE: interventions must be 'perfect' or 'soft', got "
                             f"{interventions!r}")
        for name, value in (("sparsity", sparsity), ("acyclicity", acyclicity),
                            ("leakage", leakage)):
            if not value >= 0:
                raise ValueError(f"LatentCausalVAE: {name} must be >= 0, got {value}")
        # the first observational environment (None without one): the reference of
        # leakage_penalty and standardized_adjacency
        observational = (targets == -1).nonzero().flatten().tolist()
        self.observational_env = observational[0] if observational else None
        if leakage and self.observational_env is None:
            raise ValueError(f"LatentCausalVAE: leakage > 0 compares environments with an "
                             f"observational one, but targets has no -1: {targets.tolist()}")
        self.num_envs, self.interventions = num_envs, interventions
        self.sparsity, self.acyclicity = float(sparsity), float(acyclicity)
        self.leakage = float(leakage)
        self.register_buffer("targets", targets)
        hit = torch.zeros(num_envs, n)
        rows = (targets >= 0).nonzero().flatten()
        hit[rows, targets[rows]] = 1.0
        self.register_buffer("hit", hit)  # (E, n): 1 where environment e intervenes on j
        self.register_buffer("off_diagonal", 1.0 - torch.eye(n))
        # (E, n): 1 where latent k must not move in environment e (set by restrict_graph)
        self.register_buffer("invariant", torch.zeros(num_envs, n))
        self.weights = nn.Parameter(torch.zeros(n, n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.scale = PyroParam(torch.ones(n), constraint=constraints.positive)
        self.target_loc = nn.Parameter(torch.zeros(num_envs))
        self.target_scale = PyroParam(torch.ones(num_envs), constraint=constraints.positive)
        if interventions == "soft":
            self.target_weights = nn.Parameter(torch.zeros(num_envs, n))
        # z = latent_map @ z_network + latent_shift: identity until disentangle() sets it
        self.register_buffer("latent_map", torch.eye(n))
        self.register_buffer("latent_map_inverse", torch.eye(n))  # kept with latent_map
        self.register_buffer("latent_shift", torch.zeros(n))

    # -- the network coordinates and the model's ---------------------------------------------
    def posterior(self, x, u=None):
        loc, scale = super().posterior(x, u)
        a = self.latent_map
        return loc @ a.T + self.latent_shift, ((scale**2) @ (a**2).T).sqrt()

    def decode(self, z):
        return self.decoder((z - self.latent_shift) @ self.latent_map_inverse.T)

    # -- the prior -------------------------------------------------------------------------
    @property
    def adjacency(self) -> torch.Tensor:
        """The learned weighted adjacency :math:`W` (zero diagonal), ``(n, n)``."""
        return self.weights * self.off_diagonal

    def env_parameters(self):
        """``(W_e, b_e, s_e)`` for every environment: ``(E, n, n)``, ``(E, n)``, ``(E, n)``."""
        hit = self.hit
        keep = 1.0 - hit
        weights = self.adjacency * keep[:, None, :]  # column t_e cut
        if self.interventions == "soft":
            # column t_e replaced by the learned soft mechanism (no self-loop)
            weights = weights + (self.target_weights * keep)[:, :, None] * hit[:, None, :]
        bias = self.bias * keep + self.target_loc[:, None] * hit
        scale = self.scale * keep + self.target_scale[:, None] * hit
        return weights, bias, scale

    def prior(self, u, x):
        weights, bias, scale = self.env_parameters()
        # one determinant per environment, gathered per point (not one per point)
        eye = torch.eye(self.latent_dim, dtype=weights.dtype, device=weights.device)
        log_abs_det = torch.linalg.slogdet(eye - weights).logabsdet
        return LinearSEM(weights[u], bias[u], scale[u], log_abs_det=log_abs_det[u])

    def acyclicity_penalty(self) -> torch.Tensor:
        """NOTEARS :math:`h(W) = \\operatorname{tr} e^{W \\circ W} - n` (0 iff DAG)."""
        w = self.adjacency
        return torch.linalg.matrix_exp(w * w).diagonal().sum() - w.shape[0]

    def leakage_penalty(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""How far latents ``z`` ``(N, n)`` (e.g. a minibatch's encoder means) break what
        the restricted graph (:meth:`restrict_graph`) implies, summed over every
        environment :math:`e` intervening on :math:`t` and every latent :math:`k` that is
        neither :math:`t` nor a descendant of it:

        .. math::
            \frac{(\bar z_{k,e} - \bar z_{k,0})^2}{v_{k,0}}
            + \Big(\log \frac{v_{k,e}}{v_{k,0}}\Big)^2
            + \operatorname{corr}_e(z_t, z_k)^2,

        with means :math:`\bar z` and variances :math:`v` per environment (0: the first
        observational one). The first two terms: a non-descendant's distribution does not
        change; the last (perfect interventions only): the intervened latent has no parents
        left. Zero for every environment before :meth:`restrict_graph` is called."""
        onehot = torch.nn.functional.one_hot(u, self.num_envs).to(z.dtype)  # (N, E)
        count = onehot.sum(0)[:, None]  # (E, 1)
        enough = (count >= 2).to(z.dtype)
        count = count.clamp_min(1.0)
        mean = onehot.T @ z / count  # (E, n)
        var = (onehot.T @ z.square() / count - mean.square()).clamp_min(0.0) + 1e-4
        obs = self.observational_env  # a Python int: no device sync per step
        if obs is None:
            raise ValueError(f"LatentCausalVAE.leakage_penalty: needs an observational "
                             f"environment (a -1 in targets), got {self.targets.tolist()}")
        enough = enough * enough[obs]  # no reference in this batch: no penalty
        terms = ((mean - mean[obs]).square() / var[obs]
                 + (var.log() - var[obs].log()).square())
        if self.interventions == "perfect":
            target = self.targets.clamp_min(0)  # (E,): -1 rows are masked by `invariant`
            z_target = z.gather(1, target[u][:, None])  # (N, 1): each point's intervened latent
            cross = onehot.T @ (z * z_target) / count  # (E, n)
            mean_t, var_t = mean.gather(1, target[:, None]), var.gather(1, target[:, None])
            terms = terms + (cross - mean * mean_t).square() / (var * var_t)
        return (terms * self.invariant * enough).sum()

    def model(self, x, u=None, num_data=None):
        super().model(x, u, num_data)
        penalty = (self.sparsity * self.adjacency.abs().sum()
                   + self.acyclicity * self.acyclicity_penalty())
        if self.leakage:
            penalty = penalty + self.leakage * self.leakage_penalty(self.posterior(x, u)[0], u)
        pyro.factor("graph_penalty", -(num_data or x.shape[0]) * penalty)

    # -- stage 2: resolve the remaining linear ambiguity exactly ------------------------------
    @torch.no_grad()
    def disentangle(self, x, u, refine: bool = True, order_search: bool = False,
                    edge_test: str = "wald"):
        r"""Re-express the latents in the coordinates that linear causal disentanglement
        finds, and set the SEM prior to its estimate; returns the
        :class:`~pyrocrl.models.linear_causal.LinearCausalEstimate`.

        ELBO training alone reaches the latent space up to an (almost) affine map but, in our
        measurements, stalls at a mixture of the true latents (MCC about 0.8 with affine R²
        above 0.99). On the encoded posterior means :math:`\hat z` the latents then follow a
        linear SEM seen through a linear map, which is exactly the setting of
        :func:`~pyrocrl.models.linear_causal_disentanglement` (Squires et al. 2023): it
        recovers the map :math:`\hat z \mapsto z` up to scaling and the graph from the
        rank-one precision changes between environments. The map is folded into the model
        (``latent_map``, ``latent_shift``: encoder means are mapped forward, the decoder
        reads through the inverse), latents are ordered by the known ``targets``, and the
        prior's weights, intercepts and scales are set by regression in the new
        coordinates. Fitting with :func:`~pyrocrl.inference.fit_svi` afterwards fine-tunes
        everything by the ELBO. Only the training data enter; no ground truth.

        It is only as good as the linearity of the encodings: the rank-one precision
        differences hold exactly for a linear map and only approximately otherwise. Linear
        data bent by 5 % (affine R² 0.9995 to the latents) already give the estimator's
        graph SHD 5 with 20 000 samples per environment (spurious edges of standardized
        weight up to 0.12, so a threshold does not save it), and a 20 % bend (R² 0.998)
        swaps latents (MCC 0.83)
        (``tests/models/test_linear_causal.py``). So it helps after a random start, whose
        ELBO encodings are a near-affine mixture of the latents, and can hurt after
        ``initialize_contrastive``, whose encodings are closer to the latents one by one but
        bent (the disentangle step re-mixes them); ``benchmarks/latent_dag.py --init
        contrastive`` therefore runs no rounds.

        ``refine``, ``order_search`` and ``edge_test`` go to the estimator. Its defaults — a
        search over orders by the dense likelihood, and edges dropped only when a
        likelihood-ratio test agrees with the Wald test — are off here: on exactly linear
        data they repair wrong greedy orders and wrongly dropped edges, but the encodings
        are only nearly linear, and there the misspecified likelihood prefers wrong orders
        and keeps spurious edges. Measured (final SHD after 3 rounds), B7 with the linear
        mixing, seeds 0-4: 1, 2, 0, 5, 4 with both defaults, 0, 2, 0, 5, 2 with the
        likelihood-ratio tests alone, 0, 1, 0, 5, 2 with neither (this default); the slow
        test (4 latents, linear mixing, seeds 0-2): 0, 0, 2 with both and with neither.
        """
        from pyrocrl.models.linear_causal import linear_causal_disentanglement

        self.check_data(x, u)
        if self.interventions != "perfect":
            raise ValueError("LatentCausalVAE.disentangle: needs perfect interventions")
        observational = (self.targets == -1).nonzero().flatten().tolist()
        targeted = self.targets[self.targets >= 0]
        if len(observational) != 1 or sorted(targeted.tolist()) != list(range(self.latent_dim)):
            raise ValueError("LatentCausalVAE.disentangle: needs one observational environment "
                             "and exactly one environment intervening on each latent, got "
                             f"targets={self.targets.tolist()}")
        z_hat = self.encode(x, u).to(self.device)
        env = u.cpu().numpy()
        estimate = linear_causal_disentanglement(
            z_hat.double().cpu().numpy(), env, num_latents=self.latent_dim,
            observational=observational[0], refine=refine, order_search=order_search,
            edge_test=edge_test)
        # estimated latent -> our latent: through the environment that intervenes on it
        order = np.zeros(self.latent_dim, dtype=int)
        for e, t_est in zip(estimate.environments, estimate.targets):
            if t_est >= 0:
                order[int(self.targets[int(e)])] = int(t_est)
        unmixing = estimate.unmixing[order]
        a = torch.as_tensor(unmixing, dtype=self.latent_map.dtype, device=self.device)
        c = -a @ torch.as_tensor(estimate.mean, dtype=a.dtype, device=a.device)
        # compose with the current map: z_new = a (M z_net + s) + c
        self.latent_shift.copy_(a @ self.latent_shift + c)
        self.latent_map.copy_(a @ self.latent_map)
        self.latent_map_inverse.copy_(torch.linalg.inv(self.latent_map))
        weights = torch.as_tensor(estimate.adjacency[np.ix_(order, order)], dtype=a.dtype,
                                  device=a.device)
        z = z_hat @ a.T + c  # = self.encode(x, u) under the new map
        u = u.to(a.device)
        obs = u == observational[0]
        residual = z[obs] - z[obs] @ weights
        self.weights.copy_(weights)
        self.bias.copy_(residual.mean(0))
        self.scale = residual.std(0).clamp_min(1e-3)
        target_loc, target_scale = self.target_loc.detach().clone(), torch.ones(self.num_envs)
        for e in range(self.num_envs):
            t = int(self.targets[e])
            if t >= 0:
                target_loc[e] = z[u == e, t].mean()
                target_scale[e] = z[u == e, t].std().clamp_min(1e-3)
        self.target_loc.copy_(target_loc)
        self.target_scale = target_scale.to(a.device)
        return estimate

    # -- the learned graph -----------------------------------------------------------------
    @torch.no_grad()
    def standardized_adjacency(self) -> np.ndarray:
        r"""The adjacency in units of the observational latent standard deviations,
        :math:`W_{ij} \sigma_i / \sigma_j` — invariant to the per-latent scaling that the
        latents are only identified up to."""
        weights, bias, scale = self.env_parameters()
        e = 0 if self.observational_env is None else self.observational_env
        cov = LinearSEM(weights[e], bias[e], scale[e]).covariance_matrix
        sd = cov.diagonal().clamp_min(1e-12).sqrt()
        return (self.adjacency * sd[:, None] / sd[None, :]).cpu().numpy()

    def graph(self, threshold: float = 0.1) -> np.ndarray:
        """The learned DAG, ``(n, n)`` numpy, ``graph[i, j] != 0`` meaning ``z_i -> z_j``:
        standardized weights with ``|w| <= threshold`` dropped, then, while a cycle remains,
        its weakest edge removed (so the result is always a DAG)."""
        w = self.standardized_adjacency()
        w[np.abs(w) <= threshold] = 0.0
        digraph = nx.DiGraph()
        digraph.add_nodes_from(range(w.shape[0]))
        digraph.add_weighted_edges_from((i, j, abs(w[i, j])) for i, j in zip(*np.nonzero(w)))
        while True:
            try:
                cycle = nx.find_cycle(digraph)
            except nx.NetworkXNoCycle:
                break
            i, j = min(cycle, key=lambda edge: digraph.edges[edge]["weight"])
            digraph.remove_edge(i, j)
            w[i, j] = 0.0
        return w

    @torch.no_grad()
    def restrict_graph(self, graph) -> None:
        """Allow SEM weights only on the edges of ``graph`` from now on (``(n, n)``, a DAG;
        ``graph[i, j] != 0`` allows ``z_i -> z_j``): every other weight is held at zero in
        the prior, the penalties and :meth:`graph` (the mask is the ``off_diagonal`` buffer,
        so it is saved with the model).

        Meant for after :func:`~pyrocrl.inference.initialize_contrastive`, whose SEM prior is
        a better graph than what ELBO training makes of it: unrestricted, the ELBO adds edges
        the leaky latents seem to need. ``fit_latent_causal(..., init="contrastive")``
        (``keep_start_graph``, on by default there) restricts to the start's :meth:`graph`
        before the ELBO stage:
        on B7 through the 3-layer mixing, seeds 0-9, MCC 0.882 ± 0.048 and median SHD 2.5
        against 0.862 ± 0.055 and 6 with the support left free (higher MCC on every seed;
        README, ``benchmarks/NOTES.md``).
        """
        from pyrocrl.diagnostics.graphs import _check_dag, _edges

        edges = _edges("LatentCausalVAE.restrict_graph: graph", graph)
        if edges.shape != (self.latent_dim,) * 2:
            raise ValueError(f"LatentCausalVAE.restrict_graph: graph must be (latent_dim, "
                             f"latent_dim) = ({self.latent_dim}, {self.latent_dim}), got "
                             f"{edges.shape}")
        _check_dag("LatentCausalVAE.restrict_graph: graph", edges)
        mask = torch.as_tensor(edges, dtype=self.off_diagonal.dtype,
                               device=self.off_diagonal.device)
        self.off_diagonal.copy_(mask)
        self.weights.mul_(mask)
        self.invariant.copy_(self._invariant_pairs(edges))

    def _invariant_pairs(self, edges) -> torch.Tensor:
        """``(E, n)``: 1 where latent k is neither environment e's target nor a descendant
        of it in the DAG ``edges`` (0 in observational rows)."""
        digraph = nx.DiGraph(np.asarray(edges) != 0)
        digraph.add_nodes_from(range(self.latent_dim))
        invariant = torch.zeros_like(self.invariant)
        for e, t in enumerate(self.targets.tolist()):
            if t >= 0:
                moved = nx.descendants(digraph, t) | {t}
                invariant[e] = torch.tensor([float(k not in moved)
                                             for k in range(self.latent_dim)])
        return invariant

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # state dicts saved before `invariant` existed (2026-12-07): derive it from the saved
        # support as restrict_graph would have (an unrestricted support gives no pairs: every
        # latent is then a descendant of every other)
        mask = state_dict.get(prefix + "off_diagonal")
        if prefix + "invariant" not in state_dict and mask is not None:
            state_dict[prefix + "invariant"] = self._invariant_pairs(mask.cpu().numpy())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Sparse VAE: identifiable through a sparse decoder
# --------------------------------------------------------------------------------------------
def _spectral_normalized(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` divided by its largest singular value: a 1-Lipschitz linear map."""
    return weight / torch.linalg.matrix_norm(weight, ord=2).clamp_min(1e-12)


class SparseVAE(VAE):
    r"""Sparse VAE: every feature reads a sparse, learned subset of the factors.

    A :class:`~pyrocrl.models.VAE` (same prior, encoder and guide) whose decoder is gated by
    factor-selection weights:

    .. math::
        \eta_k \sim \operatorname{Beta}(a, b),\qquad
        w_{jk} \mid \eta_k \sim \eta_k\, \lambda_1 e^{-\lambda_1 w_{jk}}
            + (1 - \eta_k)\, \lambda_0 e^{-\lambda_0 w_{jk}},\quad w_{jk} \ge 0,

    .. math::
        z_i \sim \mathcal N(0, I_K),\qquad
        x_{ij} \mid z_i \sim \mathcal N\big(f_\theta(w_j \odot z_i)_j,\ \sigma_j^2\big),

    for features :math:`j = 1..D` and factors :math:`k = 1..K`: a spike-and-slab lasso
    (:class:`SpikeAndSlabLasso`; slab rate :math:`\lambda_1`, spike rate
    :math:`\lambda_0 > \lambda_1`, selection indicators :math:`\gamma_{jk}` summed out) on
    the nonnegative factor-selection weights :math:`W = (w_{jk})`, one shared MLP decoder
    :math:`f_\theta` of which feature :math:`j` reads output :math:`j` at input
    :math:`w_j \odot z_i`, and learned noise :math:`\sigma_j`. The guide is the amortized
    :math:`q_\phi(z_i \mid x_i) = \mathcal N(\mu_\phi(x_i), \operatorname{diag}(s_\phi(x_i)^2))`
    (MLP encoder). :math:`w_{jk} = 0` means feature :math:`j` does not depend on factor
    :math:`k`.

    **Sites.** Latent ``"z"`` ``(N, K)`` and observed ``"x"`` ``(N, D)`` in plate
    ``"data"``; the prior of the point estimates :math:`W, \eta` enters as the factor
    ``"sparsity_prior"``, in the plate too (below).

    **Fitting: penalized MAP for the globals.** :math:`W` and :math:`\eta` are point
    estimates (module parameters), as in Moran et al., whose algorithm alternates an E-step
    for the indicators with gradient steps for :math:`W, \theta, \phi` and the closed-form
    update :math:`\eta_k = (\sum_j p^*_{jk} + a - 1) / (a + b + D - 2)`. Here the
    indicators are summed out analytically and every parameter takes gradient steps on

    .. math::
        \sum_{i=1}^N \Big(\operatorname{ELBO}_i
        + \rho \big[\log p(W \mid \eta) + \log p(\eta)\big]\Big),

    whose stationary :math:`\eta` is that same update (the whole prior carries one weight,
    so the balance between :math:`p(W \mid \eta)` and :math:`p(\eta)` is untouched).
    :meth:`inclusion_probability` is the E-step's :math:`p^*_{jk} = P(\gamma_{jk} = 1 \mid
    w_{jk}, \eta_k)`, and ``inclusion_probability() > 0.5`` the selected support. The prior
    is added with ``pyro.factor`` inside the ``"data"`` plate, weighted :math:`\rho`
    (``sparsity_weight``) per data point, so minibatches scale it like the likelihood.
    :math:`\rho = 1/N` would be the exact posterior mode of the model above. It is not the
    default: a prior counted once pulls each weight with a gradient of order
    :math:`\lambda`, while the minibatch gradients of the likelihood are of order :math:`N`
    (measured at :math:`N = 2400`: about 1 against means and spreads of
    :math:`10^2`-:math:`10^3`), so in a few thousand steps the weights do not move from
    their initial value and the factors stay wherever the VAE part puts them. Weighted per
    data point, the penalty's strength relative to the fit does not depend on :math:`N`,
    like a lasso penalty written per observation; the default :math:`\rho = 0.1` was set on
    the recovery tests' data (standardized features; :math:`\rho = 0.04` was too
    weak there, :math:`\rho = 0.4` shrank some factors into the spike).

    **Scale.** :math:`f_\theta` is 1-Lipschitz in its input: every hidden layer is used
    divided by its largest singular value (leaky-ReLU activations are 1-Lipschitz) and each
    feature's output row with unit norm. Hence :math:`|\partial f_\theta(w_j \odot z)_j /
    \partial z_k| \le w_{jk}`: a small weight cannot be amplified by the network. Without
    this, the network makes up for any shrinking :math:`w_{jk}` by growing its own gain for
    that feature and factor, the likelihood does not change, and MAP slides the weights into
    the spike (measured with :math:`\rho = 1`: every weight ends below 0.1, the support
    visible only in relative size). So :math:`w_{jk}` has the scale of a derivative of
    :math:`x_j`, and the defaults (:math:`\lambda_1 = 1, \lambda_0 = 10`: weights below
    about 0.3 count as out) suit standardized features.

    **What is identifiable.** The prior :math:`\mathcal N(0, I)` alone is rotation invariant
    (see :class:`~pyrocrl.models.VAE`). A rotation of the factors makes an anchor feature
    depend on several factors, so the sparsity prior prefers the unrotated factors: with at
    least two anchor features per factor, they are identified up to permutation and
    element-wise transformation (Moran et al., Theorem 1). ``obs_dim < latent_dim`` raises
    (each factor needs features of its own); ``obs_dim < 2 * latent_dim`` raises an
    :class:`IdentifiabilityWarning` (too few features for two anchors per factor).

    Shapes: ``x: (N, obs_dim)`` float, roughly standardized; ``u`` is accepted and ignored.
    ``encode(x)`` returns the posterior means ``(N, latent_dim)``; :meth:`selection` the
    fitted ``(D, K)`` weights.

    Args:
        obs_dim: D >= K.
        latent_dim: K.
        hidden_dim, num_layers: MLP sizes of the encoder and of :math:`f_\theta`.
        spike_rate: :math:`\lambda_0`, larger than ``slab_rate``.
        slab_rate: :math:`\lambda_1 > 0`.
        inclusion_a, inclusion_b: :math:`a, b > 0` of the Beta prior on :math:`\eta_k`;
            ``inclusion_b=None`` means :math:`b = D` (few factors per feature expected).
        sparsity_weight: :math:`\rho > 0`, the weight of the log-prior of :math:`W, \eta`
            per data point (see above).
        init_selection: initial value of every :math:`w_{jk}`, jittered by +-10% (torch's
            global RNG); at least the scale of the features' sensitivities, so that no
            factor starts switched off.
        init_obs_scale: initial observation noise standard deviation (learned).
        init_posterior_scale: initial posterior standard deviation of the encoder.

    References:
        1. Moran, Sridhar, Wang & Blei, "Identifiable Deep Generative Models via Sparse
           Decoding", TMLR 2022.
        2. Ročková & George, "The Spike-and-Slab LASSO", JASA 2018.
        3. Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative
           Adversarial Networks", ICLR 2018.
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        hidden_dim: int = 64,
        num_layers: int = 3,
        spike_rate: float = 10.0,
        slab_rate: float = 1.0,
        inclusion_a: float = 1.0,
        inclusion_b: float | None = None,
        sparsity_weight: float = 0.1,
        init_selection: float = 1.0,
        init_obs_scale: float = 0.02,
        init_posterior_scale: float = 0.05,
    ):
        super().__init__(obs_dim, latent_dim, hidden_dim, num_layers, init_obs_scale,
                         init_posterior_scale)
        if obs_dim < latent_dim:
            raise ValueError(f"SparseVAE: obs_dim={obs_dim} < latent_dim={latent_dim}; every "
                             f"factor needs anchor features of its own, so obs_dim must be "
                             f">= latent_dim")
        if inclusion_b is None:
            inclusion_b = float(obs_dim)
        for name, value in [("spike_rate", spike_rate), ("slab_rate", slab_rate),
                            ("inclusion_a", inclusion_a), ("inclusion_b", inclusion_b),
                            ("sparsity_weight", sparsity_weight),
                            ("init_selection", init_selection)]:
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not 0 < value < math.inf):
                raise ValueError(f"SparseVAE: {name} must be a positive number, got {value!r}")
        if not spike_rate > slab_rate:
            raise ValueError(f"SparseVAE: spike_rate (lambda_0 = {spike_rate}) must exceed "
                             f"slab_rate (lambda_1 = {slab_rate}); the spike is the component "
                             f"that pulls weights to zero")
        if obs_dim < 2 * latent_dim:
            warnings.warn(f"SparseVAE: obs_dim={obs_dim} < 2 * latent_dim={2 * latent_dim}; "
                          f"identifiability needs two anchor features per factor",
                          IdentifiabilityWarning, stacklevel=2)
        self.spike_rate, self.slab_rate = float(spike_rate), float(slab_rate)
        self.inclusion_a, self.inclusion_b = float(inclusion_a), float(inclusion_b)
        self.sparsity_weight = float(sparsity_weight)
        jitter = 1.0 + 0.1 * (2 * torch.rand(obs_dim, latent_dim) - 1)
        self.selection_weights = PyroParam(init_selection * jitter,
                                           constraint=constraints.positive)
        self.inclusion = PyroParam(torch.full((latent_dim,), 0.5),
                                   constraint=constraints.unit_interval)

    # -- priors --------------------------------------------------------------------------
    def inclusion_prior(self) -> dist.TorchDistribution:
        """``p(eta)``: ``Beta(a, b)`` per factor, event shape ``(K,)``."""
        a = self.inclusion.new_full((self.latent_dim,), self.inclusion_a)
        return dist.Beta(a, torch.full_like(a, self.inclusion_b)).to_event(1)

    def selection_prior(self, inclusion: torch.Tensor) -> dist.TorchDistribution:
        """``p(W | eta)`` for ``eta`` of shape ``(K,)``: event shape ``(D, K)``."""
        inclusion = inclusion.expand(self.obs_dim, self.latent_dim)
        return SpikeAndSlabLasso(inclusion, self.spike_rate, self.slab_rate).to_event(2)

    def log_prior(self) -> torch.Tensor:
        r""":math:`\log p(W \mid \eta) + \log p(\eta)` at the point estimates (scalar)."""
        inclusion = self.inclusion
        return (self.selection_prior(inclusion).log_prob(self.selection_weights)
                + self.inclusion_prior().log_prob(inclusion))

    # -- decoder -------------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        r"""Mean of ``p(x | z)``: :math:`f_\theta(w_j \odot z)_j` for every feature j, with
        the Lipschitz-normalized decoder (class docstring). ``z: (..., N, K)`` ->
        ``(..., N, D)``."""
        hidden = z.unsqueeze(-2) * self.selection_weights  # (..., N, D, K): w_j * z
        *trunk, head = self.decoder
        for layer in trunk:
            if isinstance(layer, torch.nn.Linear):
                hidden = F.linear(hidden, _spectral_normalized(layer.weight), layer.bias)
            else:
                hidden = layer(hidden)
        head_weight = head.weight / head.weight.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # output j at input w_j * z, for every j at once: (..., N, D)
        return (hidden * head_weight).sum(-1) + head.bias

    # -- the Pyro programs ---------------------------------------------------------------
    def model(self, x, u=None, num_data=None):
        """Generative program: ``"z"``, ``"x"`` in plate ``"data"``, with the prior of the
        point estimates ``W, eta`` as the per-data-point factor ``"sparsity_prior"``."""
        penalty = self.sparsity_weight * self.log_prior()
        with self.data_plate(x.shape[0], num_data, x.device):
            pyro.factor("sparsity_prior", penalty.expand(x.shape[:1]))
            z = pyro.sample("z", self.prior(u, x))
            pyro.sample("x", dist.Normal(self.decode(z), self.obs_scale).to_event(1), obs=x)

    # -- fitted state --------------------------------------------------------------------
    @torch.no_grad()
    def selection(self) -> np.ndarray:
        """The fitted selection weights ``W``, ``(obs_dim, latent_dim)`` NumPy, all >= 0;
        ``W[j, k]`` bounds how strongly feature ``j`` depends on factor ``k``."""
        return self.selection_weights.detach().cpu().numpy()

    @torch.no_grad()
    def inclusion_probability(self) -> np.ndarray:
        r""":math:`P(\gamma_{jk} = 1 \mid w_{jk}, \eta_k)` at the fitted weights,
        ``(obs_dim, latent_dim)`` NumPy: the probability that feature ``j`` depends on factor
        ``k``. ``> 0.5`` is the selected support."""
        prior = self.selection_prior(self.inclusion).base_dist
        return prior.inclusion_probability(self.selection_weights).cpu().numpy()
