"""One SVI loop for every pyrocrl model (and for users' own Pyro models)."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import JitTrace_ELBO, JitTraceEnum_ELBO, Trace_ELBO, TraceEnum_ELBO
from pyro.poutine.messenger import Messenger
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate
from tqdm.auto import tqdm

from pyrocrl._checks import check_positive_int
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
        rank: with ``fit_svi(..., strategy="ddp")``, the rank of the process this result was
            returned in (a script re-run per rank returns in every rank: keep output to
            ``rank == 0``); 0 otherwise.
        world_size: the number of processes that trained together (1 without ``strategy``).
    """

    losses: np.ndarray
    validation_losses: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    stopped_early: bool = False
    time_s: float = 0.0
    device: str = "cpu"
    metrics: dict[str, list[float]] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1

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


_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")  # see distributed.START_METHODS


def _check_positive_int(name, value, allow_none=False):
    if allow_none and value is None:
        return
    check_positive_int("fit_svi", name, value)


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


# ---- data sources: tensors, a map-style Dataset, or a DataLoader ------------------------------

def _data_kind(data: Sequence) -> str:
    """``"tensors"``, ``"dataset"`` (a map-style Dataset) or ``"loader"`` (a DataLoader)."""
    streamed = [d for d in data if isinstance(d, (Dataset, DataLoader))]
    if not streamed:
        return "tensors"
    if len(data) != 1:
        raise TypeError(f"fit_svi: a {type(streamed[0]).__name__} must be the only data "
                        f"argument (its items hold every component, e.g. (x, u)); got "
                        f"{len(data)} data arguments")
    if isinstance(data[0], IterableDataset):
        raise TypeError("fit_svi: data is an IterableDataset; fit_svi draws batches by index "
                        "from a map-style Dataset (__getitem__, __len__), or iterates a "
                        "DataLoader: wrap it in a torch.utils.data.DataLoader")
    return "loader" if isinstance(data[0], DataLoader) else "dataset"


def _shape_of(component, what: str, label: str) -> tuple:
    """The shape of one component of a Dataset item (numbers count as 0-d)."""
    if isinstance(component, (torch.Tensor, np.ndarray)):
        return tuple(component.shape)
    if isinstance(component, (bool, int, float, np.number)):
        return ()
    raise TypeError(f"fit_svi: {what} items must be tensors or tuples of tensors (one data "
                    f"point per index); {label} holds a {type(component).__name__}")


def _describe(item) -> str:
    if isinstance(item, (tuple, list)):
        return f"a {type(item).__name__} of {len(item)}"
    return f"a single {type(item).__name__}"


def _collate(items: Sequence, indices: Sequence[int] | None = None,
             what: str = "data") -> tuple[torch.Tensor, ...]:
    """Stack the items of one batch with ``default_collate`` into a tuple of tensors, after
    checking that every item has the structure and shapes of the first. ``indices`` (the
    items' indices in the Dataset) only label error messages. Runs in DataLoader workers too,
    so it is a module-level function."""
    def label(k):
        return f"item {indices[k]}" if indices is not None else f"item {k} of the batch"

    single = not isinstance(items[0], (tuple, list))
    reference = (items[0],) if single else tuple(items[0])
    shapes = [_shape_of(c, what, label(0)) for c in reference]
    for k, item in enumerate(items):
        parts = tuple(item) if isinstance(item, (tuple, list)) else (item,)
        if isinstance(item, (tuple, list)) == single or len(parts) != len(reference):
            raise ValueError(f"fit_svi: {what} items must all have the same structure; "
                             f"{label(0)} is {_describe(items[0])} but {label(k)} is "
                             f"{_describe(item)}")
        for j, (component, shape) in enumerate(zip(parts, shapes)):
            got = _shape_of(component, what, label(k))
            if got != shape:
                raise ValueError(f"fit_svi: {what} items have inconsistent shapes: component "
                                 f"{j} of {label(0)} has shape {shape} but of {label(k)} "
                                 f"{got}; every item (one data point) must have the same shape")
    batch = default_collate(list(items))
    return (batch,) if single else tuple(batch)


def _signature(batch: Sequence[torch.Tensor]) -> tuple:
    return tuple((tuple(t.shape[1:]), t.dtype) for t in batch)


class _Consistency:
    """Remembers the per-item shapes and dtypes of the first batch and raises when a later
    batch differs (a Dataset whose items change shape halfway, a ragged DataLoader)."""

    def __init__(self, what: str):
        self.what, self.reference = what, None

    def __call__(self, batch: tuple, where: str) -> tuple:
        if self.reference is None:
            self.reference = _signature(batch)
            return batch
        signature = _signature(batch)
        if len(signature) != len(self.reference):
            raise ValueError(f"fit_svi: {self.what} {where} has {len(signature)} components, "
                             f"the first batch had {len(self.reference)}")
        for j, (got, first) in enumerate(zip(signature, self.reference)):
            if got != first:
                raise ValueError(f"fit_svi: {self.what} items have inconsistent shapes: "
                                 f"component {j} of {where} has per-item shape {got[0]} and "
                                 f"dtype {got[1]}, the first batch had {first[0]} and {first[1]}")
        return batch


