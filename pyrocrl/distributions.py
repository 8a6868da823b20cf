r"""Pyro distributions that pyrocrl's models and simulators share, usable in your own models.

:class:`LinearSEM` is the Gaussian linear structural equation model

.. math::

    z_j = \sum_i W_{ij} z_i + b_j + s_j \varepsilon_j, \qquad \varepsilon \sim \mathcal N(0, I),

i.e. :math:`(I - W^\top) z = b + s \odot \varepsilon`, whose exact density is

.. math::

    \log p(z) = \sum_j \log \mathcal N\big(z_j - (z W)_j - b_j;\, 0, s_j^2\big)
                + \log \lvert \det(I - W) \rvert .

For a DAG (``W`` nilpotent) the determinant is 1 and this is the product of the mechanisms;
for any ``W`` with :math:`I - W` invertible it is still a normalised Gaussian, so a model can
learn ``W`` by gradient descent without leaving the family while an acyclicity penalty pushes
it towards a DAG.

:class:`SpikeAndSlabLasso` is the spike-and-slab lasso prior on nonnegative weights (Ročková &
George 2018) with the selection indicator summed out, the prior of
:class:`pyrocrl.models.SparseVAE`'s factor-selection weights.

:class:`TransitionPrior` is the nonparametric latent-dynamics prior of TDRL/LEAP (seed 003),
the prior of :class:`pyrocrl.models.TemporalVAE`, over whole sequences :math:`z_{1:T}`.
"""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import broadcast_all

__all__ = ["STATE_SPACE_MATRICES", "LinearSEM", "SpikeAndSlabLasso", "TransitionPrior",
           "check_state_space_matrices"]


