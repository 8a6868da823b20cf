"""Several starts of one fit, the best kept by held-out loss (never by ground truth)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import torch

from pyrocrl._checks import check_positive_int
from pyrocrl.inference.svi import FitResult, NonFiniteLossError, fit_svi


def fit_restarts(build_model: Callable[[], object], *data, validation, restarts: int = 5,
                 seed: int = 0, **fit_options) -> tuple[object, FitResult]:
    r"""Fit ``restarts`` fresh models and keep the one with the lowest held-out loss.

    For objectives with local optima that a better start or a longer run does not fix (e.g.
    the exact likelihood of :class:`~pyrocrl.models.IFlow`): restart ``r`` seeds torch with
    ``seed + r``, calls ``build_model()`` (so its random initial weights differ; a seeded
    start inside it can read its seed as ``torch.initial_seed()``) and runs
    :func:`fit_svi` on ``data`` with ``seed=seed + r``, ``validation`` and ``fit_options``.
    Each run ends with the parameters of its best validation evaluation (``fit_svi``'s model
    selection); the run whose best held-out loss (negative ELBO per point, or the exact
    negative log-likelihood for models without latent sites) is lowest wins. The
    held-out data decide, so hold out data that ``data`` does not contain. For
    :class:`~pyrocrl.models.IFlow`, ``IFlow(..., num_starts=K)`` trains the starts side by
    side in one vectorized model instead, at a fraction of the time (``select_start``).

    A restart whose training diverges (:class:`~pyrocrl.inference.NonFiniteLossError`) is
    dropped with a ``RuntimeWarning`` that carries its error, and the others go on; its
    held-out loss is recorded as NaN. Only when every restart diverges is the error raised.

    Returns ``(model, result)``: the chosen model and its :class:`FitResult`, whose
    ``metrics`` also hold every restart's best held-out loss
    (``metrics["restart_validation_loss"]``, NaN for a diverged one) and the chosen index
    (``metrics["chosen_restart"]``), and whose ``time_s`` is the time of all restarts
    (diverged ones included).
    """
    check_positive_int("fit_restarts", "restarts", restarts)
    if validation is None:
        raise ValueError("fit_restarts: validation data are required (the restarts are ranked "
                         "by held-out loss)")
    if not callable(build_model) or isinstance(build_model, torch.nn.Module):
        raise TypeError(f"fit_restarts: build_model must be a callable returning a fresh "
                        f"model (e.g. lambda: IFlow(5, 5, 40)), got {type(build_model).__name__}")
    best, scores, total_time, errors = None, [], 0.0, []
    for restart in range(restarts):
        torch.manual_seed(seed + restart)
        model = build_model()
        t0 = time.perf_counter()
        try:
            result = fit_svi(model, *data, seed=seed + restart, validation=validation,
                             **fit_options)
        except NonFiniteLossError as error:
            total_time += time.perf_counter() - t0
            scores.append(math.nan)
            errors.append(f"restart {restart} (seed {seed + restart}): {error}")
            warnings.warn(f"fit_restarts: dropped {errors[-1]}", RuntimeWarning, stacklevel=2)
            continue
        total_time += result.time_s
        scores.append(min(loss for _, loss in result.validation_losses))
        if best is None or scores[-1] < scores[best[0]]:
            best = (restart, model, result)
    if best is None:
        raise NonFiniteLossError(f"fit_restarts: all {restarts} restarts diverged: "
                                 + "; ".join(errors))
    index, model, result = best
    result.metrics["restart_validation_loss"] = [float(s) for s in scores]
    result.metrics["chosen_restart"] = [index]
    result.time_s = total_time
    return model, result