class _DatasetReader:
    """Fetches the batch of given indices from a map-style Dataset (its ``__getitems__`` when
    it has one, else ``__getitem__`` per index) and collates it into a tuple of tensors."""

    def __init__(self, dataset, what: str):
        self.dataset, self.what = dataset, what
        try:
            self.num_data = len(dataset)
        except TypeError:
            raise TypeError(f"fit_svi: the {what} Dataset ({type(dataset).__name__}) needs "
                            f"__len__ (the number of data points)") from None
        if self.num_data == 0:
            raise ValueError(f"fit_svi: the {what} Dataset ({type(dataset).__name__}) is empty "
                             f"(len 0)")
        self.consistent = _Consistency(f"{what} Dataset")

    def fetch(self, index: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """``index``: dataset indices in batch order; ``None``: every item, in order."""
        indices = list(range(self.num_data)) if index is None else index.tolist()
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(indices) if getitems else [self.dataset[i] for i in indices]
        batch = _collate(items, indices, f"{self.what} Dataset")
        return self.consistent(batch, f"the batch starting at item {indices[0]}")


class _StepIndices:
    """Batch sampler for DataLoader workers: the indices of the batches of steps
    ``start, ..., stop - 1`` (a function of ``(seed, step)``, as in the single-process
    loop)."""

    def __init__(self, batches: _Batches, start: int, stop: int):
        self.batches, self.start, self.stop = batches, start, stop

    def __iter__(self):
        for step in range(self.start, self.stop):
            index = self.batches.at(step)
            yield list(range(self.batches.num_data)) if index is None else index.tolist()

    def __len__(self):
        return max(0, self.stop - self.start)


def _loader_num_data(loader: DataLoader) -> int:
    try:
        num_data = len(loader.dataset)
    except TypeError:
        raise TypeError(f"fit_svi: the DataLoader's dataset ({type(loader.dataset).__name__}) "
                        f"needs __len__: len(loader.dataset) is the number of data points the "
                        f"ELBO is scaled to (num_data)") from None
    if num_data == 0:
        raise ValueError("fit_svi: the DataLoader's dataset is empty (len 0)")
    return num_data


def _loader_batch(batch, where: str) -> tuple[torch.Tensor, ...]:
    batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    for j, component in enumerate(batch):
        if not isinstance(component, torch.Tensor):
            raise TypeError(f"fit_svi: DataLoader batches must be a tensor or a tuple/list of "
                            f"tensors; component {j} of {where} is a {type(component).__name__}")
        if component.shape[:1] != batch[0].shape[:1]:
            raise ValueError(f"fit_svi: component {j} of {where} of the DataLoader holds "
                             f"{component.shape[0] if component.ndim else 'no'} data points, "
                             f"component 0 holds {batch[0].shape[0]}")
    return batch


class _OwnTorchRNG:
    """A torch RNG stream of its own, swapped in around a DataLoader's iteration: the loader's
    shuffling (and its workers' base seed) then depend on ``seed`` alone, and the model's
    random draws are those of a run on tensors."""

    def __init__(self, seed: int):
        self.state = torch.Generator().manual_seed(seed + 2**32).get_state()

    def __enter__(self):
        self.outer = torch.get_rng_state()
        torch.set_rng_state(self.state)

    def __exit__(self, *exc_info):
        self.state = torch.get_rng_state()
        torch.set_rng_state(self.outer)


def _loader_batches(loader: DataLoader, seed: int):
    """The loader's batches, epoch after epoch, as tuples of tensors."""
    consistent = _Consistency("DataLoader")
    rng = _OwnTorchRNG(seed)
    epoch = 0
    while True:
        with rng:
            iterator = iter(loader)
        count = 0
        while True:
            with rng:
                batch = next(iterator, None)
            if batch is None:
                break
            where = f"batch {count} of epoch {epoch}"
            count += 1
            yield consistent(_loader_batch(batch, where), where)
        if count == 0:
            raise ValueError("fit_svi: the DataLoader yielded no batches (an empty dataset, or "
                             "drop_last=True with fewer data points than its batch_size)")
        epoch += 1


def _check_first(model, batch: tuple, training: bool, where: str) -> None:
    """Run the model's input check on one batch of streamed data, naming that batch."""
    check = getattr(model, "check_training_data" if training else "check_data", None)
    if check is None:
        check = getattr(model, "check_data", None)
    if check is None:
        return
    try:
        check(*batch)
    except (TypeError, ValueError) as error:
        if hasattr(error, "add_note"):
            error.add_note(f"(fit_svi ran this check on {where}, before training)")
        raise


def _batch_len(args) -> int:
    return next(d for d in args if d is not None).shape[0]


JIT_PREFIX = "_fit_svi_jit"  # param-store names of a module's parameters during a jit=True fit


def _step_checks(validate_every_step: bool, first_step: bool):
    """The context of one step's loss: distribution checks under the global setting on the
    first step of a run (or every step if asked), off otherwise (see ``validate_every_step``
    in :func:`fit_svi`)."""
    if validate_every_step or first_step:
        return contextlib.nullcontext()
    return pyro.validation_enabled(False)


def _forget_jit_params() -> None:
    store = pyro.get_param_store()
    for name in [n for n in store.keys() if n.startswith(JIT_PREFIX + "$$$")]:
        del store[name]


class _Objective:
    """fit_svi's training loss and held-out bound, built in every training process.

    ``loss(batch)``: the batch's negative ELBO (or IWAE bound) scaled to ``num_data`` points,
    with the latent sites scaled by ``annealing.factor`` (KL warm-up). ``negative_bound(chunk)``:
    the unscaled, unannealed negative bound summed over a chunk of held-out data.
    ``probe``: one batch; its first two rows trace the plates for ``elbo="iwae"``.
    ``rescale``: batches may be smaller than ``num_data``, so a model without a ``num_data``
    argument gets its whole ELBO scaled by ``num_data / batch size``.
    """

    def __init__(self, model, probe, *, elbo: str, num_particles: int, num_data: int,
                 rescale: bool, jit: bool = False):
        self.model, self.elbo, self.num_data = model, elbo, num_data
        self.num_particles = num_particles
        takes_num_data = "num_data" in inspect.signature(model.model).parameters
        self.kwargs = {"num_data": num_data} if takes_num_data else {}
        self.annealing = _ScaleLatents(1.0)
        if elbo == "iwae":
            probe = tuple(None if d is None else d[:2] for d in probe)
            self.nesting, _ = plate_structure(model.model, model.guide, probe, self.kwargs)
            return
        options = dict(num_particles=num_particles, vectorize_particles=num_particles > 1)
        if elbo == "traceenum":
            options["max_plate_nesting"] = 1
        eager, traced = ((TraceEnum_ELBO, JitTraceEnum_ELBO) if elbo == "traceenum"
                         else (Trace_ELBO, JitTrace_ELBO))
        self.eager_elbo = eager(**options)
        self.trace_elbo = traced(ignore_jit_warnings=True, **options) if jit else self.eager_elbo
        model_fn, guide_fn = model.model, model.guide
        if not takes_num_data and rescale:
            model_fn, guide_fn = self._scaled(model_fn), self._scaled(guide_fn)
        self.eager_fns = self._annealed(model_fn), self._annealed(guide_fn)
        self.annealed = (tuple(self._registered(fn) for fn in self.eager_fns) if jit
                         else self.eager_fns)

    def _registered(self, fn):
        # A traced loss takes every parameter as an input, and it finds them as pyro.param
        # sites: register the module's own parameters (the same tensors) under JIT_PREFIX.
        if not isinstance(self.model, torch.nn.Module):
            return fn

        def registered_fn(*args, **kwargs):
            pyro.module(JIT_PREFIX, self.model)
            return fn(*args, **kwargs)
        return registered_fn

    def _annealed(self, fn):
        # the messenger costs a stack frame per sample site: enter it only while annealing
        def annealed_fn(*args, **kwargs):
            if self.annealing.factor == 1.0:
                return fn(*args, **kwargs)
            with self.annealing:
                return fn(*args, **kwargs)
        return annealed_fn

    def _scaled(self, fn):
        def scaled_fn(*args, **kwargs):
            size = _batch_len(args)  # a DataLoader's last batch may be smaller
            if size == self.num_data:
                return fn(*args, **kwargs)
            with poutine.scale(scale=self.num_data / size):
                return fn(*args, **kwargs)
        return scaled_fn

    def _negative_iwae(self, args, kwargs=None, latent_factor=1.0):
        """Minus the importance-weighted bound, summed over the batch (unscaled)."""
        weights = log_weights(self.model.model, self.model.guide, args, kwargs,
                              num_particles=self.num_particles, nesting=self.nesting,
                              latent_factor=latent_factor)
        return -(torch.logsumexp(weights, 0) - math.log(self.num_particles)).sum()

    def loss(self, args) -> torch.Tensor:
        if self.elbo == "iwae":
            return (self.num_data / _batch_len(args)
                    * self._negative_iwae(args, self.kwargs, self.annealing.factor))
        return self.trace_elbo.differentiable_loss(*self.annealed, *args, **self.kwargs)

    def eager_loss(self, args) -> torch.Tensor:
        """:meth:`loss` without the trace (the same value under the same random numbers)."""
        if self.elbo == "iwae":
            return self.loss(args)
        return self.eager_elbo.differentiable_loss(*self.eager_fns, *args, **self.kwargs)

    def compile(self, batch, seed: int, params: Sequence[torch.Tensor]) -> None:
        """Trace the loss on ``batch``, check it against the eager loss under the same
        random numbers and warm the trace up. ``ValueError`` if the loss changes a buffer of
        the model (a trace would not) or the two losses differ. The global RNG, the model's
        buffers and the gradients of ``params`` (none) are left as they were."""
        cuda = [d.device for d in batch if d is not None and d.is_cuda][:1]
        with torch.random.fork_rng(devices=cuda), _kept_buffers(self.model) as before, \
                warnings.catch_warnings():
            # Pyro's JitTrace_ELBO is built on torch.jit.trace, which torch >= 2.9 marks
            # deprecated (fit_svi's docstring says so)
            warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated",
                                    category=DeprecationWarning)
            torch.manual_seed(seed)
            eager = float(self.eager_loss(batch).detach())
            changed = [name for name, value in before.items()
                       if not torch.equal(self.model.get_buffer(name), value)]
            if changed:
                raise ValueError(
                    f"fit_svi: jit=True: the loss of {type(self.model).__name__} changes its "
                    f"buffers {changed} (e.g. a step counter); a traced loss would not. Use "
                    f"jit=False")
            self.loss(batch)  # traces (and draws its noise three times)
            torch.manual_seed(seed)
            traced = float(self.loss(batch).detach())
            # TorchScript's executor profiles the first runs with gradients and then
            # optimizes: do that here rather than in the first training steps
            for _ in range(2):
                self.loss(batch).backward()
        for p in params:
            p.grad = None
        if not (math.isfinite(traced) and math.isfinite(eager)
                and abs(traced - eager) <= 1e-4 * max(1.0, abs(eager))):
            raise ValueError(
                f"fit_svi: jit=True: the traced loss ({traced:.6g}) differs from the eager loss "
                f"({eager:.6g}) on the first batch under the same random numbers. A trace "
                f"fixes Python control flow and Python numbers; this model's computation "
                f"depends on them (e.g. branches on data values or .item()). Use jit=False")

    def negative_bound(self, args):
        if self.elbo == "iwae":
            return self._negative_iwae(args)
        return self.eager_elbo.loss(self.model.model, self.model.guide, *args)


