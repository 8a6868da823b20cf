"""Data-parallel SVI on PyTorch Lightning: ``fit_svi(..., strategy="ddp")``.

Every process (rank) holds a replica of the model. At each step the global minibatch of
the single-process loop (a function of ``(seed, step)``) is split into one contiguous shard
per rank; each rank computes the ELBO of its shard scaled to the whole data set, DDP averages
the gradients, and every replica takes the same Adam step. The loss of a step is averaged over
ranks, so ``FitResult.losses`` is the loss of the global minibatch, as in the single-process
loop. Validation is sharded the same way and summed over ranks, so every rank takes the same
early-stopping decisions.

The pattern is Pyro's ``examples/svi_lightning.py``: a ``LightningModule`` wraps the loss, the
``"data"`` plate does not subsample (each rank passes its shard with ``num_data``), and the
parameters exist before the optimizer is built. Needs ``pip install "pyrocrl[distributed]"``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
import shutil
import tempfile
import time
import warnings

import lightning.pytorch as pl
import numpy as np
import pyro
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from pyro import poutine
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pyrocrl.inference.svi import (
    FitResult,
    NonFiniteLossError,
    _batch_len,
    _Batches,
    _collate,
    _Consistency,
    _Objective,
    _rng_state,
    _save,
    _set_rng_state,
    _step_checks,
)

__all__ = ["START_METHODS"]

#: ``strategy`` of :func:`~pyrocrl.inference.fit_svi` -> how Lightning starts the processes:
#: ``"popen"`` re-runs the calling script once per extra local rank (or joins processes that
#: torchrun / SLURM / another launcher already started); ``"spawn"`` and ``"fork"`` start them
#: from the calling process (a notebook, a test), which only waits and gets rank 0's result.
START_METHODS = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork",
                 "ddp_notebook": "fork"}

# Environment variables that Lightning's launchers set in the calling process.
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_RANK_SEED_STRIDE = 1_000_003  # rank r draws its noise from seed + r * stride


class _Rows(Dataset):
    """Tensors (``None`` entries pass through) read a whole batch at a time."""

    def __init__(self, tensors):
        self.tensors = tuple(tensors)
        self.num_data = _batch_len(self.tensors)

    def __len__(self):
        return self.num_data

    def __getitem__(self, i):
        return tuple(None if t is None else t[i] for t in self.tensors)

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(None if t is None else t[index] for t in self.tensors)


def _as_is(batch):
    return batch


class _ShardedSteps:
    """Batch sampler of one rank: its contiguous share of the global minibatch of every step
    ``start, ..., stop - 1`` (the single-process loop's batches, split across ranks)."""

    def __init__(self, batches: _Batches, rank: int, world_size: int, start: int, stop: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size
        self.start, self.stop = start, stop

    def global_batch(self, step: int) -> torch.Tensor:
        index = self.batches.at(step)
        return torch.arange(self.batches.num_data) if index is None else index

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.global_batch(step).tensor_split(self.world_size)[self.rank].tolist()

    def __len__(self):
        return max(0, self.stop - self.start)


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values)
    return values


class _DistributedSVI(pl.LightningModule):
    """One rank of a data-parallel ``fit_svi``. Built in the calling process; everything
    that holds closures (the objective, the data loader) is built in the rank itself, so the
    module pickles for ``ddp_spawn``."""

    def __init__(self, model, run: dict):
        super().__init__()
        self.svi_model = model  # a submodule: DDP synchronises its parameters
        self.run = run
        self.automatic_optimization = False
        self.outcome = None  # set in the rank that trained, at the end

    def __setstate__(self, state):
        super().__setstate__(state)
        _silence_lightning()  # unpickled in a rank started by ddp_spawn

    # -- set-up: after the process group exists, before the data loader is built ----------
    def setup(self, stage: str) -> None:
        run = self.run
        if run["forked"] and os.getpid() != run["caller_pid"]:
            # A forked child inherits the caller's OpenMP thread pool without its threads: its
            # first parallel region can wait forever (seen with OMP_NUM_THREADS=2 on CPU).
            # One thread per rank never enters the pool.
            torch.set_num_threads(1)
        self.rank, self.world_size = self.global_rank, self.trainer.world_size
        self.batches = _Batches(run["num_data"], run["batch_size"], run["seed"])
        self.losses, self.history = [], []
        self.best = {"loss": math.inf, "step": None, "state": None, "bad_evals": 0}
        self.start, self.saved_optimizer = 0, None
        self.pending_rng = None  # applied just before the first step
        if run["resume"]:
            payload = [_load(run["checkpoint"]) if self.rank == 0 else None]
            if self.world_size > 1:
                dist.broadcast_object_list(payload, src=0)  # no shared file system needed
            saved = payload[0]
            if saved is not None:
                _check_resumable(saved, run, self.world_size)
                self.svi_model.load_state_dict(saved["state"]["model"])
                self.saved_optimizer = saved["optimizer"]
                self.pending_rng = saved["rng"][self.rank]
                self.losses, self.history = list(saved["losses"]), list(saved["history"])
                self.best, self.start = saved["best"], saved["step"]
        self.stopped_early = False
        self.consistent = _Consistency("data Dataset")

    def configure_optimizers(self):
        return torch.optim.Adam(self.svi_model.parameters(), lr=self.run["learning_rate"])

    def train_dataloader(self):
        run = self.run
        sampler = _ShardedSteps(self.batches, self.rank, self.world_size, self.start,
                                run["num_steps"])
        if run["kind"] == "dataset":
            dataset = run["data"]
            collate = functools.partial(_collate, what="data Dataset")
        else:
            dataset, collate = _Rows(run["data"]), _as_is
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                          num_workers=run["num_workers"],
                          pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(run["seed"]))

    def on_train_start(self) -> None:
        run = self.run
        first = tuple(None if d is None else d.to(self.device) for d in run["first"])
        self.objective = _Objective(self.svi_model, first, elbo=run["elbo"],
                                    num_particles=run["num_particles"],
                                    num_data=run["num_data"], rescale=True)
        self.optimizer = self.optimizers()
        if self.saved_optimizer is not None:
            self.optimizer.optimizer.load_state_dict(self.saved_optimizer)
            self.saved_optimizer = None
        self.params = [p for p in self.svi_model.parameters() if p.requires_grad]
        self.bar = tqdm(total=run["num_steps"], initial=self.start, desc="fit_svi",
                        disable=not run["progress"] or self.rank != 0, dynamic_ncols=True,
                        leave=False)
        self.t0 = time.perf_counter()

    # -- one step -----------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        run = self.run
        step = self.start + batch_idx
        if batch_idx == 0:
            if self.pending_rng is not None:
                _set_rng_state(self.pending_rng)
            else:
                pyro.set_rng_seed(run["seed"] + _RANK_SEED_STRIDE * self.rank)
        if run["kind"] == "dataset":
            self.consistent(batch, f"the batch of step {step}")
        step_rng = torch.get_rng_state()
        kl_warmup, decay = run["kl_warmup"], run["learning_rate_decay"]
        self.objective.annealing.factor = min(1.0, (step + 1) / kl_warmup) if kl_warmup else 1.0
        if decay != 1.0:
            for group in self.optimizer.optimizer.param_groups:
                group["lr"] = run["learning_rate"] * decay ** (step / run["num_steps"])
        try:
            with _step_checks(run["validate_every_step"], batch_idx == 0):
                loss = self.objective.loss(batch)
        except ValueError as error:
            if "invalid values" not in str(error):  # a NaN met a distribution's check
                raise
            loss = torch.tensor(float("nan"), device=self.device)
        # Shards may differ by one point: weigh each rank's loss so that the mean over ranks
        # (what DDP's gradient average differentiates) is the global minibatch's loss.
        global_size = run["batch_size"]
        shard = _batch_len(batch)
        if shard * self.world_size != global_size:
            loss = loss * (self.world_size * shard / global_size)
        total = _all_reduce_sum(loss.detach().reshape(1).to(torch.float64))
        value = total.item() / self.world_size
        if not math.isfinite(value):
            self._fail(step, step_rng, f"loss is {value}")
        self.optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)  # DDP averages the gradients over ranks here
        clip_norm = run["clip_norm"]
        grads = [p.grad for p in self.params if p.grad is not None]
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.params, clip_norm)
                     if clip_norm is not None else torch.nn.utils.get_total_norm(grads))
        if not torch.isfinite(grad_norm):  # DDP averaged the gradients: every rank stops here
            self._fail(step, step_rng, "gradient is not finite")
        self.optimizer.step()
        self.losses.append(value / run["num_data"])
        step += 1
        self.bar.update(1)
        self._after_step(step)

    def _after_step(self, step: int) -> None:
        run = self.run
        log_every, num_steps = run["log_every"], run["num_steps"]
        if step % log_every == 0 or step == num_steps:
            postfix = {"loss": f"{np.mean(self.losses[-log_every:]):.4g}"}
            if run["validation"] is not None:
                val = self._evaluate()
                self.history.append((step, val))
                postfix["val"] = f"{val:.4g}"
                if val < self.best["loss"]:
                    self.best.update(loss=val, step=step, bad_evals=0,
                                     state=copy.deepcopy(self.svi_model.state_dict()))
                else:
                    self.best["bad_evals"] += 1
                    if run["patience"] is not None and self.best["bad_evals"] >= run["patience"]:
                        self.stopped_early = True
                        self.trainer.should_stop = True
            self.bar.set_postfix(postfix)
        if step % run["checkpoint_every"] == 0 or step == num_steps or self.stopped_early:
            self._write_checkpoint(step)

    def _evaluate(self) -> float:
        """Held-out negative ELBO per data point: each rank its shard, summed over ranks."""
        run, validation = self.run, self.run["validation"]
        reader = validation if run["validation_kind"] == "dataset" else None
        num_val = reader.num_data if reader is not None else _batch_len(validation)
        shard = torch.arange(num_val).tensor_split(self.world_size)[self.rank]
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(run["seed"] + 1 + _RANK_SEED_STRIDE * self.rank)
            for lo in range(0, len(shard), 4096):
                index = shard[lo:lo + 4096]
                chunk = (reader.fetch(index) if reader is not None
                         else tuple(None if v is None else v[index] for v in validation))
                chunk = tuple(None if v is None else v.to(self.device) for v in chunk)
                totals[0] += float(self.objective.negative_bound(chunk))
                totals[1] += len(index)
        totals = _all_reduce_sum(totals)
        return float(totals[0] / totals[1])

    # -- checkpoints, failures, the result --------------------------------------------------
    def _write_checkpoint(self, step: int, torch_rng=None) -> None:
        """Collective: every rank sends its RNG state; rank 0 writes the file."""
        if self.run["checkpoint"] is None:
            return
        states = [None] * self.world_size
        mine = _rng_state(torch_rng)
        if self.world_size > 1:
            dist.all_gather_object(states, mine)
        else:
            states = [mine]
        if self.rank == 0:
            _save(self.run["checkpoint"], {
                "step": step,
                "state": {"model": self.svi_model.state_dict(), "param_store": None},
                "optimizer": self.optimizer.optimizer.state_dict(), "rng": states,
                "losses": self.losses, "history": self.history, "best": self.best,
                "batch_size": self.run["batch_size"], "num_data": self.run["num_data"],
                "world_size": self.world_size, "strategy": "ddp"})

    def _fail(self, step: int, step_rng, what: str):
        """Every rank gets here at the same step (the loss is all-reduced and the gradients
        are the same everywhere), before the optimizer moves."""
        self._write_checkpoint(step, step_rng)
        checkpoint = self.run["checkpoint"]
        saved_to = f" and written to {checkpoint}" if checkpoint is not None else ""
        message = (f"fit_svi: {what} at step {step} (0-based, of {self.run['num_steps']}); the "
                   f"parameters after step {step - 1} are kept in the model{saved_to}. Try a "
                   f"smaller learning_rate, clip_norm, kl_warmup, or check the data.")
        self._finish(error=message)
        raise NonFiniteLossError(message)

    def on_train_end(self) -> None:
        if self.run["validation"] is not None and self.best["state"] is not None:
            self.svi_model.load_state_dict(self.best["state"])
        self._finish()

    def _finish(self, error: str | None = None) -> None:
        self.bar.close()
        self.outcome = {
            "losses": np.asarray(self.losses), "history": self.history,
            "best_step": self.best["step"] if self.run["validation"] is not None else None,
            "stopped_early": self.stopped_early, "time_s": time.perf_counter() - self.t0,
            "device": str(self.device), "rank": self.rank, "world_size": self.world_size,
            "error": error,
        }
        if self.rank == 0 and os.getpid() != self.run["caller_pid"]:
            # ddp_spawn / ddp_fork: the caller only waits; hand it the model and the result
            state = {k: v.detach().cpu() for k, v in self.svi_model.state_dict().items()}
            _save(self.run["result_path"], {"outcome": self.outcome, "state": state})


