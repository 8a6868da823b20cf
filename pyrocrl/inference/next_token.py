"""Training the masked next-token predictor of seed 004 (Appendix G.1)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from pyrocrl.inference._loop import train_minibatch
from pyrocrl.inference.svi import FitResult

__all__ = ["fit_next_token"]


def fit_next_token(predictor, x: torch.Tensor, num_steps: int = 3000, batch_size: int = 256,
                   learning_rate: float = 1e-3, seed: int = 0, device="auto",
                   progress: bool = True, num_masked: int = 1,
                   log_every: int = 100) -> FitResult:
    """Train ``predictor`` to predict randomly masked observed variables from the rest.

    Each step draws a minibatch of ``x`` and, per row, ``num_masked`` positions uniformly
    (G.1 masks one); the loss is the binary cross-entropy of the masked variables under the
    predictor's logits, averaged over them. Adam with ``learning_rate`` (G.1 uses 1e-3).

    Args:
        predictor: a :class:`pyrocrl.models.NextTokenPredictor` (or any module with
            ``num_observed``, ``check_input(x, mask)`` and ``forward(x, mask) -> logits``).
        x: ``(N, D)`` binary float tensor.

    Returns:
        :class:`FitResult` with the per-step loss (nats per masked variable) and, every
        ``log_every`` steps, ``metrics["accuracy"]`` of the masked predictions.
    """
    predictor.check_input(x)
    num_observed = predictor.num_observed
    if not 1 <= num_masked < num_observed:
        raise ValueError(f"fit_next_token: num_masked must lie in [1, num_observed="
                         f"{num_observed}), got {num_masked}")
    from pyrocrl.models.concepts import random_mask

    def loss_fn(batch, step):
        (xb,) = batch
        mask = random_mask(xb.shape[0], num_observed, num_masked, device=xb.device)
        logits = predictor(xb, mask)
        loss = (F.binary_cross_entropy_with_logits(logits, xb, reduction="none") * mask).sum()
        loss = loss / mask.sum()
        with torch.no_grad():
            accuracy = (((logits > 0).float() == xb).float() * mask).sum() / mask.sum()
        return loss, {"accuracy": accuracy.item()}

    return train_minibatch(predictor, loss_fn, [x], caller="fit_next_token",
                           num_steps=num_steps, batch_size=batch_size,
                           learning_rate=learning_rate, seed=seed, device=device,
                           progress=progress, log_every=log_every)
