"""Training sparse autoencoders (:mod:`pyrocrl.models.sae`) on cached activations."""

from __future__ import annotations

import torch

from pyrocrl.inference._loop import check_training_args, train_minibatch
from pyrocrl.inference.svi import FitResult
from pyrocrl.models.sae import SparseAutoencoder

__all__ = ["fit_sae", "geometric_median"]

DECODER_BIAS_INITS = ("geometric_median", "mean", None)


def geometric_median(points: torch.Tensor, num_iters: int = 50, eps: float = 1e-8
                     ) -> torch.Tensor:
    r"""The point minimising :math:`\sum_n \lVert x_n - y\rVert_2` (Weiszfeld's iteration from
    the mean, in float64), ``(d,)`` for ``points: (N, d)``."""
    x = points.detach().to(torch.float64)
    y = x.mean(0)
    for _ in range(num_iters):
        weights = 1.0 / (x - y).norm(dim=1).clamp_min(eps)
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if torch.linalg.vector_norm(new - y) <= 1e-7 * (1.0 + torch.linalg.vector_norm(y)):
            y = new
            break
        y = new
    return y.to(points.dtype)


def _check_activations(sae: SparseAutoencoder, activations) -> torch.Tensor:
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"fit_sae: sae must be a pyrocrl.models.sae.SparseAutoencoder, got "
                        f"{type(sae).__name__}")
    if not isinstance(activations, torch.Tensor):
        raise TypeError(f"fit_sae: activations must be a torch.Tensor, got "
                        f"{type(activations).__name__}")
    if activations.ndim != 2 or activations.shape[1] != sae.d_in:
        raise ValueError(f"fit_sae: activations has shape {tuple(activations.shape)}, expected "
                         f"(N, d_in={sae.d_in})")
    if activations.shape[0] < 1:
        raise ValueError("fit_sae: activations has no rows")
    if not activations.is_floating_point():
        raise ValueError(f"fit_sae: activations must be a floating-point tensor, got "
                         f"{activations.dtype}")
    if not bool(torch.isfinite(activations).all()):
        bad = int((~torch.isfinite(activations)).any(1).sum())
        raise ValueError(f"fit_sae: activations contains NaN or inf (in {bad} of "
                         f"{activations.shape[0]} rows)")
    return activations


def fit_sae(
    sae: SparseAutoencoder,
    activations: torch.Tensor,
    num_steps: int = 2000,
    batch_size: int = 1024,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    warmup_steps: int = 200,
    log_every: int = 100,
    init_decoder_bias: str | None = "geometric_median",
    max_bias_samples: int = 10_000,
) -> FitResult:
    """Train ``sae`` on ``activations`` with Adam, by the shared minibatch loop.

    Each step minimises ``sae.loss(batch, step)`` on a shuffled minibatch (the batch of a step
    depends only on ``(seed, step)``); the learning rate rises linearly over the first
    ``warmup_steps`` steps (H.3: 200). SAEs whose decoder rows must stay at unit norm
    (``sae.unit_norm_decoder``: TopK, BatchTopK) are renormalised after every step.

    Before training, ``b_dec`` is set to the **geometric median** of (at most
    ``max_bias_samples`` randomly chosen rows of) the activations, as in Gao et al. 2024
    (``init_decoder_bias="mean"``: their mean; ``None``: leave ``b_dec`` as it is, e.g. to
    continue training).

    Args:
        sae: a :class:`~pyrocrl.models.sae.SparseAutoencoder`; trained in place.
        activations: ``(N, d_in)`` finite float tensor (kept where it is and moved to
            ``device`` batch by batch).
        num_steps, batch_size, learning_rate, seed, device, progress, warmup_steps,
            log_every: as for :func:`pyrocrl.inference.fit_svi`.
        init_decoder_bias: ``"geometric_median"``, ``"mean"`` or ``None``.
        max_bias_samples: rows used for the ``b_dec`` initialisation.

    Returns:
        :class:`~pyrocrl.inference.FitResult` with ``losses`` (per step) and ``metrics``
        averaged over every ``log_every`` steps: ``"mse"`` (per element), ``"l0"`` (non-zero
        sparse codes per sample), ``"dead_fraction"`` (fraction of features that did not fire
        on any sample of the window's batches; one value per window), plus what the SAE adds
        (e.g. ``"sparsity_coefficient"``). The SAE is left on ``device`` in eval mode.

    Raises:
        TypeError, ValueError: for unusable arguments, before any training.
        NonFiniteLossError: on a NaN/inf loss or gradient; the parameters of the last good
            step are kept.
    """
    activations = _check_activations(sae, activations)
    check_training_args("fit_sae", num_steps, batch_size, learning_rate)
    if init_decoder_bias not in DECODER_BIAS_INITS:
        raise ValueError(f"fit_sae: init_decoder_bias must be one of {DECODER_BIAS_INITS}, got "
                         f"{init_decoder_bias!r}")
    if not (isinstance(log_every, int) and log_every >= 1):
        raise ValueError(f"fit_sae: log_every must be a positive int, got {log_every!r}")

    if init_decoder_bias is not None:
        sample = activations
        if activations.shape[0] > max_bias_samples:
            generator = torch.Generator().manual_seed(seed)
            index = torch.randperm(activations.shape[0], generator=generator)[:max_bias_samples]
            sample = activations[index.to(activations.device)]
        center = geometric_median(sample) if init_decoder_bias == "geometric_median" \
            else sample.mean(0)
        with torch.no_grad():
            sae.b_dec.copy_(center.to(sae.b_dec))

    fired = torch.zeros(sae.d_sae, dtype=torch.bool)

    def loss_fn(batch, step):
        nonlocal fired
        loss, tracked, codes = sae.loss_terms(batch[0], step)
        with torch.no_grad():
            if fired.device != codes.device:
                fired = fired.to(codes.device)
            fired |= (codes > 0).any(0)
        if (step + 1) % log_every == 0 or step + 1 == num_steps:
            # reported once per window, so train_minibatch's window average is this value
            tracked["dead_fraction"] = 1.0 - fired.float().mean().item()
            fired.zero_()
        return loss, tracked

    after_step = sae.normalize_decoder if sae.unit_norm_decoder else None
    return train_minibatch(
        sae, loss_fn, [activations], caller="fit_sae", num_steps=num_steps,
        batch_size=batch_size, learning_rate=learning_rate, seed=seed, device=device,
        progress=progress, warmup_steps=warmup_steps, log_every=log_every,
        after_step=after_step)
