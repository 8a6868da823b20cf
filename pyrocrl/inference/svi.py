"""One SVI loop for every pyrocrl model (and for users' own Pyro models)."""

from __future__ import annotations

import copy
import inspect
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.poutine.messenger import Messenger
from tqdm.auto import tqdm

from pyrocrl.inference.importance import log_weights, plate_structure

__all__ = ["FitResult", "NonFiniteLossError", "fit_svi", "resolve_device"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the last good state was kept."""


@dataclass
class FitResult:
    """What :func:`fit_svi` returns.

    Attributes:
        losses: ``(num_steps,)`` training loss of each step: the negative ELBO of the
            minibatch scaled to the full data set, divided by the number of data points.
        validation_losses: ``[(step, loss), ...]`` held-out negative ELBO per data point.
        best_step: the step whose parameters the model holds at the end when ``validation``
            was given (chosen by held-out ELBO only), else ``None``.
        stopped_early: whether ``patience`` ran out before ``num_steps``.
        time_s: wall-clock seconds of the training loop (this call only).
        device: where the model trained.
        metrics: for the plain-torch trainers (``fit_sae``, ``fit_next_token``): each
            tracked quantity averaged over every ``log_every`` steps, with the steps in
            ``metrics["step"]``.
    """

    losses: np.ndarray
    validation_losses: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    stopped_early: bool = False
    time_s: float = 0.0
    device: str = "cpu"
    metrics: dict[str, list[float]] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.losses)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else -> ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but CUDA is not available; "
                         f"use device='auto' or 'cpu'")
    return device


class _ScaleLatents(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site by ``factor``:
    KL annealing, as ``poutine.scale`` around the latent sites of both model and guide."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg):
        if self.factor != 1.0 and msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.factor * msg["scale"]


def _check_positive_int(name, value, allow_none=False):
    if allow_none and value is None:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"fit_svi: {name} must be a positive int, got {value!r}")


def _check_data(model, data: Sequence, what: str, training: bool = False) -> int:
    tensors = [d for d in data if d is not None]
    if not tensors:
        raise ValueError(f"fit_svi: {what} needs at least one data tensor")
    for i, d in enumerate(data):
        if d is not None and not isinstance(d, torch.Tensor):
            raise TypeError(f"fit_svi: {what} argument {i} must be a torch.Tensor or None, "
                            f"got {type(d).__name__}")
    n = tensors[0].shape[0]
    for i, d in enumerate(data):
        if d is not None and d.shape[0] != n:
            raise ValueError(f"fit_svi: every {what} tensor must have the same length along "
                             f"dim 0; argument 0 has {n}, argument {i} has {d.shape[0]}")
    check = getattr(model, "check_training_data" if training else "check_data", None)
    if check is None:
        check = getattr(model, "check_data", None)
    if check is not None:
        check(*data)
    return n


class _Batches:
    """Shuffled minibatches, epoch by epoch. The batch of a step is a function of
    ``(seed, step)`` alone (each epoch's permutation comes from its own seeded generator), so a
    resumed or interrupted run draws exactly the batches of an uninterrupted one."""

    def __init__(self, num_data: int, batch_size: int, seed: int):
        self.num_data, self.batch_size, self.seed = num_data, batch_size, seed
        self.per_epoch = num_data // batch_size
        self._epoch, self._perm = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.num_data, generator=generator)
        return self._perm

    def at(self, step: int) -> torch.Tensor | None:
        """Indices of the batch of ``step``; ``None`` means all the data, in order."""
        if self.batch_size == self.num_data:
            return None
        epoch, k = divmod(step, self.per_epoch)
        return self.permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]


def _rng_state(torch_state=None):
    state = {"torch": torch.get_rng_state() if torch_state is None else torch_state,
             "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(path, payload):
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a broken checkpoint


def fit_svi(
    model,
    *data,
    num_steps: int = 5000,
    batch_size: int | None = 256,
    learning_rate: float = 1e-3,
    learning_rate_decay: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    log_every: int = 100,
    clip_norm: float | None = None,
    kl_warmup: int = 0,
    num_particles: int = 1,
    elbo: str = "trace",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    validation: Sequence[torch.Tensor] | torch.Tensor | None = None,
    patience: int | None = None,
) -> FitResult:
    r"""Fit ``model`` by stochastic variational inference on minibatches of ``data``.

    Every positional tensor in ``data`` is minibatched along dim 0 and passed to
    ``model.model(*batch)`` and ``model.guide(*batch)`` (``None`` entries pass through as
    ``None``). The loss is the negative ELBO (``Trace_ELBO``) of the batch scaled to the full
    data set: when the model's ``model`` method accepts ``num_data`` (all pyrocrl models do),
    its ``"data"`` plate does the scaling; otherwise the whole ELBO is scaled by
    ``N / batch_size`` with ``poutine.scale``, which is right for models whose latents are
    all local to the data.

    Parameters are ``model.parameters()`` plus any ``pyro.param`` sites the model or guide
    create; they are optimized with ``torch.optim.Adam``.

    Args:
        model: an object with ``model`` and ``guide`` methods, usually a
            :class:`pyrocrl.models.LatentVariableModel`; if it has ``check_data``, that runs
            once on ``data`` before training.
        *data: tensors with the samples on dim 0 (e.g. ``x`` and ``u``).
        num_steps: total number of gradient steps (with ``resume``, counted from the start of
            the original run).
        batch_size: minibatch size; ``None`` or more than N uses the full data.
        learning_rate: Adam's step size at the start.
        learning_rate_decay: the step size at the last step, as a fraction of
            ``learning_rate``; it decays geometrically in between (``1.0``: constant). It is a
            function of the step alone, so resuming reproduces it.
        seed: seeds Pyro/torch/NumPy and the minibatch order.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        progress: show a tqdm bar with the running loss.
        log_every: steps between progress updates and validation evaluations.
        clip_norm: clip the global gradient norm to this value.
        kl_warmup: linearly anneal the latent sites' log-densities (the KL term) from
            ``1/kl_warmup`` to 1 over this many steps.
        num_particles: particles per data point and step.
        elbo: ``"trace"``: the standard ELBO (``Trace_ELBO``, averaged over particles);
            ``"iwae"``: the importance-weighted bound
            :math:`\log \frac1K \sum_k p(x_i, z^{(k)}_i) / q(z^{(k)}_i \mid x_i)` per data
            point (Burda et al., 2016) with ``K = num_particles >= 2``, which is tighter and
            less biased by a factorized guide; needs every sample site in plate ``"data"``;
            ``"traceenum"``: ``TraceEnum_ELBO`` for models whose discrete latents are marked
            ``infer={"enumerate": "parallel"}`` and summed out exactly (e.g.
            :class:`pyrocrl.models.DiscreteConceptModel`; one plate level, ``"data"``).
        checkpoint: path of a checkpoint file, written every ``checkpoint_every`` steps, at
            the end, on a non-finite loss and on ``KeyboardInterrupt``. It holds parameters,
            optimizer state, RNG states, the step and the histories (the minibatch of a step
            is a function of ``seed`` and the step, so it needs no state).
        checkpoint_every: defaults to ``log_every * 10``.
        resume: continue from ``checkpoint`` if that file exists (else start fresh). On CPU a
            resumed run reproduces the uninterrupted run's losses exactly.
        validation: held-out data, a tensor or a tuple like ``data``. Its negative ELBO per
            data point is computed every ``log_every`` steps (with fixed noise); the model
            ends with the parameters of the best evaluation. Ground truth is never used.
        patience: stop after this many evaluations without improvement (needs
            ``validation``).

    Returns:
        :class:`FitResult`.

    Raises:
        NonFiniteLossError: the loss or gradient became NaN/inf; the model keeps the last good
            parameters (also written to ``checkpoint``).
    """
    # ---- check everything before any training starts --------------------------------
    if not (callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None))):
        raise TypeError(f"fit_svi: model must have callable .model and .guide methods, "
                        f"got {type(model).__name__}")
    _check_positive_int("num_steps", num_steps)
    _check_positive_int("batch_size", batch_size, allow_none=True)
    _check_positive_int("log_every", log_every)
    _check_positive_int("num_particles", num_particles)
    _check_positive_int("checkpoint_every", checkpoint_every, allow_none=True)
    _check_positive_int("patience", patience, allow_none=True)
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"fit_svi: learning_rate must be a positive number, got {learning_rate!r}")
    if not (isinstance(learning_rate_decay, (int, float)) and 0 < learning_rate_decay <= 1):
        raise ValueError(f"fit_svi: learning_rate_decay must lie in (0, 1], "
                         f"got {learning_rate_decay!r}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"fit_svi: clip_norm must be positive or None, got {clip_norm!r}")
    if not isinstance(kl_warmup, int) or kl_warmup < 0:
        raise ValueError(f"fit_svi: kl_warmup must be an int >= 0, got {kl_warmup!r}")
    if elbo not in ("trace", "iwae", "traceenum"):
        raise ValueError(f"fit_svi: elbo must be 'trace', 'iwae' or 'traceenum', got {elbo!r}")
    if elbo == "iwae" and num_particles < 2:
        raise ValueError(f"fit_svi: elbo='iwae' needs num_particles >= 2, got {num_particles}")
    if patience is not None and validation is None:
        raise ValueError("fit_svi: patience needs validation data (early stopping uses the "
                         "held-out ELBO, never ground truth)")
    if resume and checkpoint is None:
        raise ValueError("fit_svi: resume=True needs a checkpoint path")
    num_data = _check_data(model, data, "data", training=True)
    if validation is not None:
        validation = (validation,) if isinstance(validation, torch.Tensor) else tuple(validation)
        if len(validation) != len(data):
            raise ValueError(f"fit_svi: validation must hold as many tensors as data "
                             f"({len(data)}), got {len(validation)}")
        _check_data(model, validation, "validation")
    batch_size = num_data if batch_size is None else min(batch_size, num_data)
    checkpoint_every = checkpoint_every or 10 * log_every

    # ---- set up -----------------------------------------------------------------------
    device = resolve_device(device)
    if isinstance(model, torch.nn.Module):
        model.to(device)
        model.train()
    data = tuple(None if d is None else d.to(device) for d in data)
    if validation is not None:
        validation = tuple(None if d is None else d.to(device) for d in validation)
    pyro.set_rng_seed(seed)
    batches = _Batches(num_data, batch_size, seed)

    takes_num_data = "num_data" in inspect.signature(model.model).parameters
    model_fn, guide_fn = model.model, model.guide
    if not takes_num_data and batch_size < num_data:
        model_fn = poutine.scale(model_fn, scale=num_data / batch_size)
        guide_fn = poutine.scale(guide_fn, scale=num_data / batch_size)
    if elbo == "traceenum":
        trace_elbo = TraceEnum_ELBO(num_particles=num_particles, max_plate_nesting=1,
                                    vectorize_particles=num_particles > 1)
    else:
        trace_elbo = Trace_ELBO(num_particles=num_particles,
                                vectorize_particles=num_particles > 1)
    annealing = _ScaleLatents(1.0)

    def batch_args(index):
        args = data if index is None else tuple(None if d is None else d[index] for d in data)
        return args, ({"num_data": num_data} if takes_num_data else {})

    if elbo == "iwae":
        probe = batch_args(torch.arange(min(2, num_data)))
        nesting, _ = plate_structure(model.model, model.guide, *probe)

        def negative_bound(args, kwargs=None, latent_factor=1.0):
            """Minus the importance-weighted bound, summed over the batch (unscaled)."""
            weights = log_weights(model.model, model.guide, args, kwargs,
                                  num_particles=num_particles, nesting=nesting,
                                  latent_factor=latent_factor)
            return -(torch.logsumexp(weights, 0) - math.log(num_particles)).sum()

        def loss_fn(args, kwargs):
            return num_data / batch_size * negative_bound(args, kwargs, annealing.factor)
    else:
        def negative_bound(args, kwargs=None, latent_factor=1.0):
            return trace_elbo.loss(model.model, model.guide, *args)

        annealed_model, annealed_guide = annealing(model_fn), annealing(guide_fn)

        def loss_fn(args, kwargs):
            return trace_elbo.differentiable_loss(annealed_model, annealed_guide, *args,
                                                  **kwargs)

    # Collect parameters: the module's own, plus pyro.param sites of user models.
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    with poutine.trace(param_only=True) as param_capture:
        loss_fn(*batch_args(batches.at(0)))
    seen = {id(p) for p in params}
    for name in sorted(param_capture.trace.nodes):
        p = param_capture.trace.nodes[name]["value"].unconstrained()
        if id(p) not in seen:
            params.append(p)
            seen.add(id(p))
    if not params:
        raise ValueError("fit_svi: the model and guide have no parameters to learn")
    optimizer = torch.optim.Adam(params, lr=learning_rate)

    def state():
        return {
            "model": model.state_dict() if isinstance(model, torch.nn.Module) else None,
            "param_store": pyro.get_param_store().get_state(),
        }

    def load_state(s):
        # Copy values in place: the optimizer holds these very tensors.
        if s["model"] is not None:
            model.load_state_dict(s["model"])
        current = dict(pyro.get_param_store().named_parameters())
        with torch.no_grad():
            for name, value in s["param_store"]["params"].items():
                if name in current:
                    current[name].copy_(value)

    losses: list[float] = []
    history: list[tuple[int, float]] = []
    best = {"loss": math.inf, "step": None, "state": None, "bad_evals": 0}
    start = 0
    if resume and os.path.exists(checkpoint):
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved["batch_size"] != batch_size or saved["num_data"] != num_data:
            raise ValueError(f"fit_svi: checkpoint {checkpoint} was written with batch_size="
                             f"{saved['batch_size']} and {saved['num_data']} data points; this "
                             f"call has batch_size={batch_size} and {num_data}")
        load_state(saved["state"])
        optimizer.load_state_dict(saved["optimizer"])
        _set_rng_state(saved["rng"])
        losses, history, best = list(saved["losses"]), list(saved["history"]), saved["best"]
        start = saved["step"]

    def write_checkpoint(step, torch_rng=None):
        """``torch_rng``: the RNG state to store, when not the current one (a step that was
        interrupted halfway is stored as not yet begun)."""
        if checkpoint is not None:
            _save(checkpoint, {
                "step": step, "state": state(), "optimizer": optimizer.state_dict(),
                "rng": _rng_state(torch_rng), "losses": losses,
                "history": history, "best": best, "batch_size": batch_size,
                "num_data": num_data,
            })

    def evaluate() -> float:
        total, count = 0.0, 0
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda"
                                                    else []):
            torch.manual_seed(seed + 1)  # common random numbers across evaluations
            num_val = next(v for v in validation if v is not None).shape[0]
            for lo in range(0, num_val, 4096):
                chunk = tuple(None if v is None else v[lo:lo + 4096] for v in validation)
                n = next(v for v in chunk if v is not None).shape[0]
                total += float(negative_bound(chunk))
                count += n
        return total / count

    # ---- train ------------------------------------------------------------------------
    bar = tqdm(total=num_steps, initial=start, disable=not progress, desc="fit_svi",
               dynamic_ncols=True, leave=False)
    stopped_early = False
    step = start
    step_rng = None
    t0 = time.perf_counter()
    try:
        while step < num_steps:
            step_rng = torch.get_rng_state()  # so an interrupted step can be replayed exactly
            annealing.factor = min(1.0, (step + 1) / kl_warmup) if kl_warmup else 1.0
            if learning_rate_decay != 1.0:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate * learning_rate_decay ** (step / num_steps)
            try:
                loss = loss_fn(*batch_args(batches.at(step)))
            except ValueError as error:
                # With validation on, a NaN reaches a distribution's parameters first.
                if "invalid values" not in str(error):
                    raise
                loss = torch.tensor(float("nan"))
            value = loss.detach().item()
            optimizer.zero_grad(set_to_none=True)
            if math.isfinite(value):
                loss.backward()
                grads = [p.grad for p in params if p.grad is not None]
                grad_norm = (torch.nn.utils.clip_grad_norm_(params, clip_norm)
                             if clip_norm is not None else torch.nn.utils.get_total_norm(grads))
            if not math.isfinite(value) or not torch.isfinite(grad_norm):
                what = f"loss is {value}" if not math.isfinite(value) else "gradient is not finite"
                write_checkpoint(step, step_rng)
                saved_to = f" and written to {checkpoint}" if checkpoint is not None else ""
                raise NonFiniteLossError(
                    f"fit_svi: {what} at step {step} (0-based, of {num_steps}); the parameters "
                    f"after step {step - 1} are kept in the model{saved_to}. Try a smaller "
                    f"learning_rate, clip_norm, kl_warmup, or check the data.")
            optimizer.step()
            losses.append(value / num_data)
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == num_steps:
                postfix = {"loss": f"{np.mean(losses[-log_every:]):.4g}"}
                if validation is not None:
                    val = evaluate()
                    history.append((step, val))
                    postfix["val"] = f"{val:.4g}"
                    if val < best["loss"]:
                        best.update(loss=val, step=step, state=copy.deepcopy(state()),
                                    bad_evals=0)
                    else:
                        best["bad_evals"] += 1
                        if patience is not None and best["bad_evals"] >= patience:
                            stopped_early = True
                bar.set_postfix(postfix)
            if step % checkpoint_every == 0 or step == num_steps or stopped_early:
                write_checkpoint(step)
            if stopped_early:
                break
    except KeyboardInterrupt:
        write_checkpoint(step, step_rng)
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    if validation is not None and best["state"] is not None:
        load_state(best["state"])
    return FitResult(
        losses=np.asarray(losses), validation_losses=history,
        best_step=best["step"] if validation is not None else None,
        stopped_early=stopped_early, time_s=elapsed, device=str(device),
    )
