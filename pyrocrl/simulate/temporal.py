"""Nonstationary latent dynamical systems: the temporal settings of TDRL and LEAP (seeds 000,
001, 003), where identifiability comes from how the transition density ``p(z_t | z_{<t}, u)``
varies with the history and across domains."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from pyrocrl.simulate._random import seeded
from pyrocrl.simulate.dataset import Dataset
from pyrocrl.simulate.mixing import mix

SETTINGS = ("fixed", "change", "modular", "noise_regimes")

#: The history modulation of the noise scale lies in ``(NOISE_FLOOR, 2 - NOISE_FLOOR)`` times
#: the base scale (it equals the base scale for a zero history).
NOISE_FLOOR = 0.2

_DEFAULT_NOISE_RANGE = {
    "fixed": (0.5, 1.0),
    "change": (0.1, 1.0),
    "modular": (0.1, 1.0),
    "noise_regimes": (0.1, 1.0),
}


class TemporalProcess:
    r"""Ground-truth lag-:math:`L` latent transition process with domain-dependent parameters.

    For a sequence in domain :math:`u` with history :math:`h_t = (z_{t-L}, \dots, z_{t-1})`

    .. math::
        z_t = \mathrm{LeakyReLU}_\alpha\Big(\sum_{l=1}^{L} B^{(u)}_l z_{t-l}\Big) + m_u
              + \sigma^{(u)}(h_t) \odot \epsilon_t,\qquad \epsilon_t \sim \mathcal N(0, I),

    so :math:`p(z_t \mid h_t, u) = \prod_i \mathcal N\big(z_{t,i};\ \mu^{(u)}_i(h_t),\
    \sigma^{(u)}_i(h_t)^2\big)` with :math:`\mu^{(u)}(h_t)` the first two terms; the
    noise mean :math:`m_u` is zero unless ``noise_loc`` is given. The noise scale is either
    history-free, :math:`\sigma^{(u)}_i(h) = s_{u,i}`, or, when ``noise_weights`` is given,
    modulated by the history through a smooth positive bounded function

    .. math::
        \sigma^{(u)}_i(h) = s_{u,i}\Big(\rho + 2(1 - \rho)\,
        \mathrm{sigmoid}\Big(\sum_{l=1}^{L} A^{(u)}_l z_{t-l}\Big)_i\Big),
        \qquad \rho = \texttt{NOISE\_FLOOR} = 0.2.

    Optionally (the TDRL "modular" setting) the process also carries observation-level
    latents :math:`s_t \in \mathbb R^m`, i.i.d. over time given the domain:
    :math:`s_{t,j} \mid u \sim \mathcal N(\nu_{u,j}, \tau_{u,j}^2)`.

    Args:
        weights: ``(K, L, n, n)`` transition matrices; ``weights[u, l - 1]`` is
            :math:`B^{(u)}_l`, the effect of :math:`z_{t-l}`.
        scale: ``(K, n)`` base noise scales :math:`s_{u,i}`.
        noise_weights: ``(K, L, n, n)`` matrices :math:`A^{(u)}_l` of the history modulation,
            or ``None`` for history-free noise.
        negative_slope: :math:`\alpha`, the slope of the transition's leaky ReLU.
        noise_loc: ``(K, n)`` noise means :math:`m_{u}`, or ``None`` for zero.
        observation_loc: ``(K, m)`` means :math:`\nu_{u,j}` of the observation-level
            latents, or ``None`` (no such latents).
        observation_scale: ``(K, m)`` their standard deviations :math:`\tau_{u,j}`.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        scale: torch.Tensor,
        noise_weights: torch.Tensor | None = None,
        negative_slope: float = 0.2,
        observation_loc: torch.Tensor | None = None,
        observation_scale: torch.Tensor | None = None,
        noise_loc: torch.Tensor | None = None,
    ):
        if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
            raise ValueError(f"TemporalProcess: weights must have shape (K, L, n, n), "
                             f"got {tuple(weights.shape)}")
        num_domains, _, n, _ = weights.shape
        if scale.shape != (num_domains, n):
            raise ValueError(f"TemporalProcess: scale must have shape ({num_domains}, {n}), "
                             f"got {tuple(scale.shape)}")
        if noise_weights is not None and noise_weights.shape != weights.shape:
            raise ValueError(f"TemporalProcess: noise_weights must have shape "
                             f"{tuple(weights.shape)}, got {tuple(noise_weights.shape)}")
        if noise_loc is not None and noise_loc.shape != scale.shape:
            raise ValueError(f"TemporalProcess: noise_loc must have shape {tuple(scale.shape)}, "
                             f"got {tuple(noise_loc.shape)}")
        if (observation_loc is None) != (observation_scale is None):
            raise ValueError("TemporalProcess: give both observation_loc and observation_scale "
                             "or neither")
        if observation_loc is not None and (
            observation_loc.dim() != 2 or observation_loc.shape[0] != num_domains
            or observation_scale.shape != observation_loc.shape
        ):
            raise ValueError(f"TemporalProcess: observation_loc and observation_scale must "
                             f"both have shape ({num_domains}, m), got "
                             f"{tuple(observation_loc.shape)} and "
                             f"{tuple(observation_scale.shape)}")
        self.weights, self.scale, self.noise_weights = weights, scale, noise_weights
        self.noise_loc = noise_loc
        self.negative_slope = negative_slope
        self.observation_loc, self.observation_scale = observation_loc, observation_scale

    # ------------------------------------------------------------------ sizes
    @property
    def num_domains(self) -> int:
        return self.weights.shape[0]

    @property
    def lag(self) -> int:
        return self.weights.shape[1]

    @property
    def num_latents(self) -> int:
        """n, the number of dynamic latents."""
        return self.weights.shape[-1]

    @property
    def num_observation_latents(self) -> int:
        """m, the number of observation-level (time-i.i.d.) latents (0 if none)."""
        return 0 if self.observation_loc is None else self.observation_loc.shape[1]

    # ------------------------------------------------------------------ density
    def _check(self, u: torch.Tensor, context: torch.Tensor) -> None:
        if context.dim() != 3 or context.shape[1:] != (self.lag, self.num_latents):
            raise ValueError(f"TemporalProcess: context must have shape (P, {self.lag}, "
                             f"{self.num_latents}), got {tuple(context.shape)}")
        if u.shape != context.shape[:1]:
            raise ValueError(f"TemporalProcess: u must have shape ({context.shape[0]},), "
                             f"got {tuple(u.shape)}")
        if u.numel() and (int(u.min()) < 0 or int(u.max()) >= self.num_domains):
            raise ValueError(f"TemporalProcess: u must lie in [0, {self.num_domains}), "
                             f"got values in [{int(u.min())}, {int(u.max())}]")

    @staticmethod
    def _lagged(matrices: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``sum_l M_l z_{t-l}`` for per-sample ``matrices (P, L, n, n)`` (lag order) and
        ``context (P, L, n)`` (oldest -> newest)."""
        return torch.einsum("plij,plj->pi", matrices.to(context), context.flip(1))

    def _loc_scale(self, params, context):
        weights, scale, noise_weights, noise_loc = params
        loc = F.leaky_relu(self._lagged(weights, context), self.negative_slope)
        if noise_loc is not None:
            loc = loc + noise_loc.to(context)
        scale = scale.to(context)
        if noise_weights is not None:
            gate = torch.sigmoid(self._lagged(noise_weights, context))
            scale = scale * (NOISE_FLOOR + 2.0 * (1.0 - NOISE_FLOOR) * gate)
        return loc, scale

    def _params(self, u: torch.Tensor):
        u = u.to(self.weights.device)  # the parameters may live elsewhere than the data
        return (self.weights[u], self.scale[u],
                None if self.noise_weights is None else self.noise_weights[u],
                None if self.noise_loc is None else self.noise_loc[u])

    def transition(self, u: torch.Tensor, context: torch.Tensor) -> dist.TorchDistribution:
        """``p(z_t | history, u)``: batch shape ``(P,)``, event shape ``(n,)``, for
        ``u: (P,)`` and ``context: (P, L, n)`` ordered oldest -> newest."""
        self._check(u, context)
        loc, scale = self._loc_scale(self._params(u), context)
        return dist.Normal(loc, scale).to_event(1)

    def conditional_log_prob(
        self, z: torch.Tensor, u: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""True :math:`\log p(z_t \mid z_{t-L}, \dots, z_{t-1}, u)` of the dynamic latents.

        Differentiable (any number of times) with respect to ``z`` and ``context``.

        Args:
            z: ``(P, n)`` current latents :math:`z_t`.
            u: ``(P,)`` long domain indices.
            context: ``(P, L, n)`` history :math:`(z_{t-L}, \dots, z_{t-1})`, oldest first
                (required; the ``None`` default only exists for the shared protocol of
                :mod:`pyrocrl.diagnostics.variability`, where i.i.d. densities take none).

        Returns:
            ``(P,)`` log densities.
        """
        if context is None:
            raise ValueError(f"TemporalProcess: context is required: the (P, {self.lag}, "
                             f"{self.num_latents}) history of each point, oldest first")
        if z.dim() != 2 or z.shape != (context.shape[0], self.num_latents):
            raise ValueError(f"TemporalProcess: z must have shape ({context.shape[0]}, "
                             f"{self.num_latents}), got {tuple(z.shape)}")
        return self.transition(u, context).log_prob(z)

    def log_prob(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r"""Log density of whole sequences given their first ``lag`` steps,

        .. math::
            \sum_{t=L+1}^{T} \log p(z_t \mid z_{t-L:t-1}, u)
            \ \Big(+ \sum_{t=1}^{T} \log p(s_t \mid u)\Big),

        i.e. the sum of :meth:`conditional_log_prob` over the time steps that have a full
        history (0-based indices ``lag, ..., T - 1``). The first ``lag`` steps are not
        scored: with a burn-in their marginal has no closed form.

        Args:
            z: ``(N, T, n)`` dynamic latents, or ``(N, T, n + m)`` with the observation-level
                latents in the last ``m`` columns (as returned in ``Dataset.z``), whose
                log density is then added for every step.
            u: ``(N,)`` long domain indices.

        Returns:
            ``(N,)`` log densities.
        """
        n, m, L = self.num_latents, self.num_observation_latents, self.lag
        if z.dim() != 3 or z.shape[-1] not in (n, n + m) or z.shape[1] <= L:
            raise ValueError(f"TemporalProcess: z must have shape (N, T > {L}, {n}) or "
                             f"(N, T, {n + m}), got {tuple(z.shape)}")
        N, T = z.shape[:2]
        dyn = z[..., :n]
        windows = dyn.unfold(1, L, 1)[:, : T - L]  # (N, T - L, n, L): z[t-L:t] for t >= L
        context = windows.permute(0, 1, 3, 2).reshape(N * (T - L), L, n)
        current = dyn[:, L:].reshape(N * (T - L), n)
        uu = u.repeat_interleave(T - L)
        out = self.conditional_log_prob(current, uu, context).reshape(N, T - L).sum(1)
        if m and z.shape[-1] == n + m:
            out = out + self.observation_distribution(u).log_prob(z[..., n:]).sum(-1)
        return out

    def observation_distribution(self, u: torch.Tensor) -> dist.TorchDistribution:
        """``p(s_t | u)`` of the observation-level latents: batch ``(N, 1)``, event
        ``(m,)`` (broadcasts over time)."""
        if self.observation_loc is None:
            raise ValueError("TemporalProcess: this process has no observation-level latents")
        return dist.Normal(self.observation_loc[u][:, None],
                           self.observation_scale[u][:, None]).to_event(1)

    # ------------------------------------------------------------------ sampling
    def model(self, u: torch.Tensor, seq_len: int, burn_in: int = 0) -> torch.Tensor:
        r"""The Pyro program. Simulates ``burn_in + seq_len`` steps per sequence: the first
        ``lag`` from :math:`\mathcal N(0, I)` (site ``"z_init"``), every later step ``k``
        from the transition (site ``"z_{k}"``, ``k`` counting from the start of the burn-in),
        all inside plate ``"data"`` over sequences; the observation-level latents, if any,
        are site ``"s"``. Returns the last ``seq_len`` steps, ``(N, seq_len, n + m)``."""
        N, n, L = u.shape[0], self.num_latents, self.lag
        total = burn_in + seq_len
        params = self._params(u)
        with pyro.plate("data", N):
            init = pyro.sample("z_init", dist.Normal(torch.zeros(N, L, n), 1.0).to_event(2))
            steps = list(init.unbind(1))
            for k in range(L, total):
                context = torch.stack(steps[-L:], dim=1)
                loc, scale = self._loc_scale(params, context)
                steps.append(pyro.sample(f"z_{k}", dist.Normal(loc, scale).to_event(1)))
            z = torch.stack(steps[burn_in:], dim=1)
            if self.num_observation_latents:
                s = pyro.sample("s", dist.Normal(
                    self.observation_loc[u][:, None].expand(N, seq_len, -1),
                    self.observation_scale[u][:, None].expand(N, seq_len, -1)).to_event(2))
                z = torch.cat([z, s], dim=-1)
        return z

    def sample(self, u: torch.Tensor, seq_len: int, burn_in: int = 0) -> torch.Tensor:
        """Draw sequences without recording a trace: ``(N, seq_len, n + m)``."""
        with torch.no_grad():
            return self.model(u, seq_len, burn_in)


def _screened(rng: np.random.Generator, count: int, n: int, quantile: float = 0.25):
    """``count`` Gaussian ``n x n`` matrices whose condition numbers lie below the
    ``quantile`` of such matrices' condition numbers (one threshold, then rejection)."""
    threshold = np.quantile(np.linalg.cond(rng.standard_normal((1000, n, n))), quantile)
    out = []
    while len(out) < count:
        w = rng.standard_normal((n, n))
        if np.linalg.cond(w) <= threshold:
            out.append(w)
    return np.stack(out) if out else np.zeros((0, n, n))


def _transition_weights(rng, num_sets: int, lag: int, n: int, gain: float) -> np.ndarray:
    """``(num_sets, lag, n, n)`` condition-screened matrices with spectral norms
    ``gain * 2^{-(l-1)} / sum_l 2^{-(l-1)}``: they sum to ``gain < 1`` over the lags, which
    makes the transition mean a contraction (the leaky ReLU is 1-Lipschitz)."""
    w = _screened(rng, num_sets * lag, n).reshape(num_sets, lag, n, n)
    share = 0.5 ** np.arange(lag)
    target = gain * share / share.sum()
    norms = np.linalg.norm(w, ord=2, axis=(-2, -1))[..., None, None]
    return w / norms * target[None, :, None, None]


def _balanced_domains(num_sequences: int, num_domains: int) -> torch.Tensor:
    """Sorted domain labels whose counts differ by at most one."""
    return (torch.arange(num_sequences) * num_domains) // num_sequences


def _check_int(fn: str, name: str, value, low: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{fn}: {name} must be an int >= {low}, got {value!r}")


def nonstationary_temporal(
    num_latents: int = 8,
    lag: int = 2,
    num_domains: int = 1,
    num_sequences: int = 2000,
    seq_len: int = 10,
    obs_dim: int | None = None,
    setting: str = "fixed",
    seed: int = 0,
    burn_in: int = 50,
    transition_gain: float = 0.9,
    noise_range: tuple[float, float] | None = None,
    noise_mean_range: tuple[float, float] | None = None,
    history_noise: bool | None = None,
    modulation_strength: float = 2.0,
    num_observation_latents: int | None = None,
    observation_mean_range: tuple[float, float] = (-1.0, 1.0),
    observation_scale_range: tuple[float, float] = (0.3, 1.0),
    mixing: str = "leaky_mlp",
    mixing_layers: int = 3,
    mixing_weights: str = "orthogonal",
    negative_slope: float = 0.2,
    observation_noise: float = 0.0,
    standardize: bool = True,
) -> Dataset:
    r"""Sequences from a nonstationary nonlinear latent process, mixed frame by frame by an
    injective leaky-ReLU MLP: the TDRL / LEAP synthetic settings (benchmarks B3-B5).

    Every sequence belongs to one domain :math:`u` (balanced, sorted). Its dynamic latents
    follow (see :class:`TemporalProcess`)

    .. math::
        z_t = \mathrm{LeakyReLU}_{0.2}\Big(\sum_{l=1}^{L} B^{(u)}_l z_{t-l}\Big)
              + \sigma^{(u)}(z_{t-L:t-1}) \odot \epsilon_t,\qquad
        \epsilon_t \sim \mathcal N(0, I),\qquad x_t = g(z_t)\ (+\ \nu_t),

    with :math:`g` the same mixing at every step and :math:`\nu_t \sim \mathcal N(0,
    \texttt{observation\_noise}^2 I)`. The :math:`B_l` are Gaussian, condition-number
    screened (25% quantile) and rescaled so that their spectral norms sum to
    ``transition_gain`` < 1 (halving from one lag to the next): the mean map is then a
    contraction and the process is stationary with bounded moments. Base noise scales
    :math:`s_{u,i}` are drawn uniformly from ``noise_range`` (log-uniformly for
    ``"noise_regimes"``), and noise means :math:`m_{u,i}` from ``noise_mean_range`` if it
    is given (zero otherwise; the :math:`+ m_u` term is omitted above). The settings:

    * ``"fixed"`` (TDRL fixed, B3): one domain; history-modulated noise
      :math:`\sigma_i(h) = s_i(0.2 + 1.6\,\mathrm{sigmoid}(\sum_l A_l z_{t-l})_i)`.
    * ``"change"`` (TDRL change, B4): :math:`B^{(u)}_l` and :math:`s_{u,i}` drawn
      independently per domain; history-free noise unless ``history_noise=True``.
    * ``"modular"``: ``"change"`` dynamics plus ``m = num_observation_latents``
      observation-level latents :math:`s_t`, i.i.d. over time,
      :math:`s_{t,j} \mid u \sim \mathcal N(\nu_{u,j}, \tau_{u,j}^2)`, with
      :math:`\nu_{u,j}` uniform in ``observation_mean_range`` and :math:`\tau_{u,j}`
      uniform in ``observation_scale_range``; the mixing sees :math:`(z_t, s_t)`.
    * ``"noise_regimes"`` (LEAP / B5's sufficient-variability curve): one transition
      :math:`B_l` shared by all sequences, history-free noise whose scales
      :math:`s_{u,i}` are drawn log-uniformly from ``noise_range`` per regime;
      ``num_domains=1`` is the stationary case. With scales alone the changes across
      regimes have rank n, not 2n (see ``noise_mean_range``), so
      :func:`pyrocrl.diagnostics.sufficient_variability` reports the condition failing
      for any K; add ``noise_mean_range=(-1, 1)`` for a process that meets it at
      K >= 2n + 1.

    Each sequence simulates ``burn_in + seq_len`` steps starting from
    :math:`z_1, \dots, z_L \sim \mathcal N(0, I)` and keeps the last ``seq_len``, so with
    ``burn_in >= lag`` every returned step comes from the dynamics (close to stationarity
    for the default 50). The true density of interest is the transition
    ``info["process"].conditional_log_prob``; ``info["process"].log_prob`` scores whole
    sequences from step ``lag + 1`` on.

    Args:
        num_latents: n, the number of dynamic latents.
        lag: L >= 1, the order of the transition.
        num_domains: K, the number of domains / noise regimes (must be 1 for ``"fixed"``).
        num_sequences: N >= K sequences; domain counts differ by at most one.
        seq_len: T > lag, steps per sequence.
        obs_dim: D >= n + m (defaults to n + m).
        setting: ``"fixed"``, ``"change"``, ``"modular"`` or ``"noise_regimes"``.
        seed: fixes everything: transition and noise parameters, mixing, samples.
        burn_in: steps simulated and dropped before each returned sequence.
        transition_gain: sum over lags of the spectral norms of the :math:`B_l`, in (0, 1).
        noise_range: ``(low, high)`` range of the base noise scales :math:`s_{u,i}`;
            defaults to ``(0.5, 1.0)`` for ``"fixed"`` and ``(0.1, 1.0)`` otherwise.
        noise_mean_range: if given, every domain / regime also gets noise means
            :math:`m_{u,i}` uniform in this range (zero otherwise). Only scales changing
            across domains with Gaussian noise change :math:`\partial_{z}\log p` and
            :math:`\partial^2_{z}\log p` along one direction per latent (rank n), short of
            the 2n independent changes of TDRL/LEAP's sufficient-variability condition;
            shifting the means as well supplies the other n.
        history_noise: modulate the noise scale by the history; defaults to ``True`` for
            ``"fixed"`` and ``False`` otherwise.
        modulation_strength: standard deviation scale of the modulation weights
            :math:`A_l` (entries :math:`\mathcal N(0, \text{strength}^2 / (nL))`).
        num_observation_latents: m, observation-level latents (``"modular"`` only;
            defaults to 2 there and 0 otherwise).
        observation_mean_range: range of the per-domain means :math:`\nu_{u,j}`.
        observation_scale_range: range of the per-domain scales :math:`\tau_{u,j}`.
        mixing: a name in :data:`pyrocrl.simulate.MIXINGS`.
        mixing_layers: layers of the mixing MLP (1 = linear).
        mixing_weights: ``"orthogonal"`` (as in TDRL) or ``"condition"``.
        negative_slope: slope of the mixing's leaky ReLUs (the transition's is 0.2).
        observation_noise: standard deviation of additive Gaussian noise on ``x`` (in the
            units of the standardized ``x``).
        standardize: rescale the mixing's last layer so that every feature of the
            noise-free ``x`` has unit standard deviation over all ``N * T`` frames.

    Returns:
        :class:`Dataset` with ``x: (N, T, D)``, ``z: (N, T, n + m)`` (columns
        ``info["dynamic_dims"]`` = ``0..n-1`` are the dynamic latents, columns
        ``info["observation_dims"]`` = ``n..n+m-1`` the observation-level ones),
        ``u: (N,)`` sorted by domain, ``info["process"]`` (a :class:`TemporalProcess` with
        the true density), ``info["mixing"]`` (the true :math:`g`, applied to
        ``z[..., :]`` frame by frame) and every argument.
    """
    fn = "nonstationary_temporal"
    if setting not in SETTINGS:
        raise ValueError(f"{fn}: setting must be one of {SETTINGS}, got {setting!r}")
    _check_int(fn, "num_latents", num_latents, 1)
    _check_int(fn, "lag", lag, 1)
    _check_int(fn, "num_domains", num_domains, 1)
    _check_int(fn, "num_sequences", num_sequences, 1)
    _check_int(fn, "seq_len", seq_len, 1)
    _check_int(fn, "burn_in", burn_in, 0)
    if seq_len <= lag:
        raise ValueError(f"{fn}: seq_len must be > lag={lag}, got {seq_len}")
    if setting == "fixed" and num_domains != 1:
        raise ValueError(f"{fn}: num_domains must be 1 for setting='fixed' (a stationary "
                         f"process), got {num_domains}; use 'change' or 'noise_regimes'")
    if num_sequences < num_domains:
        raise ValueError(f"{fn}: num_sequences must be >= num_domains={num_domains} so "
                         f"every domain has a sequence, got {num_sequences}")
    if num_observation_latents is None:
        num_observation_latents = 2 if setting == "modular" else 0
    _check_int(fn, "num_observation_latents", num_observation_latents, 0)
    if num_observation_latents and setting != "modular":
        raise ValueError(f"{fn}: num_observation_latents must be 0 unless setting='modular', "
                         f"got {num_observation_latents}")
    total = num_latents + num_observation_latents
    obs_dim = total if obs_dim is None else obs_dim
    _check_int(fn, "obs_dim", obs_dim, 1)
    if obs_dim < total:
        raise ValueError(f"{fn}: obs_dim must be >= the number of latents {total} for an "
                         f"injective mixing, got {obs_dim}")
    _check_int(fn, "mixing_layers", mixing_layers, 1)
    if mixing_weights not in ("orthogonal", "condition"):
        raise ValueError(f"{fn}: mixing_weights must be 'orthogonal' or 'condition', "
                         f"got {mixing_weights!r}")
    if not 0.0 < transition_gain < 1.0:
        raise ValueError(f"{fn}: transition_gain must lie in (0, 1), got {transition_gain}")
    noise_range = _DEFAULT_NOISE_RANGE[setting] if noise_range is None else noise_range
    low, high = noise_range
    if not 0 < low <= high:
        raise ValueError(f"{fn}: noise_range must satisfy 0 < low <= high, got {noise_range}")
    for name, (a, b), positive in [("observation_mean_range", observation_mean_range, False),
                                   ("observation_scale_range", observation_scale_range, True)]:
        if not a <= b or (positive and a <= 0):
            raise ValueError(f"{fn}: {name} must satisfy {'0 < ' if positive else ''}"
                             f"low <= high, got {(a, b)}")
    if noise_mean_range is not None and not noise_mean_range[0] <= noise_mean_range[1]:
        raise ValueError(f"{fn}: noise_mean_range must satisfy low <= high, "
                         f"got {noise_mean_range}")
    if modulation_strength < 0:
        raise ValueError(f"{fn}: modulation_strength must be >= 0, got {modulation_strength}")
    if observation_noise < 0:
        raise ValueError(f"{fn}: observation_noise must be >= 0, got {observation_noise}")
    if history_noise is None:
        history_noise = setting == "fixed"

    K, L, n, m = num_domains, lag, num_latents, num_observation_latents
    per_domain = setting in ("change", "modular")
    with seeded(seed) as rng:
        weights = _transition_weights(rng, K if per_domain else 1, L, n, transition_gain)
        weights = np.broadcast_to(weights, (K, L, n, n))
        if setting == "noise_regimes":
            scale = np.exp(rng.uniform(np.log(low), np.log(high), size=(K, n)))
        elif per_domain:
            scale = rng.uniform(low, high, size=(K, n))
        else:
            scale = np.broadcast_to(rng.uniform(low, high, size=(1, n)), (K, n))
        noise_weights = None
        if history_noise:
            a = rng.standard_normal((K if per_domain else 1, L, n, n))
            a = a * modulation_strength / np.sqrt(n * L)
            noise_weights = torch.as_tensor(np.broadcast_to(a, (K, L, n, n)).copy(),
                                            dtype=torch.float32)
        noise_loc = None
        if noise_mean_range is not None:
            noise_loc = torch.as_tensor(rng.uniform(*noise_mean_range, size=(K, n)),
                                        dtype=torch.float32)
        obs_loc = obs_scale = None
        if m:
            obs_loc = torch.as_tensor(rng.uniform(*observation_mean_range, size=(K, m)),
                                      dtype=torch.float32)
            obs_scale = torch.as_tensor(rng.uniform(*observation_scale_range, size=(K, m)),
                                        dtype=torch.float32)
        process = TemporalProcess(
            torch.as_tensor(weights.copy(), dtype=torch.float32),
            torch.as_tensor(np.asarray(scale).copy(), dtype=torch.float32),
            noise_weights=noise_weights,
            negative_slope=0.2,
            observation_loc=obs_loc,
            observation_scale=obs_scale,
            noise_loc=noise_loc,
        )
        u = _balanced_domains(num_sequences, K)
        z = process.sample(u, seq_len, burn_in)
        x, g = mix(z.reshape(-1, total), mixing, obs_dim, seed, standardize, observation_noise,
                   num_layers=mixing_layers, weights=mixing_weights,
                   negative_slope=negative_slope)
        x = x.reshape(num_sequences, seq_len, obs_dim)
    info = dict(
        seed=seed, setting=setting, process=process, mixing=g, num_latents=n, lag=L,
        num_domains=K, num_sequences=num_sequences, seq_len=seq_len, obs_dim=obs_dim,
        burn_in=burn_in, transition_gain=transition_gain, noise_range=tuple(noise_range),
        noise_mean_range=noise_mean_range,
        history_noise=history_noise, modulation_strength=modulation_strength,
        num_observation_latents=m, observation_mean_range=observation_mean_range,
        observation_scale_range=observation_scale_range,
        dynamic_dims=list(range(n)), observation_dims=list(range(n, n + m)),
        mixing_name=mixing, mixing_layers=mixing_layers, mixing_weights=mixing_weights,
        negative_slope=negative_slope, observation_noise=observation_noise,
        standardize=standardize,
    )
    return Dataset(x=x, z=z, u=u, info=info)
