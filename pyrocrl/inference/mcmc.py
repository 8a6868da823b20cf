"""NUTS for models whose exact posterior is affordable (e.g. with the local latents integrated
out analytically), and its conversion to ArviZ ``InferenceData``."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from pyrocrl.inference.posterior import _arviz
from pyrocrl.inference.svi import resolve_device

if TYPE_CHECKING:
    import arviz

__all__ = ["fit_mcmc", "mcmc_to_inference_data"]

CHAIN_METHODS = ("sequential", "parallel")


def _check_int(name, value, minimum):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"fit_mcmc: {name} must be an int >= {minimum}, got {value!r}")


def _target_fn(model, target: str):
    """The Pyro program NUTS samples: ``model.<target>``, else ``model.model``, else
    ``model`` itself when it is a plain callable."""
    fn = getattr(model, target, None)
    if callable(fn):
        return fn
    if target != "marginal_model":
        raise ValueError(f"fit_mcmc: target={target!r} is not a method of "
                         f"{type(model).__name__}")
    fn = getattr(model, "model", None)
    if callable(fn):
        return fn
    if callable(model):
        return model
    raise TypeError(f"fit_mcmc: model must be a Pyro program or have a .marginal_model or "
                    f".model method, got {type(model).__name__}")


def _sequential_mcmc(kernel, num_samples, warmup_steps, num_chains, progress) -> MCMC:
    """An ``MCMC`` that draws its chains one after the other in this process.

    Pyro draws several chains in worker processes whenever enough CPUs are free; that is slow
    to start (``spawn``) or fragile with threaded torch (``fork``). Falls back to Pyro's own
    choice if its internal sampler class is not available.
    """
    try:
        from pyro.infer.mcmc.api import _UnarySampler
    except ImportError:  # pragma: no cover - depends on Pyro internals
        return MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                    num_chains=num_chains, disable_progbar=not progress)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=1,
                disable_progbar=not progress)
    mcmc.num_chains = num_chains
    mcmc._diagnostics = [None] * num_chains
    mcmc.sampler = _UnarySampler(kernel, num_samples, warmup_steps, num_chains,
                                 not progress)
    return mcmc


def fit_mcmc(
    model,
    *data,
    num_samples: int = 500,
    warmup_steps: int = 500,
    num_chains: int = 1,
    seed: int = 0,
    progress: bool = True,
    target: str = "marginal_model",
    chain_method: str = "sequential",
    mp_context: str | None = None,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    full_mass: bool = False,
    jit_compile: bool = False,
    init_strategy=None,
    device: str | torch.device = "cpu",
) -> MCMC:
    """Sample the posterior of ``model``'s latent sites with NUTS.

    The program sampled is ``model.marginal_model`` when ``model`` has it (the model with
    its local latents integrated out, e.g. :meth:`pyrocrl.models.FactorAnalysis.marginal_model`,
    so the sampler only moves the globals), else ``model.model`` (every latent site, local
    ones included: slow for large N), else ``model`` itself if it is a Pyro function. It is
    called as ``fn(*data)``.

    Args:
        model: a pyrocrl model or a Pyro program; if it has ``check_data``, that runs first.
        *data: the data tensors, as for :func:`~pyrocrl.inference.fit_svi`.
        num_samples: draws kept per chain.
        warmup_steps: adaptation steps per chain (step size and mass matrix), discarded.
            Below about 50 the step size often fails to adapt and a chain never moves (a
            ``RuntimeWarning`` says so).
        num_chains: independent chains (each from its own random initial point), needed for
            a between-chain ``r_hat``.
        seed: seeds Pyro/torch/NumPy before sampling; the run is reproducible given it (with
            ``chain_method="sequential"``).
        progress: show Pyro's progress bar.
        target: the method of ``model`` to sample (default ``"marginal_model"``, falling back
            to ``"model"`` when absent).
        chain_method: ``"sequential"`` (one process, chain after chain: predictable, fine on a
            few cores) or ``"parallel"`` (Pyro's worker processes, one per chain, when enough
            CPUs are free).
        mp_context: multiprocessing start method for ``"parallel"`` (e.g. ``"spawn"``).
        target_accept_prob, max_tree_depth: passed to :class:`pyro.infer.NUTS`.
        full_mass: adapt a dense mass matrix instead of a diagonal one: fewer leapfrog steps
            when the posterior is correlated (factor loadings are), at O(d^2) memory.
        jit_compile: compile the potential energy with ``torch.jit.trace`` (about 2x faster
            per step for small models, plus a compilation at the start of each chain; the
            model must be traceable, i.e. free of data-dependent Python control flow).
        init_strategy: a Pyro init strategy (default Pyro's ``init_to_uniform``: uniform in
            (-2, 2) in unconstrained space, drawn afresh for each chain); e.g.
            ``pyro.infer.autoguide.init_to_value(values=...)`` to start at a MAP fit.
        device: where to sample. NUTS takes thousands of small sequential steps, so the CPU
            is usually faster than a GPU for the models this is meant for.

    Returns:
        The :class:`pyro.infer.MCMC` object after ``run``: ``.get_samples()``,
        ``.diagnostics()``, ``.summary()``; :func:`mcmc_to_inference_data` converts it for
        ArviZ. The wall-clock time of the run is in its ``run_time_s`` attribute.
    """
    _check_int("num_samples", num_samples, 1)
    _check_int("warmup_steps", warmup_steps, 0)
    _check_int("num_chains", num_chains, 1)
    _check_int("max_tree_depth", max_tree_depth, 1)
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"fit_mcmc: chain_method must be one of {CHAIN_METHODS}, "
                         f"got {chain_method!r}")
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"fit_mcmc: target_accept_prob must lie in (0, 1), "
                         f"got {target_accept_prob!r}")
    fn = _target_fn(model, target)
    for i, d in enumerate(data):
        if d is not None and not isinstance(d, torch.Tensor):
            raise TypeError(f"fit_mcmc: data argument {i} must be a torch.Tensor or None, "
                            f"got {type(d).__name__}")
    check = getattr(model, "check_data", None)
    if check is not None:
        check(*data)
    device = resolve_device(device)
    if isinstance(model, torch.nn.Module):
        model.to(device)
    data = tuple(None if d is None else d.to(device) for d in data)

    kernel_kwargs = dict(target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
                         full_mass=full_mass, jit_compile=jit_compile)
    if jit_compile:
        kernel_kwargs.update(ignore_jit_warnings=True, jit_options={"check_trace": False})
    if init_strategy is not None:
        kernel_kwargs["init_strategy"] = init_strategy
    kernel = NUTS(fn, **kernel_kwargs)
    if num_chains > 1 and chain_method == "sequential":
        mcmc = _sequential_mcmc(kernel, num_samples, warmup_steps, num_chains, progress)
    else:
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                    num_chains=num_chains, disable_progbar=not progress, mp_context=mp_context)
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Pyro's jit_compile is built on torch.jit.trace, which recent PyTorch deprecates;
        # nothing the caller can act on.
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated",
                                category=DeprecationWarning)
        mcmc.run(*data)
    mcmc.run_time_s = time.perf_counter() - start
    _warn_if_stuck(mcmc)
    return mcmc


def _warn_if_stuck(mcmc: MCMC) -> None:
    """Warn about chains whose draws never changed (usually a step size that failed to
    adapt in too short a warmup)."""
    samples = mcmc.get_samples(group_by_chain=True)
    if not samples or mcmc.num_samples < 2:
        return
    moved = torch.zeros(mcmc.num_chains, dtype=torch.bool)
    for value in samples.values():
        flat = value.reshape(value.shape[0], value.shape[1], -1)
        moved |= (flat != flat[:, :1]).flatten(1).any(1).cpu()
    stuck = (~moved).nonzero().flatten().tolist()
    if stuck:
        warnings.warn(f"fit_mcmc: chain(s) {stuck} never moved in {mcmc.num_samples} draws "
                      f"(every proposal rejected); the step size probably failed to adapt. "
                      f"Use more warmup_steps (at least 50-100).", RuntimeWarning,
                      stacklevel=3)


def mcmc_to_inference_data(mcmc: MCMC, **kwargs) -> arviz.InferenceData:
    """``arviz.from_pyro(mcmc, **kwargs)``: groups ``posterior`` (dims ``chain, draw, ...``),
    ``sample_stats`` (``diverging``), ``log_likelihood`` (per observed site and data point,
    when the model can be vectorized over draws) and ``observed_data``, so ``az.summary``
    (with ``r_hat`` and ``ess_bulk``), ``az.loo`` and ``az.plot_trace`` work.

    Args:
        mcmc: a :class:`pyro.infer.MCMC` after ``run``, e.g. from :func:`fit_mcmc`.
        **kwargs: passed to ``arviz.from_pyro`` (``coords``, ``dims``, ``log_likelihood``,
            ``posterior_predictive``, ...).
    """
    if not isinstance(mcmc, MCMC):
        raise TypeError(f"mcmc_to_inference_data: mcmc must be a pyro.infer.MCMC, "
                        f"got {type(mcmc).__name__}")
    if getattr(mcmc, "_samples", None) is None:
        raise ValueError("mcmc_to_inference_data: mcmc has no samples; call mcmc.run(...) "
                         "(or use fit_mcmc) first")
    return _arviz().from_pyro(mcmc, **kwargs)
