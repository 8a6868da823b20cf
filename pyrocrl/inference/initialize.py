"""Starting points the ELBO does not find by itself.

Deep nonlinear-ICA models fitted by SVI from a random initialisation end in local optima far
from the identifiable solution (``benchmarks/temporal_optimum.py`` measures the gap for
TemporalVAE; ``benchmarks/ivae.py`` compares random and linear starts for IVAE).
:func:`initialize_linear` replaces the random start by the best *linear* solution, which
needs no ground truth: the maximum-likelihood linear ICA of nonstationary Gaussian sources
(:func:`linear_ica`); it regresses the model's encoder onto those sources and its decoder
back onto the data. SVI then starts from an answer that is right up to the nonlinearity.
:func:`initialize_contrastive` goes further for models with environment-dependent priors: it
learns the nonlinear unmixing by classifying the environment, an objective with neither a
decoder nor a Jacobian, and starts the model there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from pyrocrl._checks import check_positive_int
from pyrocrl.diagnostics import mcc
from pyrocrl.inference._loop import check_training_args, train_minibatch
from pyrocrl.inference.svi import FitResult, NonFiniteLossError, _Batches
from pyrocrl.nn import SideBySide, mlp
from pyrocrl.nn.side_by_side import keep_copies


@dataclass
class LinearICA:
    """A fitted linear unmixing ``s = (x - mean) @ unmixing.T``: ``unmixing`` is
    ``(n, D)``, ``mean`` ``(D,)``; every source has unit variance on the fitted data. The
    order and signs of the sources are arbitrary."""

    unmixing: torch.Tensor
    mean: torch.Tensor
    nll: float  # the profiled negative log-likelihood per point at the optimum (nats)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Sources of ``x: (..., D)`` as ``(..., n)``."""
        return (x - self.mean.to(x)) @ self.unmixing.to(x).T