def _check_resumable(saved: dict, run: dict, world_size: int) -> None:
    checkpoint = run["checkpoint"]
    if saved.get("world_size", 1) != world_size:
        raise ValueError(f"fit_svi: checkpoint {checkpoint} was written by "
                         f"{saved.get('world_size', 1)} process(es); this run has {world_size}. "
                         f"An exact resume needs the same number (each process's random stream "
                         f"is in the checkpoint)")
    if saved["batch_size"] != run["batch_size"] or saved["num_data"] != run["num_data"]:
        raise ValueError(f"fit_svi: checkpoint {checkpoint} was written with batch_size="
                         f"{saved['batch_size']} and {saved['num_data']} data points; this call "
                         f"has batch_size={run['batch_size']} and {run['num_data']}")


def _load(path):
    if path is None or not os.path.exists(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def _check_parameters(model, objective: _Objective, first) -> bool:
    """Raise unless every parameter lives in ``model.parameters()`` (DDP synchronises a
    module's parameters, not Pyro's global param store); return whether some parameter gets
    no gradient (DDP must then look for unused parameters)."""
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    with poutine.trace(param_only=True) as capture:
        loss = objective.loss(first)
    own = {id(p) for p in params}
    outside = sorted(name for name, site in capture.trace.nodes.items()
                     if id(site["value"].unconstrained()) not in own)
    if outside:
        raise ValueError(f"fit_svi: strategy='ddp' synchronises the parameters of the model "
                         f"module (model.parameters()); the pyro.param site(s) {outside} live "
                         f"in Pyro's global param store and would drift apart across ranks. "
                         f"Make them PyroParam attributes of a PyroModule")
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("fit_svi: the model and guide have no parameters to learn")
    grads = torch.autograd.grad(loss, trainable, allow_unused=True)
    return any(g is None for g in grads)


_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def _silence_lightning() -> None:
    """Lightning's info messages and its hints (data loader workers, ...) off in this
    process; fit_svi shows its own progress bar."""
    warnings.filterwarnings("ignore", module=r"lightning\.")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _lightning_quiet():
    """:func:`_silence_lightning` for the duration of the block (in the calling process)."""
    levels = {name: logging.getLogger(name).level for name in _LIGHTNING_LOGGERS}
    with warnings.catch_warnings():
        _silence_lightning()
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def fit_ddp(model, run: dict, *, strategy: str, num_devices: int | None, num_nodes: int,
            device: torch.device) -> FitResult:
    """The ``strategy`` branch of :func:`~pyrocrl.inference.fit_svi`, whose checks have run.

    ``run`` holds the data (``kind``: ``"tensors"`` or ``"dataset"``; ``first``: the first
    batch, on CPU), the validation data and every setting of ``fit_svi``.
    """
    if isinstance(model, torch.nn.Module):
        model.train()
    per_node = num_devices or (torch.cuda.device_count() if device.type == "cuda" else 1)
    world_size = per_node * num_nodes
    if run["batch_size"] < world_size:
        raise ValueError(f"fit_svi: batch_size={run['batch_size']} is split across "
                         f"{world_size} processes; it must be at least that")
    saved = _load(run["checkpoint"]) if run["resume"] else None
    if saved is not None:  # (on another machine than rank 0's, the file may not be here)
        _check_resumable(saved, run, world_size)
    del saved
    first = run["first"]
    own = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    model_device = own[0].device if own else torch.device("cpu")
    probe = tuple(None if d is None else d.to(model_device) for d in first)
    objective = _Objective(model, probe, elbo=run["elbo"], num_particles=run["num_particles"],
                           num_data=run["num_data"], rescale=True)
    find_unused = _check_parameters(model, objective, probe)
    del objective, probe

    result_dir = tempfile.mkdtemp(prefix="pyrocrl-ddp-")
    run = dict(run, caller_pid=os.getpid(), result_path=os.path.join(result_dir, "result.pt"),
               forked=START_METHODS[strategy] == "fork")
    module = _DistributedSVI(model, run)
    def make_trainer():
        return pl.Trainer(
            accelerator="cpu" if device.type == "cpu" else "gpu",
            devices="auto" if num_devices is None else num_devices, num_nodes=num_nodes,
            strategy=DDPStrategy(start_method=START_METHODS[strategy],
                                 process_group_backend="gloo" if device.type == "cpu" else "nccl",
                                 find_unused_parameters=find_unused),
            max_epochs=1, max_steps=-1, use_distributed_sampler=False, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0)

    environment = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    try:
        with _lightning_quiet():
            try:
                make_trainer().fit(module)
            except NonFiniteLossError:
                raise  # this process trained (rank 0 of "ddp"): the model is as it was
            except Exception as error:
                saved = _load(run["result_path"])  # a spawned / forked rank 0 failed
                if saved is not None and saved["outcome"]["error"] is not None:
                    model.load_state_dict(saved["state"])
                    raise NonFiniteLossError(saved["outcome"]["error"]) from error
                raise
        if module.outcome is not None:
            outcome = module.outcome  # this process is a rank (script re-run, torchrun, ...)
        else:
            saved = _load(run["result_path"])
            if saved is None:
                raise RuntimeError("fit_svi: the distributed run ended without a result from "
                                   "rank 0")
            model.load_state_dict(saved["state"])
            outcome = saved["outcome"]
    finally:
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(result_dir, ignore_errors=True)
    return FitResult(
        losses=outcome["losses"], validation_losses=outcome["history"],
        best_step=outcome["best_step"], stopped_early=outcome["stopped_early"],
        time_s=outcome["time_s"], device=outcome["device"], rank=outcome["rank"],
        world_size=outcome["world_size"],
    )