class LinearSEM(TorchDistribution):
    r"""Gaussian linear SEM over ``n`` variables (see the module docstring).

    Args:
        weights: ``(..., n, n)``, ``weights[..., i, j]`` the effect of ``z_i`` on ``z_j``.
        bias: ``(..., n)`` intercepts :math:`b`.
        scale: ``(..., n)`` positive noise scales :math:`s`.
        log_abs_det: optional, :math:`\log|\det(I - W)|` of each batch element when the caller
            has it cheaper than one determinant per element — e.g. a model with one ``W`` per
            environment gathers ``E`` determinants for a batch of points from ``E``
            environments (``log_abs_det[..., i] = logdet_env[u[i]]``) instead of computing
            ``N``. It must match ``weights`` (not checked); ``None`` computes it.
    """

    arg_constraints = {"bias": constraints.real_vector, "scale": constraints.independent(
        constraints.positive, 1)}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, weights: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor,
                 validate_args=None, log_abs_det: torch.Tensor | None = None):
        if weights.dim() < 2 or weights.shape[-1] != weights.shape[-2]:
            raise ValueError(f"LinearSEM: weights must have shape (..., n, n), got "
                             f"{tuple(weights.shape)}")
        n = weights.shape[-1]
        bias, scale = broadcast_all(bias, scale)
        if bias.shape[-1] != n:
            raise ValueError(f"LinearSEM: bias and scale must end in n={n}, got "
                             f"{tuple(bias.shape)}")
        batch_shape = torch.broadcast_shapes(weights.shape[:-2], bias.shape[:-1])
        self.weights = weights.expand(batch_shape + (n, n))
        self.bias = bias.expand(batch_shape + (n,))
        self.scale = scale.expand(batch_shape + (n,))
        self.log_abs_det = None if log_abs_det is None else log_abs_det.expand(batch_shape)
        super().__init__(batch_shape, torch.Size([n]), validate_args=validate_args)

    def _identity_minus_weights(self) -> torch.Tensor:
        n = self.weights.shape[-1]
        return torch.eye(n, dtype=self.weights.dtype, device=self.weights.device) - self.weights

    def rsample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.bias.dtype, device=self.bias.device)
        rhs = (self.bias + self.scale * eps).unsqueeze(-1)
        system = self._identity_minus_weights().transpose(-1, -2)
        n = shape[-1]
        return torch.linalg.solve(system.expand(shape[:-1] + (n, n)), rhs).squeeze(-1)

    def residuals(self, value: torch.Tensor) -> torch.Tensor:
        """:math:`z - zW - b`, the scaled noise of each variable."""
        return value - (value.unsqueeze(-2) @ self.weights).squeeze(-2) - self.bias

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        r = self.residuals(value) / self.scale
        log_normal = -0.5 * r.pow(2) - self.scale.log() - 0.5 * torch.log(
            torch.tensor(2 * torch.pi, dtype=r.dtype, device=r.device))
        logdet = self.log_abs_det
        if logdet is None:
            logdet = torch.linalg.slogdet(self._identity_minus_weights()).logabsdet
        return log_normal.sum(-1) + logdet

    @property
    def covariance_matrix(self) -> torch.Tensor:
        inv = torch.linalg.inv(self._identity_minus_weights())  # (I - W)^{-1}
        return inv.transpose(-1, -2) @ torch.diag_embed(self.scale**2) @ inv

    @property
    def mean(self) -> torch.Tensor:
        system = self._identity_minus_weights().transpose(-1, -2)
        return torch.linalg.solve(system, self.bias.unsqueeze(-1)).squeeze(-1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        n = self.event_shape[0]
        return LinearSEM(self.weights.expand(batch_shape + (n, n)),
                         self.bias.expand(batch_shape + (n,)),
                         self.scale.expand(batch_shape + (n,)), validate_args=False,
                         log_abs_det=(None if self.log_abs_det is None
                                      else self.log_abs_det.expand(batch_shape)))


class SpikeAndSlabLasso(dist.TorchDistribution):
    r"""Spike-and-slab lasso on nonnegative weights, the selection variable summed out.

    .. math::
        p(w \mid \eta) = \eta\, \lambda_1 e^{-\lambda_1 w}
                         + (1 - \eta)\, \lambda_0 e^{-\lambda_0 w},\qquad w \ge 0,

    the marginal of :math:`\gamma \sim \operatorname{Bernoulli}(\eta)`,
    :math:`w \mid \gamma \sim \operatorname{Exponential}(\gamma \lambda_1 + (1 - \gamma)
    \lambda_0)` with slab rate :math:`\lambda_1` (small: weights that are in) and spike rate
    :math:`\lambda_0 > \lambda_1` (large: weights that are out). Element-wise; batch shape
    is the broadcast shape of the arguments.

    Args:
        inclusion: :math:`\eta \in [0, 1]`, the prior probability that a weight is in.
        spike_rate: :math:`\lambda_0 > 0`.
        slab_rate: :math:`\lambda_1 > 0`.

    References:
        1. Ročková & George, "The Spike-and-Slab LASSO", JASA 2018.
    """

    arg_constraints = {"inclusion": constraints.unit_interval,
                       "spike_rate": constraints.positive,
                       "slab_rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = False

    def __init__(self, inclusion, spike_rate, slab_rate, validate_args=None):
        self.inclusion, self.spike_rate, self.slab_rate = broadcast_all(inclusion, spike_rate,
                                                                        slab_rate)
        super().__init__(self.inclusion.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SpikeAndSlabLasso, _instance)
        batch_shape = torch.Size(batch_shape)
        new.inclusion = self.inclusion.expand(batch_shape)
        new.spike_rate = self.spike_rate.expand(batch_shape)
        new.slab_rate = self.slab_rate.expand(batch_shape)
        super(SpikeAndSlabLasso, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def component_log_probs(self, value):
        """``(log eta + log slab(w), log(1 - eta) + log spike(w))``, each of the batch shape."""
        slab = torch.log(self.inclusion) + torch.log(self.slab_rate) - self.slab_rate * value
        spike = torch.log1p(-self.inclusion) + torch.log(self.spike_rate) \
            - self.spike_rate * value
        return slab, spike

    def inclusion_probability(self, value):
        r""":math:`P(\gamma = 1 \mid w, \eta)`: the E-step of Moran et al.'s EM."""
        slab, spike = self.component_log_probs(value)
        return torch.sigmoid(slab - spike)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        slab, spike = self.component_log_probs(value)
        return torch.logaddexp(slab, spike)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            included = torch.bernoulli(self.inclusion.expand(shape))
            rate = included * self.slab_rate + (1 - included) * self.spike_rate
            return torch.empty(shape, dtype=rate.dtype, device=rate.device).exponential_() / rate


class TransitionPrior(TorchDistribution):
    r"""Density of latent sequences under a learned, component-wise inverse transition.

    .. math::
        \log p(z_{1:T} \mid u) = \sum_{t=1}^{L} \log \mathcal N(z_t; 0, I)
            + \sum_{t=L+1}^{T} \sum_{i=1}^{n} \Big[\log p_\epsilon(\epsilon_{t,i})
            + \log \Big|\frac{\partial \epsilon_{t,i}}{\partial z_{t,i}}\Big|\Big],
        \qquad \epsilon_t = r(z_t;\ z_{t-L:t-1}, u),\quad p_\epsilon = \mathcal N(0, 1),

    the change of variables of :math:`z_t = f(z_{t-L:t-1}, u, \epsilon_t)` with independent
    noise (TDRL/LEAP's nonparametric prior). The domain :math:`u` enters through :math:`r`, so
    noise scales and transition functions may change by domain.

    Args:
        transition: a :class:`pyrocrl.nn.MonotoneInverseTransition` (or any module with
            ``forward(z, context, u) -> (eps, log_abs_det)``, ``lag``, ``latent_dim`` and, for
            :meth:`sample`, ``inverse(eps, context, u)``).
        u: ``(N,)`` long domain indices, or ``None`` for a stationary transition.
        seq_len: T, which must exceed the transition's lag.
        batch_shape: defaults to ``u``'s shape, or ``()`` without ``u``.

    Event shape ``(T, n)``. :meth:`sample` draws forward in time (no gradient). Use it in your
    own models: ``pyro.sample("z", TransitionPrior(module, u, T))`` inside a data plate.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = False

    def __init__(self, transition, u: torch.Tensor | None, seq_len: int,
                 batch_shape=None, validate_args=None):
        lag = transition.lag
        if isinstance(seq_len, torch.Tensor) and seq_len.ndim == 0 and torch.jit.is_tracing():
            seq_len = int(seq_len)  # a size read under torch.jit.trace (fit_svi(jit=True))
        if not isinstance(seq_len, int) or seq_len <= lag:
            raise ValueError(f"TransitionPrior: seq_len must be an int greater than the lag "
                             f"{lag}, got {seq_len!r}")
        self.transition, self.u, self.seq_len, self.lag = transition, u, seq_len, lag
        if batch_shape is None:
            batch_shape = u.shape if u is not None else torch.Size()
        super().__init__(torch.Size(batch_shape), torch.Size([seq_len, transition.latent_dim]),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        u = None if self.u is None else self.u.expand(batch_shape)
        return TransitionPrior(self.transition, u, self.seq_len, batch_shape,
                               validate_args=False)

    def transition_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(z_t | z_{t-L:t-1}, u)`` per step ``t > L``: shape ``(..., T - L)``."""
        lag = self.lag
        windows = value.unfold(-2, lag + 1, 1).transpose(-1, -2)  # (..., T-L, L+1, n)
        context, current = windows[..., :lag, :], windows[..., lag, :]
        u = None if self.u is None else self.u.unsqueeze(-1).expand(current.shape[:-1])
        eps, log_det = self.transition(current, context, u)
        return (dist.Normal(0.0, 1.0).log_prob(eps) + log_det).sum(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        initial = dist.Normal(0.0, 1.0).log_prob(value[..., :self.lag, :]).sum((-1, -2))
        return initial + self.transition_log_prob(value).sum(-1)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        device = next(self.transition.parameters()).device
        dtype = next(self.transition.parameters()).dtype
        z = torch.randn(shape, device=device, dtype=dtype)
        u = None if self.u is None else self.u.expand(shape[:-2])
        for t in range(self.lag, self.seq_len):
            z[..., t, :] = self.transition.inverse(z[..., t, :], z[..., t - self.lag:t, :], u)
        return z


#: The matrices of a linear-Gaussian state-space model, in the order of
#: :func:`pyrocrl.simulate.linear_gaussian`'s ``info`` and
#: :class:`pyrocrl.models.LinearGaussianSSM`'s arguments, with their shapes.
STATE_SPACE_MATRICES = {
    "transition_matrix": ("state_dim", "state_dim"),
    "transition_cov": ("state_dim", "state_dim"),
    "observation_matrix": ("obs_dim", "state_dim"),
    "observation_cov": ("obs_dim", "obs_dim"),
    "initial_mean": ("state_dim",),
    "initial_cov": ("state_dim", "state_dim"),
}


def check_state_space_matrices(owner: str, state_dim: int, obs_dim: int,
                               **matrices) -> dict[str, torch.Tensor]:
    """Validate the given state-space matrices (see :data:`STATE_SPACE_MATRICES`): each must
    be an array of numbers of the stated shape, finite, and, for the ``*_cov`` ones,
    symmetric positive definite. Returns them as float64 tensors (covariances symmetrized);
    raises ``ValueError`` naming ``owner`` and the argument otherwise."""
    unknown = sorted(set(matrices) - set(STATE_SPACE_MATRICES))
    if unknown:
        raise ValueError(f"{owner}: unknown matrix argument(s) {unknown}; the matrices are "
                         f"{list(STATE_SPACE_MATRICES)}")
    sizes = {"state_dim": state_dim, "obs_dim": obs_dim}
    checked = {}
    for name, value in matrices.items():
        dims = STATE_SPACE_MATRICES[name]
        shape = tuple(sizes[d] for d in dims)
        try:
            tensor = torch.as_tensor(value.detach().cpu() if isinstance(value, torch.Tensor)
                                     else np.asarray(value), dtype=torch.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{owner}: {name} must be an array of numbers, got "
                             f"{type(value).__name__} ({error})") from None
        if tuple(tensor.shape) != shape:
            names = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
            raise ValueError(f"{owner}: {name} must have shape {names} = {shape}, "
                             f"got {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{owner}: {name} contains NaN/inf values")
        if name.endswith("_cov"):
            if not torch.allclose(tensor, tensor.T, rtol=1e-6, atol=1e-10):
                asymmetry = float((tensor - tensor.T).abs().max())
                raise ValueError(f"{owner}: {name} must be symmetric, got a matrix with "
                                 f"max |{name} - {name}.T| = {asymmetry:.3g}")
            tensor = 0.5 * (tensor + tensor.T)
            smallest = float(torch.linalg.eigvalsh(tensor).min())
            if not smallest > 0:
                raise ValueError(f"{owner}: {name} must be positive definite, got smallest "
                                 f"eigenvalue {smallest:.3g}")
        checked[name] = tensor
    return checked