def _frames(x: torch.Tensor, u: torch.Tensor, caller: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as ``(M, D)`` frames and ``u`` as one domain per frame, with clear errors."""
    if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3) or not x.is_floating_point():
        raise ValueError(f"{caller}: x must be a float tensor (N, D) or (N, T, D), got "
                         f"{getattr(x, 'shape', type(x))}")
    if u is None:
        raise ValueError(f"{caller}: u (the domain of each row of x, shape ({x.shape[0]},)) is "
                         f"required: without domains the linear sources are not identifiable")
    if not isinstance(u, torch.Tensor) or u.shape != x.shape[:1] or u.is_floating_point():
        raise ValueError(f"{caller}: u must be an integer tensor of shape ({x.shape[0]},), "
                         f"got {getattr(u, 'shape', type(u))}")
    if x.ndim == 3:
        u = u.repeat_interleave(x.shape[1])
        x = x.reshape(-1, x.shape[-1])
    return x, u


def linear_ica(x: torch.Tensor, u: torch.Tensor, latent_dim: int | None = None,
               max_iter: int = 500, seed: int = 0) -> LinearICA:
    r"""Maximum-likelihood linear ICA of sources whose variances change across domains.

    Model: :math:`x = A s + \mu` with :math:`s_i \mid u \sim \mathcal N(m_{u,i},
    \sigma^2_{u,i})` independent. After PCA-whitening :math:`x` to ``latent_dim`` dimensions
    (:math:`\tilde x`), the unmixing :math:`W` maximises the log-likelihood with the domain
    means and variances profiled out (Pham & Cardoso 2001):

    .. math::
        \ell(W) = -\tfrac12 \sum_u \tfrac{N_u}{N} \sum_i \log (W C_u W^\top)_{ii}
        + \log\lvert\det W\rvert,

    where :math:`C_u` is the covariance of :math:`\tilde x` in domain :math:`u`. It is
    identifiable (up to order, sign and scale) when the variance profiles of any two sources
    differ across domains; mean changes alone carry no information here. L-BFGS from a
    seeded random rotation. Rows are rescaled so each source has unit variance.

    Args:
        x: ``(N, D)`` or ``(N, T, D)`` (frames pooled, each frame with its sequence's domain).
        u: ``(N,)`` integer domains.
        latent_dim: n <= D sources (default D).
        max_iter: L-BFGS iterations.
        seed: the random starting rotation.
    """
    x, u = _frames(x, u, "linear_ica")
    x = x.detach().to(torch.float64)
    dim = x.shape[-1]
    n = dim if latent_dim is None else latent_dim
    if not isinstance(n, int) or not 1 <= n <= dim:
        raise ValueError(f"linear_ica: latent_dim must be an int in [1, D={dim}], got "
                         f"{latent_dim!r}")
    mean = x.mean(0)
    evals, evecs = torch.linalg.eigh(torch.cov(x.T).reshape(dim, dim))
    if evals[-n] <= 1e-12 * evals[-1].clamp_min(1e-300):
        raise ValueError(f"linear_ica: x spans fewer than latent_dim={n} dimensions")
    whiten = (evecs[:, -n:] / evals[-n:].sqrt()).T  # (n, D)
    white = (x - mean) @ whiten.T
    domains, u = torch.unique(u, return_inverse=True)
    counts = torch.bincount(u).to(x.dtype)
    if len(domains) < 2:
        raise ValueError("linear_ica: u must take at least 2 values (one domain carries no "
                         "information about the rotation)")
    sums = torch.zeros(len(domains), n, dtype=x.dtype).index_add_(0, u, white)
    seg_mean = sums / counts[:, None]
    centred = white - seg_mean[u]
    # one (n, n) product per domain: memory O(N n), not the O(N n^2) of stacked outer products
    covs = torch.stack([c.T @ c for c in (centred[u == k] for k in range(len(domains)))])
    covs = covs / counts[:, None, None]
    weight = counts / counts.sum()

    generator = torch.Generator().manual_seed(seed)
    start = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=x.dtype))[0]
    w = start.contiguous().requires_grad_()
    optimizer = torch.optim.LBFGS([w], max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-12)

    def nll(w):
        var = torch.einsum("ij,kjl,il->ki", w, covs, w)
        return 0.5 * (weight[:, None] * var.log()).sum() - torch.linalg.slogdet(w)[1]

    def closure():
        optimizer.zero_grad()
        loss = nll(w)
        loss.backward()
        return loss

    optimizer.step(closure)
    w = w.detach()
    w = w / (w @ w.T).diagonal().sqrt()[:, None]  # unit variance on the whitened data
    unmixing = (w @ whiten).to(torch.float32)
    return LinearICA(unmixing=unmixing, mean=mean.to(torch.float32), nll=float(nll(w)))


def _require(model, names, caller: str, what: str) -> None:
    """A TypeError naming the first attribute of ``names`` that ``model`` lacks."""
    for name in names:
        if not hasattr(model, name):
            raise TypeError(f"{caller}: model must have {name!r} ({what}), "
                            f"{type(model).__name__} has not")


def initialize_at(model, x: torch.Tensor, u: torch.Tensor | None, z: torch.Tensor,
                  num_steps: int = 3000, batch_size: int = 256, learning_rate: float = 1e-3,
                  seed: int = 0, device: str | torch.device = "auto",
                  progress: bool = False) -> FitResult:
    r"""Start ``model``'s networks at the latents ``z``: Adam on minibatches of

    .. math::
        \lVert \mu_\phi(x, u) - z \rVert^2 + \lVert f_\theta(z) - x \rVert^2,

    so the encoder's posterior mean starts at ``z`` and the decoder at ``z``'s
    reconstruction of ``x``. ``z`` has ``x``'s leading shape and ``latent_dim`` last. With
    ``z`` from :func:`linear_ica` this is :func:`initialize_linear`; with the true latents it
    is an *oracle* start, for diagnosing optimization failures, never for fitting.

    ``model`` needs ``posterior(x, u) -> (loc, scale)``, ``decode(z)`` and ``latent_dim``
    (:class:`~pyrocrl.models.IVAE`, :class:`~pyrocrl.models.VAE`,
    :class:`~pyrocrl.models.TemporalVAE`, :class:`~pyrocrl.models.LatentCausalVAE`). Returns
    the regression's :class:`FitResult` (``losses``: the summed mean-squared errors).
    """
    _require(model, ("posterior", "decode", "latent_dim"), "initialize_at",
             "an encoder posterior(x, u), a decode(z) and latent_dim")
    check_training_args("initialize_at", num_steps, batch_size, learning_rate)
    expected = tuple(x.shape[:-1]) + (model.latent_dim,)
    if tuple(z.shape) != expected:
        raise ValueError(f"initialize_at: z must have shape {expected} (x's leading shape, "
                         f"latent_dim last), got {tuple(z.shape)}")
    z = z.detach().to(x.dtype)

    def loss_fn(batch, step):
        xb, zb = batch[0], batch[-1]
        ub = batch[1] if len(batch) == 3 else None
        mse_enc = (model.posterior(xb, ub)[0] - zb).pow(2).mean()
        mse_dec = (model.decode(zb) - xb).pow(2).mean()
        return mse_enc + mse_dec, {"encoder_mse": float(mse_enc.detach()),
                                   "decoder_mse": float(mse_dec.detach())}

    tensors = [x, z] if u is None else [x, u, z]
    was_training = model.training
    result = train_minibatch(model, loss_fn, tensors, caller="initialize_at",
                             num_steps=num_steps, batch_size=batch_size,
                             learning_rate=learning_rate, seed=seed, device=device,
                             progress=progress)
    model.train(was_training)  # the trainer leaves modules in eval mode
    return result


def initialize_linear(model, x: torch.Tensor, u: torch.Tensor, num_steps: int = 3000,
                      batch_size: int = 256, learning_rate: float = 1e-3, seed: int = 0,
                      device: str | torch.device = "auto", progress: bool = False,
                      ica: LinearICA | None = None) -> FitResult:
    """Start ``model`` at the linear ICA solution of ``(x, u)`` instead of at random.

    Fits :func:`linear_ica` with ``model.latent_dim`` sources (unless ``ica`` is given) and
    starts the networks at its sources with :func:`initialize_at`. Uses only ``(x, u)``, no
    ground truth; then fit by :func:`~pyrocrl.inference.fit_svi` as usual. Returns the
    regression's :class:`FitResult` with the ICA's negative log-likelihood in
    ``metrics["ica_nll"]``.
    """
    if not hasattr(model, "latent_dim"):
        raise TypeError(f"initialize_linear: model must have 'posterior', 'decode' and "
                        f"'latent_dim', {type(model).__name__} has not")
    if ica is None:
        ica = linear_ica(x, u, model.latent_dim, seed=seed)
    elif ica.unmixing.shape != (model.latent_dim, x.shape[-1]):
        raise ValueError(f"initialize_linear: ica.unmixing must be (latent_dim, D) = "
                         f"({model.latent_dim}, {x.shape[-1]}), got "
                         f"{tuple(ica.unmixing.shape)}")
    result = initialize_at(model, x, u, ica.transform(x.detach()), num_steps=num_steps,
                           batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                           device=device, progress=progress)
    result.metrics["ica_nll"] = [ica.nll]
    return result


class _EnvironmentClassifier(torch.nn.Module):
    """``logits[:, e] = log p(h = g(x) | u = e) + c_e`` under ``model``'s prior, with a
    feature network ``g`` on standardized ``x`` (see :func:`initialize_contrastive`).
    ``forward(x, alpha)`` returns the features, the logits and the prior's penalty
    (``acyclicity`` times its ``acyclicity_penalty()`` plus ``sparsity`` times the L1 norm of
    its ``adjacency``; zero where both are 0). With ``linear=True`` the features are
    ``A x + b + alpha * mlp(x)`` (an affine part beside the network, the network's share
    ``alpha`` a tensor set by the caller); otherwise ``mlp(x)`` and ``alpha`` is ignored."""

    def __init__(self, model, x: torch.Tensor, num_envs: int, hidden_dim: int,
                 num_layers: int, acyclicity: float = 0.0, sparsity: float = 0.0,
                 linear: bool = False):
        super().__init__()
        self.model = model  # its prior parameters train with the classifier
        self.num_envs, self.acyclicity, self.sparsity = num_envs, acyclicity, sparsity
        self.register_buffer("x_mean", x.mean(0).detach())
        self.register_buffer("x_scale", x.std(0).detach().clamp_min(1e-8))
        self.features = mlp(x.shape[-1], model.latent_dim, hidden_dim, num_layers)
        self.linear = mlp(x.shape[-1], model.latent_dim, num_layers=1) if linear else None
        self.offset = torch.nn.Parameter(torch.zeros(num_envs))

    def forward(self, x, alpha=None):
        standardized = (x - self.x_mean) / self.x_scale
        h = self.features(standardized)
        if self.linear is not None:
            h = self.linear(standardized) + alpha * h
        n = h.shape[0]
        env = torch.arange(self.num_envs, device=h.device).repeat_interleave(n)
        h_all = h.repeat(self.num_envs, 1)
        log_p = self.model.prior(env, h_all).log_prob(h_all)
        penalty = h.new_zeros(())
        if self.acyclicity:
            penalty = penalty + self.acyclicity * self.model.acyclicity_penalty()
        if self.sparsity:
            penalty = penalty + self.sparsity * self.model.adjacency.abs().sum()
        return h, log_p.reshape(self.num_envs, n).T + self.offset, penalty


def _train_classifiers(population: SideBySide, x, u, seeds: list[int], num_steps: int,
                       batch_size: int, learning_rate: float, device, progress: bool,
                       alpha=None, stage: str = "") -> tuple[FitResult, np.ndarray, np.ndarray,
                                                              np.ndarray]:
    """Adam on the summed cross-entropies (+ penalties) of the ``K`` classifiers of
    ``population``, copy ``k`` on the minibatches a run alone with ``seeds[k]`` would draw;
    ``alpha(step)`` gives the network's share (``None``: the classifiers have no affine part).

    A copy whose loss or gradient turns non-finite is dropped with a ``RuntimeWarning``: from
    then on its loss is left out of the sum and its gradients are zeroed, so the others
    train on exactly as before (the copies share no parameters). Only when every copy is
    dropped does it raise :class:`NonFiniteLossError`. Returns the loop's
    :class:`FitResult`, each step's cross-entropy and accuracy per copy, ``(num_steps, K)``
    each, and the step at which each copy was dropped, ``(K,)`` (-1: never)."""
    others = [_Batches(len(x), min(batch_size, len(x)), s) for s in seeds[1:]]
    per_step: list[tuple[np.ndarray, np.ndarray]] = []
    dropped_at = np.full(len(seeds), -1)
    alive = torch.ones(len(seeds), dtype=torch.bool)
    now = {"step": 0}

    def drop(bad: torch.Tensor, what: str) -> None:
        for k in (bad.cpu() & alive).nonzero().flatten().tolist():
            alive[k], dropped_at[k] = False, now["step"]
            warnings.warn(f"initialize_contrastive: dropped {stage}restart with seed "
                          f"{seeds[k]}: its {what} is not finite at step {now['step']} "
                          f"(0-based, of {num_steps}); the others go on", RuntimeWarning,
                          stacklevel=5)
        if not alive.any():
            raise NonFiniteLossError(
                f"initialize_contrastive: every {stage}restart diverged (seeds {seeds}; the "
                f"last at step {now['step']}). Try a smaller learning_rate or check the data; "
                f"the model keeps its state from before the call.")

    def repair_gradient() -> bool:
        """Only on a non-finite gradient: drop the copies it comes from (the parameters are
        stacked along K) and zero their slices, also those of copies dropped before."""
        grads = [p.grad for p in population.parameters() if p.grad is not None]
        drop(torch.stack([~torch.isfinite(g.reshape(len(g), -1)).all(1) for g in grads]
                         ).any(0), "gradient")
        for g in grads:
            g.copy_(keep_copies(g, alive, 0.0))
        return True

    def loss_fn(batch, step):
        now["step"] = step
        index = [b.at(step) for b in others]
        device = batch[0].device
        xb, ub = (torch.stack([first, *((t if i is None else t[i]).to(device) for i in index)])
                  for first, t in zip(batch, (x, u)))
        ub = ub.long()
        share = () if alpha is None else (xb.new_full((len(seeds),), alpha(step)),)
        _, logits, penalty = population.each(xb, *share)  # (K, B, E), (K,)
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ub.flatten(),
                                               reduction="none").reshape(ub.shape).mean(-1)
        accuracy = (logits.argmax(-1) == ub).float().mean(-1)
        per_step.append((ce.detach().cpu().numpy(), accuracy.cpu().numpy()))
        loss = ce + penalty
        drop(~torch.isfinite(loss.detach()), "cross-entropy")
        return torch.where(alive.to(device), loss, torch.zeros_like(loss)).sum(), {}

    result = train_minibatch(population, loss_fn, [x, u], caller="initialize_contrastive",
                             num_steps=num_steps, batch_size=batch_size,
                             learning_rate=learning_rate, seed=seeds[0], device=device,
                             progress=progress,
                             repair_gradient=repair_gradient if len(seeds) > 1 else None)
    ce, accuracy = (np.stack(values) for values in zip(*per_step))
    return result, ce, accuracy, dropped_at


def _start_features(population: SideBySide, x, u, start_at, seeds: list[int], start_steps: int,
                    prior_steps: int, batch_size: int, learning_rate: float, device,
                    progress: bool) -> None:
    """Regress every copy's feature network onto the standardized ``start_at``, then fit
    the prior and offsets with the features frozen (:func:`initialize_contrastive`'s
    ``start_at``)."""
    target = start_at.detach().to(x.dtype)
    target = (target - target.mean(0)) / target.std(0).clamp_min(1e-8)

    def regression(batch, step):
        h = population(batch[0])[0]  # (K, B, n): every copy on the same minibatch
        return (h - batch[1]).square().mean((1, 2)).sum(), {}

    train_minibatch(population, regression, [x, target], caller="initialize_contrastive",
                    num_steps=start_steps, batch_size=batch_size, learning_rate=learning_rate,
                    seed=seeds[0], device=device, progress=progress)
    features = [p for name, p in population.named_copy_parameters()
                if name.startswith("features.")]
    for p in features:
        p.requires_grad_(False)
    try:
        _train_classifiers(population, x, u, seeds, prior_steps, batch_size, 1e-2,
                           device, progress, stage="prior-stage ")
    finally:
        for p in features:
            p.requires_grad_(True)


@torch.no_grad()
def _cross_entropy(population: SideBySide, x, u, device, *share) -> np.ndarray:
    """Each copy's cross-entropy of ``u`` given ``x``, nats per point, ``(K,)``."""
    total = torch.zeros(population.num_copies)
    for xb, ub in zip(x.split(4096), u.split(4096)):
        logits = population(xb.to(device), *share)[1].cpu()  # (K, B, E)
        total += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), ub.long().repeat(population.num_copies),
            reduction="none").reshape(population.num_copies, -1).sum(-1)
    return (total / len(x)).numpy()


