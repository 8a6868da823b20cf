"""The minibatch loop shared by the plain-torch trainers (``fit_sae``, ``fit_next_token``).

``fit_svi`` has its own loop because an ELBO needs Pyro's machinery (param sites, scaling,
checkpoints that resume exactly); these trainers optimise an ordinary torch loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from pyrocrl._checks import check_positive_int
from pyrocrl.inference.svi import FitResult, NonFiniteLossError, _Batches, resolve_device

LossFn = Callable[[Sequence[torch.Tensor], int], tuple[torch.Tensor, dict[str, float]]]


def check_training_args(caller: str, num_steps, batch_size, learning_rate) -> None:
    """Raise a ``ValueError`` naming ``caller`` and the argument when one is unusable."""
    for name, value in (("num_steps", num_steps), ("batch_size", batch_size)):
        check_positive_int(caller, name, value)
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"{caller}: learning_rate must be a positive number, got "
                         f"{learning_rate!r}")


def train_minibatch(
    module: torch.nn.Module,
    loss_fn: LossFn,
    tensors: Sequence[torch.Tensor],
    *,
    caller: str,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: str | torch.device = "auto",
    progress: bool = True,
    warmup_steps: int = 0,
    log_every: int = 100,
    after_step: Callable[[], None] | None = None,
    repair_gradient: Callable[[], bool] | None = None,
) -> FitResult:
    """Adam on ``loss_fn(batch, step)`` over shuffled minibatches of ``tensors``.

    ``loss_fn`` returns the loss and a dict of floats to track; the tracked values are
    averaged over every ``log_every`` steps into ``FitResult.metrics``. The learning rate
    rises linearly over the first ``warmup_steps`` steps. The batch of a step depends only on
    ``(seed, step)``. A non-finite loss or gradient raises :class:`NonFiniteLossError` before
    the optimizer moves, so the module keeps its last good parameters; ``repair_gradient``,
    if given, is first called on a non-finite gradient and may mend the gradients in place
    (e.g. zero the slices of a diverged copy) and return ``True`` to go on. ``after_step`` runs
    after every optimizer step (e.g. to renormalise a dictionary). The module is left on
    ``device`` in eval mode; ``tensors`` are moved there batch by batch.
    """
    check_training_args(caller, num_steps, batch_size, learning_rate)
    device = resolve_device(device)
    num_data = tensors[0].shape[0]
    batch_size = min(batch_size, num_data)
    torch.manual_seed(seed)
    module.to(device).train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    batches = _Batches(num_data, batch_size, seed)
    losses: list[float] = []
    metrics: dict[str, list[float]] = {"step": []}
    window: dict[str, list[float]] = {}
    bar = tqdm(total=num_steps, disable=not progress, desc=caller, dynamic_ncols=True,
               leave=False)
    t0 = time.perf_counter()
    try:
        for step in range(num_steps):
            if warmup_steps:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate * min(1.0, (step + 1) / warmup_steps)
            index = batches.at(step)
            batch = [t if index is None else t[index] for t in tensors]
            batch = [t.to(device, non_blocking=True) for t in batch]
            loss, tracked = loss_fn(batch, step)
            value = loss.detach().item()
            optimizer.zero_grad(set_to_none=True)
            grad_ok = True
            if math.isfinite(value):
                loss.backward()
                grads = [p.grad for p in params if p.grad is not None]
                grad_ok = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
                if not grad_ok and repair_gradient is not None and repair_gradient():
                    grads = [p.grad for p in params if p.grad is not None]
                    grad_ok = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
            if not math.isfinite(value) or not grad_ok:
                what = f"loss is {value}" if not math.isfinite(value) else "gradient is not finite"
                raise NonFiniteLossError(
                    f"{caller}: {what} at step {step} (0-based, of {num_steps}); the parameters "
                    f"after step {step - 1} are kept in the module. Try a smaller "
                    f"learning_rate or check the data.")
            optimizer.step()
            if after_step is not None:
                after_step()
            losses.append(value)
            for key, val in tracked.items():
                window.setdefault(key, []).append(float(val))
            bar.update(1)
            if (step + 1) % log_every == 0 or step + 1 == num_steps:
                metrics["step"].append(step + 1)
                for key, vals in window.items():
                    metrics.setdefault(key, []).append(float(np.mean(vals)))
                window = {}
                bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.4g}")
    finally:
        bar.close()
        module.eval()
    return FitResult(losses=np.asarray(losses), time_s=time.perf_counter() - t0,
                     device=str(device), metrics=metrics)