@contextlib.contextmanager
def _kept_buffers(model):
    """Yield ``{name: copy}`` of ``model``'s buffers and put those values back afterwards:
    loss evaluations outside training must not move a model's counters."""
    if not isinstance(model, torch.nn.Module):
        yield {}
        return
    before = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield before
    finally:
        with torch.no_grad():
            for name, value in before.items():
                model.get_buffer(name).copy_(value)


def _store_params(objective: _Objective, batch, exclude=()) -> list[torch.Tensor]:
    """The unconstrained ``pyro.param`` sites that one loss evaluation touches and that are
    not in ``exclude`` (the module's own parameters), in name order."""
    with poutine.trace(param_only=True) as param_capture, _kept_buffers(objective.model):
        objective.eager_loss(batch)
    seen, found = {id(p) for p in exclude}, []
    for name in sorted(param_capture.trace.nodes):
        p = param_capture.trace.nodes[name]["value"].unconstrained()
        if id(p) not in seen:
            found.append(p)
            seen.add(id(p))
    return found


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
    validation: Sequence[torch.Tensor] | torch.Tensor | Dataset | None = None,
    patience: int | None = None,
    num_workers: int = 0,
    strategy: str | None = None,
    num_devices: int | None = None,
    num_nodes: int = 1,
    validate_every_step: bool = False,
    jit: bool = False,
) -> FitResult:
    r"""Fit ``model`` by stochastic variational inference on minibatches of ``data``.

    ``data`` is either tensors, or one map-style ``torch.utils.data.Dataset``, or one
    ``torch.utils.data.DataLoader`` (for data larger than memory):

    * **tensors** (e.g. ``x, u``): minibatched along dim 0 and passed to
      ``model.model(*batch)`` and ``model.guide(*batch)`` (``None`` entries pass through as
      ``None``).
    * **a Dataset** whose ``dataset[i]`` is one data point, a tensor or a tuple of tensors
      (e.g. ``(x_i, u_i)``), and ``len(dataset)`` is N: fit_svi draws the same seeded batch
      indices as for tensors, fetches those items (with the Dataset's ``__getitems__(indices)``
      when it has one, else ``dataset[i]`` per index, in ``num_workers`` worker processes when
      > 0) and stacks them with ``default_collate``. The batch of a step is the same function
      of ``(seed, step)`` as for tensors, so a Dataset holding the same rows trains exactly as
      those tensors would (bit for bit on CPU) and ``resume`` is exact. Only the batches in use
      are in memory: wrap a memory-mapped file (``np.load(path, mmap_mode="r")``) or files on
      disk.
    * **a DataLoader**: its batches (a tensor or a tuple/list of tensors) are used as they
      come, pass after pass, and ``num_data = len(loader.dataset)`` scales the ELBO; the
      loader's own batch size, shuffling and workers apply (fit_svi's ``batch_size`` is
      ignored). Its random draws (shuffling, workers' seeds) come from a torch RNG stream
      of their own, seeded by ``seed``, so the model's noise is that of a run on tensors. The
      order is the loader's, so ``resume`` is refused: pass ``loader.dataset`` itself for an
      exactly resumable run.

    The loss is the negative ELBO (``Trace_ELBO``) of the batch scaled to the full data set:
    when the model's ``model`` method accepts ``num_data`` (all pyrocrl models do), its
    ``"data"`` plate does the scaling; otherwise the whole ELBO is scaled by
    ``N / batch size`` with ``poutine.scale``, which is right for models whose latents are all
    local to the data.

    Parameters are ``model.parameters()`` plus any ``pyro.param`` sites the model or guide
    create; they are optimized with ``torch.optim.Adam``.

    Args:
        model: an object with ``model`` and ``guide`` methods, usually a
            :class:`pyrocrl.models.LatentVariableModel`; if it has ``check_training_data`` or
            ``check_data``, that runs once before training on the tensors, or on the first
            batch of a Dataset or DataLoader (streamed data are never read whole; later batches
            are checked for consistent shapes and dtypes only: a bad value in them stops
            training at its step, with a :class:`NonFiniteLossError` or the model's own error,
            and the state before that step in ``checkpoint``).
        *data: tensors with the samples on dim 0 (e.g. ``x`` and ``u``), or a single Dataset
            or DataLoader (see above).
        num_steps: total number of gradient steps (with ``resume``, counted from the start of
            the original run).
        batch_size: minibatch size; ``None`` or more than N uses the full data. Ignored for a
            DataLoader.
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
            the end, on a non-finite loss, on an error within a step (a batch that cannot be
            read, a model that fails on a batch) and on ``KeyboardInterrupt``. It holds
            parameters, optimizer state, RNG states, the step and the histories (the minibatch
            of a step is a function of ``seed`` and the step, so it needs no state).
        checkpoint_every: defaults to ``log_every * 10``.
        resume: continue from ``checkpoint`` if that file exists (else start fresh). On CPU a
            resumed run reproduces the uninterrupted run's losses exactly (tensors or a
            Dataset; refused for a DataLoader, whose order fit_svi does not control).
        validation: held-out data: a tensor or a tuple like ``data``, or a map-style Dataset
            whose items are like ``data``'s (read in chunks of 4096). Its negative ELBO per
            data point is computed every ``log_every`` steps (with fixed noise); the model
            ends with the parameters of the best evaluation. Ground truth is never used.
        patience: stop after this many evaluations without improvement (needs
            ``validation``).
        validate_every_step: Pyro's and torch's distribution checks (supports, parameter
            constraints, NaN warnings) run on the first step under the global setting
            (``pyro.enable_validation``), so a model bug fails at once with their message;
            later steps run with them off, which saves ~25 % of a small model's step time
            (B12, ``benchmarks/overhead.py``). ``True`` keeps them on at every step. Either
            way a non-finite loss or gradient stops training.
        num_workers: worker processes that read the batches of a Dataset ahead of the
            training step (``torch.utils.data.DataLoader`` workers; the batch indices are
            still drawn by fit_svi, so the run is the same as with ``0``: reading in the
            training process). Only for a Dataset; with ``strategy``, per process.
        strategy: ``None``: train in this process. ``"ddp"``, ``"ddp_spawn"``, ``"ddp_fork"``
            (alias ``"ddp_notebook"``): data-parallel training on PyTorch Lightning (``pip
            install "pyrocrl[distributed]"``) with ``num_devices`` processes per machine on
            ``num_nodes`` machines (gloo on CPU, NCCL on CUDA). The global minibatch of each
            step is the single-process one (same ``seed``, ``batch_size``), split across the
            processes; DDP averages the gradients, so every replica takes the same step, and
            ``losses`` are the global minibatch's. How the processes start:

            * ``"ddp"``: Lightning re-runs the calling script once per extra local process
              (the script must be runnable as ``python script.py ...``), or joins processes
              that ``torchrun``, SLURM or Lightning's environment variables (``MASTER_ADDR``,
              ``MASTER_PORT``, ``NODE_RANK``, ``WORLD_SIZE``) started. Every process returns
              from ``fit_svi`` with the same fitted model and continues the script; keep
              output to ``result.rank == 0``. The way to go on several machines.
            * ``"ddp_spawn"`` / ``"ddp_fork"``: the calling process (a notebook, a test) starts
              the processes and waits; the fitted parameters are loaded back into ``model``.
              Spawn pickles the model and the data (guard the script with
              ``if __name__ == "__main__":``); fork shares them (Linux; on CUDA only if the
              caller has not initialised CUDA; on CPU each forked rank computes with one
              thread, since a fork cannot take the caller's OpenMP threads along).

            Works with tensors or a Dataset (not a DataLoader: the shards are drawn by
            fit_svi), every ``elbo``, ``kl_warmup``, ``learning_rate_decay``, ``clip_norm``,
            ``validation`` (sharded, summed over processes) and ``patience``. ``checkpoint`` is
            written by rank 0 (with every rank's RNG state) and ``resume`` is exact with the
            same number of processes (rank 0 reads the file and broadcasts it). Every
            parameter must be in ``model.parameters()`` (a ``PyroModule``; Pyro's global param
            store is not synchronised). No checkpoint is written on ``KeyboardInterrupt`` or
            on an error in one process: Lightning ends every process; the last periodic
            checkpoint stays.
        num_devices: processes per machine with ``strategy`` (on CUDA: GPUs; ``None``: every
            visible GPU, or 1 on CPU).
        num_nodes: machines with ``strategy``.
        jit: trace the loss once with ``torch.jit.trace`` (Pyro's ``JitTrace_ELBO``, or
            ``JitTraceEnum_ELBO`` for ``elbo="traceenum"``) and run the trace at every step:
            no Python per sample site, so Pyro's overhead goes (B12,
            ``benchmarks/overhead.py``). For models whose computation is the same for every
            batch of one size: a trace fixes Python control flow and Python numbers. Before
            training, the traced loss is checked against the eager loss on the first batch
            under the same random numbers (a ``ValueError`` if they differ). Needs tensors or
            a Dataset (fixed batch sizes), ``elbo`` ``"trace"`` or ``"traceenum"``,
            ``kl_warmup=0`` and no ``strategy``. Held-out evaluations stay eager.
            Pyro's JIT ELBOs are built on ``torch.jit.trace``, which torch >= 2.9 marks
            deprecated; fit_svi silences that one warning while tracing.

    Returns:
        :class:`FitResult`.

    A model that holds independent starts side by side (:class:`~pyrocrl.models.IFlow`'s
    ``num_starts``) may define ``drop_diverged(*batch)``: on a non-finite loss or gradient
    fit_svi calls it, and if it drops the starts responsible (a ``RuntimeWarning`` names
    them) the step is recomputed without them and training goes on. Not with ``jit=True``
    or ``strategy`` (a diverged start stops those runs as before).

    Raises:
        NonFiniteLossError: the loss or gradient became NaN/inf (for a model with
            ``drop_diverged``: in every start); the model keeps the last good parameters
            (also written to ``checkpoint``).
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
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"fit_svi: num_workers must be an int >= 0, got {num_workers!r}")
    _check_positive_int("num_devices", num_devices, allow_none=True)
    _check_positive_int("num_nodes", num_nodes)
    if strategy is not None and strategy not in _STRATEGIES:
        raise ValueError(f"fit_svi: strategy must be None or one of {list(_STRATEGIES)}, got "
                         f"{strategy!r}")
    if strategy is None and (num_devices is not None or num_nodes != 1):
        raise ValueError("fit_svi: num_devices and num_nodes need a strategy (e.g. "
                         "strategy='ddp')")
    kind = _data_kind(data)
    if strategy is not None and kind == "loader":
        raise TypeError(f"fit_svi: strategy={strategy!r} shards the data itself (the batch of "
                        f"each step, split across processes): pass tensors or a map-style "
                        f"Dataset (e.g. loader.dataset), not a DataLoader")
    if num_workers and kind != "dataset":
        raise ValueError(f"fit_svi: num_workers={num_workers} reads the items of a Dataset; "
                         f"tensors are indexed in place and a DataLoader has its own "
                         f"num_workers")
    if resume and kind == "loader":
        raise ValueError("fit_svi: resume=True is refused for a DataLoader: its batch order is "
                         "its own, so a resumed run could not replay the interrupted one. Pass "
                         "loader.dataset (a map-style Dataset) instead: fit_svi then draws the "
                         "batches itself as a function of (seed, step) and resumes exactly")
    if jit:
        for bad, why in ((elbo == "iwae", "elbo='iwae'"), (kl_warmup > 0, f"kl_warmup={kl_warmup}"),
                         (strategy is not None, f"strategy={strategy!r}"),
                         (kind == "loader", "a DataLoader (its last batch may be smaller)")):
            if bad:
                raise ValueError(f"fit_svi: jit=True cannot be used with {why}: the trace fixes "
                                 f"the batch size and every Python number in the loss. Use "
                                 f"jit=False")
    device = resolve_device(device)
    if strategy is not None and device.index is not None:
        raise ValueError(f"fit_svi: with strategy={strategy!r}, device is 'cpu', 'cuda' or "
                         f"'auto' (each process gets its own GPU; choose them with "
                         f"CUDA_VISIBLE_DEVICES), got {str(device)!r}")
    pyro.set_rng_seed(seed)  # before a DataLoader is first iterated: its shuffle uses it
    reader = loader_batches = None
    if kind == "tensors":
        num_data = _check_data(model, data, "data", training=True)
        batch_size = num_data if batch_size is None else min(batch_size, num_data)
        batches = _Batches(num_data, batch_size, seed)
        index = batches.at(0)
        first = data if index is None else tuple(None if d is None else d[index] for d in data)
    elif kind == "dataset":
        reader = _DatasetReader(data[0], "data")
        num_data = reader.num_data
        batch_size = num_data if batch_size is None else min(batch_size, num_data)
        batches = _Batches(num_data, batch_size, seed)
        first = reader.fetch(batches.at(0))
        _check_first(model, first, training=True, where="the first batch of the Dataset")
    else:
        num_data = _loader_num_data(data[0])
        loader_batches = _loader_batches(data[0], seed)
        first = next(loader_batches)
        batch_size = data[0].batch_size or first[0].shape[0]
        batches = None
        _check_first(model, first, training=True, where="the first batch of the DataLoader")
    width = len(first)
    val_reader = None
    if validation is not None:
        if isinstance(validation, DataLoader) or isinstance(validation, IterableDataset):
            raise TypeError("fit_svi: validation must be tensors or a map-style Dataset, got "
                            f"a {type(validation).__name__}")
        if isinstance(validation, Dataset):
            val_reader = _DatasetReader(validation, "validation")
            sample = val_reader.fetch(torch.arange(min(4096, val_reader.num_data)))
            if len(sample) != width:
                raise ValueError(f"fit_svi: validation items must hold as many tensors as the "
                                 f"data's ({width}), got {len(sample)}")
            _check_first(model, sample, training=False,
                         where="the first 4096 items of the validation Dataset")
            del sample
        else:
            validation = ((validation,) if isinstance(validation, torch.Tensor)
                          else tuple(validation))
            if len(validation) != width:
                raise ValueError(f"fit_svi: validation must hold as many tensors as data "
                                 f"({width}), got {len(validation)}")
            _check_data(model, validation, "validation")
    checkpoint_every = checkpoint_every or 10 * log_every
    if strategy is not None:
        try:
            from pyrocrl.inference import distributed
        except ImportError as error:
            raise ImportError(f"fit_svi: strategy={strategy!r} needs PyTorch Lightning: pip "
                              f"install 'pyrocrl[distributed]' ({error})") from error
        run = dict(
            kind=kind, num_data=num_data, batch_size=batch_size, num_workers=num_workers,
            data=(reader.dataset if kind == "dataset"
                  else tuple(None if d is None else d.cpu() for d in data)),
            first=tuple(None if d is None else d.cpu() for d in first),
            validation=val_reader if val_reader is not None else validation,
            validation_kind="dataset" if val_reader is not None else "tensors",
            num_steps=num_steps, learning_rate=learning_rate,
            learning_rate_decay=learning_rate_decay, seed=seed, progress=progress,
            log_every=log_every, clip_norm=clip_norm, kl_warmup=kl_warmup,
            num_particles=num_particles, elbo=elbo, checkpoint=checkpoint,
            checkpoint_every=checkpoint_every, resume=resume, patience=patience,
            validate_every_step=validate_every_step)
        return distributed.fit_ddp(model, run, strategy=strategy, num_devices=num_devices,
                                   num_nodes=num_nodes, device=device)

    # ---- set up -----------------------------------------------------------------------
    if isinstance(model, torch.nn.Module):
        model.to(device)
        model.train()
    pin = device.type == "cuda"

    def to_device(batch):
        return tuple(None if d is None else d.to(device, non_blocking=pin) for d in batch)

    if kind == "tensors":
        data = to_device(data)
    first = to_device(first)
    if validation is not None and val_reader is None:
        validation = to_device(validation)

    objective = _Objective(model, first, elbo=elbo, num_particles=num_particles,
                           num_data=num_data,
                           rescale=batch_size < num_data or kind == "loader", jit=jit)

    # Collect parameters: the module's own, plus pyro.param sites of user models.
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    params += _store_params(objective, first, exclude=params)
    if not params:
        raise ValueError("fit_svi: the model and guide have no parameters to learn")
    # foreach: one fused update for all parameters instead of a Python loop over them (the
    # CPU default is the loop; B12 measures the difference)
    optimizer = torch.optim.Adam(params, lr=learning_rate, foreach=True)
    if jit:
        _forget_jit_params()
        try:
            objective.compile(first, seed, params)
        except Exception:
            _forget_jit_params()  # a refused model leaves the param store as it found it
            raise

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
        if saved.get("strategy") is not None:
            raise ValueError(f"fit_svi: checkpoint {checkpoint} was written by a "
                             f"strategy={saved['strategy']!r} run with {saved['world_size']} "
                             f"processes; resume it with the same strategy and processes")
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

    def validation_chunks():
        if val_reader is not None:
            for lo in range(0, val_reader.num_data, 4096):
                index = torch.arange(lo, min(lo + 4096, val_reader.num_data))
                yield to_device(val_reader.fetch(index))
            return
        num_val = _batch_len(validation)
        for lo in range(0, num_val, 4096):
            yield tuple(None if v is None else v[lo:lo + 4096] for v in validation)

    def evaluate() -> float:
        total, count = 0.0, 0
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda"
                                                    else []):
            torch.manual_seed(seed + 1)  # common random numbers across evaluations
            for chunk in validation_chunks():
                total += float(objective.negative_bound(chunk))
                count += _batch_len(chunk)
        return total / count

    def stream(start):
        """The batch of every step from ``start`` on, on ``device``."""
        if kind == "tensors":
            for step in range(start, num_steps):
                index = batches.at(step)
                yield data if index is None else tuple(None if d is None else d[index]
                                                       for d in data)
        elif kind == "loader":
            yield first
            for batch in loader_batches:
                yield to_device(batch)
        elif num_workers == 0:
            for step in range(start, num_steps):
                yield first if step == 0 else to_device(reader.fetch(batches.at(step)))
        else:
            if start == 0:
                yield first
            workers = DataLoader(
                reader.dataset, batch_sampler=_StepIndices(batches, max(start, 1), num_steps),
                collate_fn=functools.partial(_collate, what="data Dataset"),
                num_workers=num_workers, pin_memory=pin,
                generator=torch.Generator().manual_seed(seed))
            for step, batch in enumerate(workers, max(start, 1)):
                yield to_device(reader.consistent(batch, f"the batch of step {step}"))

    # ---- train ------------------------------------------------------------------------
    def forward_backward(args, rng_state):
        """The step's loss (nan if a distribution refused invalid values) and, when finite,
        its gradients in ``.grad`` and their global norm (unclipped)."""
        try:
            with _step_checks(validate_every_step, step == start):
                loss = objective.loss(args)
        except Exception as error:
            # With validation on, a NaN reaches a distribution's parameters first.
            if not (isinstance(error, ValueError) and "invalid values" in str(error)):
                write_checkpoint(step, rng_state)  # e.g. a bad value in streamed data
                raise
            loss = torch.tensor(float("nan"))
        value = loss.detach().item()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(value):
            return value, torch.tensor(float("nan"))
        loss.backward()
        return value, torch.nn.utils.get_total_norm([p.grad for p in params
                                                     if p.grad is not None])

    # a model of independent starts side by side (IFlow's num_starts) may drop diverged ones
    drop = None if jit else getattr(model, "drop_diverged", None)
    bar = tqdm(total=num_steps, initial=start, disable=not progress, desc="fit_svi",
               dynamic_ncols=True, leave=False)
    stopped_early = False
    step = start
    step_rng = None
    batch_stream = stream(start)
    t0 = time.perf_counter()
    try:
        while step < num_steps:
            step_rng = torch.get_rng_state()  # so an interrupted step can be replayed exactly
            try:
                args = next(batch_stream)
            except Exception:
                write_checkpoint(step, step_rng)  # a batch that cannot be read loses nothing
                raise
            objective.annealing.factor = min(1.0, (step + 1) / kl_warmup) if kl_warmup else 1.0
            if learning_rate_decay != 1.0:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate * learning_rate_decay ** (step / num_steps)
            loss_rng = torch.get_rng_state() if drop is not None else None
            value, grad_norm = forward_backward(args, step_rng)
            while drop is not None and not (math.isfinite(value) and torch.isfinite(grad_norm)):
                dropped = drop(*args)  # None: nothing to drop, every start would be gone
                if dropped is None or (not dropped and not math.isfinite(value)):
                    break
                if dropped:
                    warnings.warn(f"fit_svi: {type(model).__name__} dropped start(s) {dropped}: "
                                  f"their loss or gradient is not finite at step {step} "
                                  f"(0-based, of {num_steps}); the others go on",
                                  RuntimeWarning, stacklevel=2)
                if math.isfinite(value):  # the dropped starts' gradients were zeroed in place
                    grad_norm = torch.nn.utils.get_total_norm(
                        [p.grad for p in params if p.grad is not None])
                    break
                torch.set_rng_state(loss_rng)  # the same noise, without them
                value, grad_norm = forward_backward(args, step_rng)
            if not math.isfinite(value) or not torch.isfinite(grad_norm):
                what = f"loss is {value}" if not math.isfinite(value) else "gradient is not finite"
                write_checkpoint(step, step_rng)
                saved_to = f" and written to {checkpoint}" if checkpoint is not None else ""
                raise NonFiniteLossError(
                    f"fit_svi: {what} at step {step} (0-based, of {num_steps}); the parameters "
                    f"after step {step - 1} are kept in the model{saved_to}. Try a smaller "
                    f"learning_rate, clip_norm, kl_warmup, or check the data.")
            if clip_norm is not None:
                torch.nn.utils.clip_grads_with_norm_(params, clip_norm, grad_norm)
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
        batch_stream.close()  # stops DataLoader workers
        bar.close()
        if jit:
            _forget_jit_params()
    elapsed = time.perf_counter() - t0
    if validation is not None and best["state"] is not None:
        load_state(best["state"])
    return FitResult(
        losses=np.asarray(losses), validation_losses=history,
        best_step=best["step"] if validation is not None else None,
        stopped_early=stopped_early, time_s=elapsed, device=str(device),
    )