def _agreement(features) -> np.ndarray:
    """For each of several feature sets ``(N, n)``: its mean |correlation| with the others,
    latent by latent (same index), averaged over the others (1.0 for a single set)."""
    if len(features) == 1:
        return np.ones(1)
    corr = np.array([[np.abs(np.diag(mcc(a, b).correlation)).mean() for b in features]
                     for a in features])
    return (corr.sum(1) - 1.0) / (len(features) - 1)


def initialize_contrastive(model, x: torch.Tensor, u: torch.Tensor, num_steps: int = 10000,
                           batch_size: int = 512, learning_rate: float = 1e-3,
                           hidden_dim: int = 64, num_layers: int = 4, restarts: int = 1,
                           sparsity: float = 0.0, regression_steps: int = 3000, seed: int = 0,
                           device: str | torch.device = "auto", progress: bool = False,
                           validation: tuple[torch.Tensor, torch.Tensor] | None = None,
                           linear_steps: int = 0, linear_restarts: int | None = None,
                           ramp_steps: int = 3000, linear_learning_rate: float = 1e-2,
                           start_at: torch.Tensor | None = None, start_steps: int = 3000,
                           prior_steps: int = 2000) -> FitResult:
    r"""Start ``model`` at the latents that tell its environments apart.

    For an injective mixing :math:`x = f(z)` with inverse :math:`g`,
    :math:`p(x \mid u = e) = p(z = g(x) \mid u = e)\,|\det J_g(x)|`; the Jacobian is the
    same in every environment, so the Bayes classifier of the environment is

    .. math::
        p(u = e \mid x) = \operatorname{softmax}_e\big(\log p(g(x) \mid u = e) + c_e\big).

    This fits a feature network :math:`g_\psi` (an MLP on standardized ``x``), the model's own
    prior :math:`p(z \mid u)` and offsets :math:`c_e` by maximum likelihood of ``u`` given ``x``
    (cross-entropy on minibatches; a model with an ``acyclicity_penalty()``, i.e.
    :class:`~pyrocrl.models.LatentCausalVAE`, adds its ``acyclicity`` times that penalty, and
    ``sparsity`` times :math:`\lVert W \rVert_1` of its ``adjacency`` — per point, like the
    cross-entropy; the model's own ``sparsity`` is sized for the ELBO and does not enter), then
    regresses the encoder and decoder onto :math:`g_\psi(x)` with :func:`initialize_at`. The
    objective needs no decoder and no log-determinant, which are what stall the ELBO and exact
    maximum likelihood through deep leaky-ReLU mixings (``benchmarks/ivae_optimum.py``). For
    :class:`~pyrocrl.models.LatentCausalVAE` it is the contrastive estimator of Buchholz et al.
    (NeurIPS 2023), whose log-odds between an intervened and the observational environment are
    the prior's (B7 through a 3-layer mixing, then 5000 ELBO steps: MCC 0.897 with
    ``restarts=5`` on seeds 0–4 and 0.828 on seeds 5–9, 0.784 with one, 0.647 from a random
    start; ``sparsity=0.003`` with 5
    restarts: 0.895 against 0.893 without at that commit, and median SHD 4 instead of 5,
    within seed noise; ``benchmarks/NOTES.md``). Uses only ``(x, u)``, no ground truth.

    The truth is the objective's optimum, but random starts do not find it
    (``benchmarks/contrastive_optimum.py``, B7's data through the 3-layer mixing, 5 seeds):
    a classifier started at the true latents keeps them (held-out MCC by target 0.973 ±
    0.015 after 10 000 steps, 0.995–0.998 at the start) with a held-out cross-entropy 0.035
    nats above the Bayes floor, while the best of 5 random restarts reaches 0.895 ± 0.013 at
    0.040 nats above it, and single restarts 0.776 ± 0.125 (0.45–0.91). The differences in
    cross-entropy between good and poor optima are a few hundredths of a nat, comparable to
    what 4000 samples per environment overfit. With
    ``restarts > 1`` the classifier is fitted that many times, side by side in one vectorized
    module (:class:`pyrocrl.nn.SideBySide`): restart ``r`` is the run that ``restarts=1`` with
    ``seed + r`` would be — its feature network's initial weights from torch seed
    ``seed + r``, its prior from the model's current state, its own minibatches drawn from
    ``seed + r`` — and the loss is the sum of theirs, so each moves as if trained alone (tested
    against single runs). Which restart is kept needs no ground truth:

    * by default, the one whose features agree best with the others' — mean |correlation|
      latent by latent, which presumes, as with known targets, that the prior fixes which
      latent is which. It rests on an identified solution being reproducible and a poor local
      optimum not, which fails when no restart reaches the identified one: restarts that
      share a poor optimum then win;
    * with ``validation=(x_val, u_val)`` (held-out data, not part of ``x``), the one with the
      lowest cross-entropy per point on it (``metrics["restart_validation_loss"]``).

    On B7 (``benchmarks/contrastive_optimum.py``, 5 seeds x 5 restarts) the held-out pick has
    MCC by target 0.887 ± 0.022 and the agreement pick 0.825 ± 0.077, against 0.895 for the
    best restart. Through the whole B7 recipe (then 5000 ELBO steps; the held-out ranking
    on 10 % of the training split, 1920 points) the two tie: MCC 0.894 ± 0.029 with the
    held-out pick against 0.897 ± 0.022 with agreement on all the data, and 0.874 ± 0.025
    when a different random 10 % was held out — the ranking is that noisy
    (``benchmarks/results/latent_dag_contrastive*.json``). On B7's
    data (2000 steps, 2 threads), 5 restarts side by side take 15.1 s against 26.7 s one
    after another (one restart: 5.4 s).

    With ``linear_steps > 0`` the classification runs in two stages. First
    ``linear_restarts`` classifiers with *affine* features :math:`g(x) = A x + b` train for
    ``linear_steps`` steps at ``linear_learning_rate`` (restart ``r`` from seed ``seed + r``, as
    above); the ``restarts`` of them with the lowest cross-entropy on all of ``x`` go on with
    features :math:`A x + b + \alpha_t\, g_\psi(x)`, the network's share :math:`\alpha_t`
    rising linearly from 0 to 1 over the first ``ramp_steps`` of the ``num_steps`` steps (a
    homotopy from the best linear unmixing to the nonlinear one; the features at the end are
    those of the last step's :math:`\alpha`). The kept restart is then chosen as above, and
    each kept restart is exactly the run ``linear_restarts=1, restarts=1`` with its seed
    would be (tested). ``metrics["linear_loss"]`` holds every linear restart's
    cross-entropy, ``metrics["linear_kept"]`` the ones that went on, in the order of the
    ``restart_*`` lists; ``chosen_restart`` is an index into the linear restarts, and the
    record (``losses``, ``metrics["step"]``, ``metrics["accuracy"]``) runs through both
    stages. **On B7 it does not help**: through the whole recipe (2000 linear steps, 20
    linear restarts screened to 5, 8000 steps after; ``benchmarks/latent_dag.py --init
    contrastive --init-linear --mixings 3``) MCC 0.849 ± 0.080 against 0.897 ± 0.022
    without, median SHD 5 either way; an exploratory run on 90 % of the training split had
    raised the classifier's mean MCC by target per restart from 0.776 to 0.886, which did
    not carry over to the full split (``benchmarks/NOTES.md``).

    Not for :class:`~pyrocrl.models.IVAE`: with a factorized Gaussian prior this is
    time-contrastive learning (Hyvärinen & Morioka, 2016), which identifies only the
    sufficient statistics (:math:`h`, :math:`h^2`) up to a linear map — with learned means a
    feature :math:`h_i = z_i^2` classifies as well as :math:`z_i` — and would need a linear ICA
    afterwards. Measured on 4 linearly mixed sources in 12 domains: held-out MCC 0.09 with
    learned prior means, 0.57 (1500 steps) and 0.50 (6000 steps) with
    ``learn_prior_mean=False``.

    ``start_at`` (``(N, latent_dim)`` latents of ``x``, e.g. a fitted model's encoder means;
    no ground truth) starts every restart's feature network there instead of at random: it
    is regressed onto the standardized ``start_at`` for ``start_steps`` steps, the prior and
    offsets are then fitted with the features frozen for ``prior_steps`` steps (Adam 1e-2),
    and the classification runs as above. Classification from a good start climbs toward the
    identified solution that random starts miss (``fit_latent_causal``'s
    ``reclassify_steps``: on B7 through the 3-layer mixing it restarts the classifier from
    the ELBO stage's encodings; ``benchmarks/NOTES.md``). Not with ``linear_steps``.

    ``model`` needs ``prior(u, z)`` (a distribution over ``latent_dim``-vectors with
    batch ``u.shape``), ``num_domains`` and what :func:`initialize_at` needs. Returns the
    classification's :class:`FitResult` (``losses``: cross-entropy in nats per point;
    ``metrics["accuracy"]``) of the kept restart, with the regression's final mean-squared error
    in ``metrics["regression_mse"]``, each restart's agreement in
    ``metrics["restart_agreement"]``, each restart's mean cross-entropy over the last logging
    window (100 steps) in ``metrics["restart_loss"]``, with ``validation`` each restart's
    held-out cross-entropy in ``metrics["restart_validation_loss"]``, and the kept one in
    ``metrics["chosen_restart"]``. A restart whose cross-entropy or gradient turns non-finite
    is dropped with a ``RuntimeWarning`` while the others train on unchanged (its agreement,
    held-out and linear-stage cross-entropies are NaN; its index is listed in
    ``metrics["dropped_restarts"]``); only when every restart of a stage diverges does it
    raise :class:`~pyrocrl.inference.NonFiniteLossError`, and the model then keeps its state
    from before the call.
    """
    _require(model, ("prior", "num_domains", "latent_dim"), "initialize_contrastive",
             "a prior p(z | u) over num_domains environments")
    check_training_args("initialize_contrastive", num_steps, batch_size, learning_rate)
    if hasattr(model, "check_data"):
        model.check_data(x, u)
    check_positive_int("initialize_contrastive", "restarts", restarts)
    if linear_restarts is None:
        linear_restarts = restarts
    for name, value in (("linear_steps", linear_steps), ("ramp_steps", ramp_steps)):
        if isinstance(value, bool) or not (isinstance(value, (int, np.integer)) and value >= 0):
            raise ValueError(f"initialize_contrastive: {name} must be an integer >= 0, got "
                             f"{value!r}")
    if linear_steps:
        check_positive_int("initialize_contrastive", "linear_restarts", linear_restarts)
        if linear_restarts < restarts:
            raise ValueError(f"initialize_contrastive: linear_restarts ({linear_restarts}) must "
                             f"be at least restarts ({restarts}): the linear stage's best "
                             f"restarts go on")
        if not (isinstance(linear_learning_rate, (int, float)) and linear_learning_rate > 0):
            raise ValueError(f"initialize_contrastive: linear_learning_rate must be a positive "
                             f"number, got {linear_learning_rate!r}")
    if not sparsity >= 0:
        raise ValueError(f"initialize_contrastive: sparsity must be >= 0, got {sparsity!r}")
    if start_at is not None:
        expected = (x.shape[0], int(model.latent_dim))
        if (not isinstance(start_at, torch.Tensor) or tuple(start_at.shape) != expected
                or not torch.isfinite(start_at).all()):
            raise ValueError(f"initialize_contrastive: start_at must be a finite tensor of shape "
                             f"{expected} (x's rows, latent_dim), got "
                             f"{getattr(start_at, 'shape', type(start_at))}")
        if linear_steps:
            raise ValueError("initialize_contrastive: start_at replaces the random start; it "
                             "takes no linear stage (linear_steps must be 0)")
        check_positive_int("initialize_contrastive", "start_steps", start_steps)
        check_positive_int("initialize_contrastive", "prior_steps", prior_steps)
    if sparsity:
        _require(model, ("adjacency",), "initialize_contrastive",
                 "a weighted adjacency for sparsity > 0")
    if validation is not None:
        if (not isinstance(validation, (tuple, list)) or len(validation) != 2
                or not isinstance(validation[0], torch.Tensor) or len(validation[0]) == 0):
            raise ValueError("initialize_contrastive: validation must be a pair (x, u) of "
                             "held-out data, not part of x, with at least one row; got "
                             f"{type(validation).__name__}")
        if hasattr(model, "check_data"):
            model.check_data(*validation)
    acyclicity = getattr(model, "acyclicity", 0.0) if hasattr(
        model, "acyclicity_penalty") else 0.0
    was_training = model.training
    num_envs = int(model.num_domains)

    def classifier(restart: int, layers: int, linear: bool = False):
        torch.manual_seed(seed + restart)  # the networks' initial weights
        return _EnvironmentClassifier(model, x, num_envs, hidden_dim, layers, acyclicity,
                                      sparsity, linear)

    # every restart starts at the model's current prior; all train side by side, restart r on
    # the minibatches a run alone with seed + r would draw
    kept, linear_record, dropped = list(range(restarts)), None, []
    if linear_steps:  # stage 1: affine features; the lowest cross-entropies go on
        screen = SideBySide([classifier(r, 1) for r in range(linear_restarts)])
        first, linear_ce, linear_accuracy, linear_dropped = _train_classifiers(
            screen, x, u, [seed + r for r in range(linear_restarts)], linear_steps, batch_size,
            linear_learning_rate, device, progress, stage="linear-stage ")
        linear_loss = _cross_entropy(screen, x, u, first.device)
        linear_loss[linear_dropped >= 0] = np.nan
        dropped = np.flatnonzero(linear_dropped >= 0).tolist()
        kept = [int(k) for k in np.argsort(linear_loss, kind="stable")
                if linear_dropped[k] < 0][:restarts]
        classifiers = []
        for k in kept:
            c = classifier(k, num_layers, linear=True)
            state = screen.copy_state(k)
            c.load_state_dict({**c.state_dict(), **{
                ("linear." + name[len("features."):] if name.startswith("features.") else name):
                value for name, value in state.items()}})
            classifiers.append(c)
        population = SideBySide(classifiers)
        linear_record = (first, linear_ce, linear_accuracy, linear_loss)

        def alpha(step):
            return min(1.0, (step + 1) / ramp_steps) if ramp_steps else 1.0
        share = (torch.tensor(alpha(num_steps - 1)),)  # the network's share at the end
    else:
        population = SideBySide([classifier(r, num_layers) for r in range(restarts)])
        alpha, share = None, ()
        if start_at is not None:
            _start_features(population, x, u, start_at, [seed + r for r in range(restarts)],
                            start_steps, prior_steps, batch_size, learning_rate, device,
                            progress)
    result, ce, accuracy, dropped_at = _train_classifiers(
        population, x, u, [seed + k for k in kept], num_steps, batch_size, learning_rate,
        device, progress, alpha)
    live = np.flatnonzero(dropped_at < 0)
    dropped = sorted(dropped + [kept[k] for k in np.flatnonzero(dropped_at >= 0)])
    with torch.no_grad():
        h = torch.cat([population(chunk.to(result.device), *share)[0].cpu()
                       for chunk in x.split(4096)], dim=1)  # (K, N, n)
    agreement = np.full(len(kept), np.nan)
    agreement[live] = _agreement(list(h[live]))
    if validation is not None:  # each restart's held-out cross-entropy per point
        held_out = _cross_entropy(population, *validation, result.device, *share)
        held_out[dropped_at >= 0] = np.nan
        held_out = held_out.tolist()
    best = int(np.nanargmax(agreement)) if validation is None else int(np.nanargmin(held_out))
    h = h[best]
    state = population.copy_state(best)
    model.load_state_dict({name[len("model."):]: value for name, value in state.items()
                           if name.startswith("model.")})
    # the kept restart's own record, as if it had been trained alone
    steps = result.metrics["step"]
    windows = list(zip([0, *steps[:-1]], steps))
    result.losses = ce[:, best]
    result.metrics["accuracy"] = [float(accuracy[a:b, best].mean()) for a, b in windows]
    result.metrics["restart_loss"] = ce[slice(*windows[-1])].mean(0).tolist()
    if linear_record is not None:  # the linear stage goes first in the record
        first, linear_ce, linear_accuracy, linear_loss = linear_record
        k = kept[best]
        linear_windows = list(zip([0, *first.metrics["step"][:-1]], first.metrics["step"]))
        result.losses = np.concatenate([linear_ce[:, k], result.losses])
        result.metrics["accuracy"] = [float(linear_accuracy[a:b, k].mean())
                                      for a, b in linear_windows] + result.metrics["accuracy"]
        result.metrics["step"] = [*first.metrics["step"],
                                  *(linear_steps + step for step in steps)]
        result.time_s += first.time_s
        result.metrics["linear_loss"] = linear_loss.tolist()
        result.metrics["linear_kept"] = kept
    result.metrics["restart_agreement"] = agreement.tolist()
    result.metrics["dropped_restarts"] = dropped
    if validation is not None:
        result.metrics["restart_validation_loss"] = held_out
    result.metrics["chosen_restart"] = [kept[best]]
    regression = initialize_at(model, x, u, h, num_steps=regression_steps,
                               batch_size=min(batch_size, 256), learning_rate=learning_rate,
                               seed=seed, device=device, progress=progress)
    model.train(was_training)  # the trainers leave modules in eval mode
    result.metrics["regression_mse"] = [regression.losses[-1]]
    return result


__all__ = ["LinearICA", "initialize_at", "initialize_contrastive", "initialize_linear",
           "linear_ica"]
