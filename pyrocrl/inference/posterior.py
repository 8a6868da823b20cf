"""Posterior samples from a fitted guide, as ArviZ ``InferenceData``, and a PSIS check of
how good the guide is."""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Predictive

from pyrocrl.inference.importance import log_weights, per_datum, plate_structure

if TYPE_CHECKING:
    import arviz

__all__ = ["guide_khat", "to_inference_data"]


def _arviz():
    """Import ArviZ lazily (it is slow to import and warns about its 1.x refactor)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _prepare(model, data):
    check = getattr(model, "check_data", None)
    if check is not None:
        check(*data)
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return tuple(d if d is None or param is None else d.to(param.device) for d in data)


def _dims(name: str, ndim: int, observed: bool) -> list[str]:
    last = "feature" if observed else "latent"
    return {1: ["obs"], 2: ["obs", last], 3: ["obs", "time", last]}.get(
        ndim, ["obs"] + [f"{name}_dim_{i}" for i in range(1, ndim)])


def _stack_steps(arrays: dict, axis: int, total: bool = False) -> dict:
    """Join per-time-step sites ``name_1, ..., name_T`` (consecutive indices, equal shapes;
    Pyro's ``pyro.markov`` convention, e.g. the DMM's ``z_t``/``x_t``) into one array ``name``
    with the steps along ``axis`` — or, with ``total``, summed over the steps (a sequence's
    log-likelihood is the sum of its steps'). Other sites pass through unchanged."""
    steps: dict[str, dict[int, str]] = {}
    for key in arrays:
        match = re.fullmatch(r"(.+)_(\d+)", key)
        if match:
            steps.setdefault(match[1], {})[int(match[2])] = key
    out = dict(arrays)
    for base, keys in steps.items():
        order = sorted(keys)
        run = order == list(range(order[0], order[0] + len(order)))
        if (base in arrays or len(order) < 2 or not run
                or len({arrays[keys[t]].shape for t in order}) != 1):
            continue
        stacked = torch.stack([out.pop(keys[t]) for t in order], dim=axis)
        out[base] = stacked.sum(axis) if total else stacked
    return out


def _with_rng(seed):
    return torch.random.fork_rng(devices=[torch.cuda.current_device()]
                                 if torch.cuda.is_available() else [])


def to_inference_data(model, *data, num_samples: int = 200, seed: int = 0) -> arviz.InferenceData:
    r"""Draw ``num_samples`` posterior samples from ``model.guide`` and package them for ArviZ.

    Groups: ``posterior`` (every latent site, dims ``chain, draw, obs, [time,] latent``),
    ``posterior_predictive`` (the observed sites re-sampled given each posterior draw),
    ``log_likelihood`` (per data point: the observed sites' log-density summed over all
    non-sample dimensions, dims ``chain, draw, obs``) and ``observed_data``. So
    ``az.summary``, ``az.loo`` and ``az.plot_ppc`` work. Per-time-step sites ``z_1, ...,
    z_T`` (a model written with ``pyro.markov``, e.g. the DMM) become one variable ``z`` with
    a ``time`` dim, and their log-likelihood is summed over the steps (one value per
    sequence, the unit ``az.loo`` leaves out). Samples come from the variational
    guide, not the exact posterior: check it with :func:`guide_khat`. A model that sums its
    latents out exactly and offers ``sample_posterior(*data, num_samples=...)``
    (:class:`~pyrocrl.models.LinearGaussianSSM`: forward filtering, backward sampling;
    :class:`~pyrocrl.models.IFlow`: the point mass at :math:`g^{-1}(x)`) gets
    those exact draws as ``z`` instead; its log-likelihood is then the marginal
    :math:`\log p(x)` of each sequence and its posterior predictive draws new sequences
    from the fitted model. For MCMC runs use ``az.from_pyro``.

    Args:
        model: a fitted model with ``model``/``guide`` methods whose sample sites all lie in
            plate ``"data"``.
        *data: the data tensors, as for :func:`~pyrocrl.inference.fit_svi`.
        num_samples: draws per data point.
        seed: fixes the draws (the caller's RNG state is left untouched).
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"to_inference_data: num_samples must be a positive int, "
                         f"got {num_samples!r}")
    data = _prepare(model, data)
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.no_grad(), _with_rng(seed):
            torch.manual_seed(seed)
            nesting, observed = plate_structure(model.model, model.guide, data)
            samples = Predictive(poutine.uncondition(model.model), guide=model.guide,
                                 num_samples=num_samples, parallel=True)(*data)
            latents = {k: v for k, v in samples.items() if k not in observed}
            exact = getattr(model, "sample_posterior", None)
            if exact is not None and "z" not in latents:  # latents summed out in the model
                latents["z"] = exact(*data, num_samples=num_samples)
            particles = pyro.plate("num_samples", num_samples, dim=-nesting - 1)
            conditioned = poutine.condition(particles(model.model), data=latents)
            trace = poutine.trace(conditioned).get_trace(*data)
            trace.compute_log_prob()
            observed_values = {k: trace.nodes[k]["value"] for k in observed}
            log_lik = {k: per_datum(trace.nodes[k]["log_prob"]) for k in observed}
            # per-step sites become one variable with a "time" dim (after "obs")
            latents = _stack_steps(latents, axis=2)
            predictive = _stack_steps({k: samples[k] for k in observed}, axis=2)
            observed_values = _stack_steps(observed_values, axis=1)
            log_lik = _stack_steps(log_lik, axis=2, total=True)
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)

    az = _arviz()

    def group(arrays, observed_group, with_chain=True):
        values = {k: v.detach().cpu().numpy()[None] if with_chain else v.detach().cpu().numpy()
                  for k, v in arrays.items()}
        skip = 2 if with_chain else 0
        dims = {k: _dims(k, v.ndim - skip, observed_group) for k, v in values.items()}
        return az.dict_to_dataset(values, dims=dims, library=pyro,
                                  **({} if with_chain else {"default_dims": []}))

    return az.InferenceData(
        posterior=group(latents, observed_group=False),
        posterior_predictive=group(predictive, observed_group=True),
        log_likelihood=group(log_lik, observed_group=True),
        observed_data=group(observed_values, observed_group=True, with_chain=False),
    )


def guide_khat(model, *data, num_particles: int = 1000, seed: int = 0) -> np.ndarray:
    r"""Pareto-smoothed importance sampling :math:`\hat k` of the guide, per data point.

    For each data point :math:`i`, draws :math:`z^{(s)} \sim q(z_i \mid x_i)` and fits a
    generalized Pareto tail to the importance ratios
    :math:`p(x_i, z^{(s)}) / q(z^{(s)} \mid x_i)` (``arviz.psislw``). :math:`\hat k < 0.5`:
    the guide is a good proposal for that data point's posterior; :math:`0.5 \le \hat k
    \le 0.7`: usable; :math:`> 0.7`: poor (Yao et al., 2018). Per-datum values avoid the
    joint weights' collapse that a single :math:`\hat k` over a whole data set suffers from.

    Returns:
        ``(N,)`` NumPy array of :math:`\hat k`.
    """
    if not isinstance(num_particles, int) or num_particles < 10:
        raise ValueError(f"guide_khat: num_particles must be an int >= 10, got {num_particles!r}")
    data = _prepare(model, data)
    with torch.no_grad(), _with_rng(seed):
        torch.manual_seed(seed)
        nesting, _ = plate_structure(model.model, model.guide, data)
        log_weight = log_weights(model.model, model.guide, data, num_particles=num_particles,
                                 nesting=nesting)
    _, khat = _arviz().psislw(log_weight.T.cpu().double().numpy())
    return np.asarray(khat)
