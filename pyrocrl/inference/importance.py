"""Per-datum importance weights of a guide: shared by the importance-weighted ELBO of
:func:`~pyrocrl.inference.fit_svi` and the PSIS check :func:`~pyrocrl.inference.guide_khat`."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample


def _sample_sites(trace):
    return [(name, site) for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)]


def plate_structure(model_fn, guide_fn, args, kwargs=None) -> tuple[int, list[str]]:
    """Trace guide and model once; return the plate nesting depth and the observed site
    names. Raise if a sample site lies outside plate ``"data"`` (per-datum weights need every
    site to be local to a data point)."""
    kwargs = kwargs or {}
    guide_trace = poutine.trace(guide_fn).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(
        *args, **kwargs)
    nesting, observed = 0, []
    for trace in (guide_trace, model_trace):
        for name, site in _sample_sites(trace):
            frames = site["cond_indep_stack"]
            nesting = max([nesting] + [-f.dim for f in frames if f.vectorized])
            if not any(f.name == "data" for f in frames):
                raise ValueError(f"site {name!r} is not inside plate 'data'; per-datum "
                                 f"importance weights need every sample site to be local")
            if trace is model_trace and site["is_observed"]:
                observed.append(name)
    return nesting, observed


def per_datum(log_prob: torch.Tensor) -> torch.Tensor:
    """``(particles, N, ...)`` log-densities -> ``(particles, N)``, summing inner plates."""
    return log_prob.reshape(log_prob.shape[0], log_prob.shape[1], -1).sum(-1)


def log_weights(model_fn, guide_fn, args, kwargs=None, *, num_particles: int, nesting: int,
                latent_factor: float = 1.0) -> torch.Tensor:
    r"""``(num_particles, N)`` log importance weights
    :math:`\log p(x_i, z^{(s)}_i) - \log q(z^{(s)}_i \mid x_i)` with
    :math:`z^{(s)} \sim q`, drawn in one vectorized pass. ``latent_factor`` multiplies the
    latent sites' log-densities (KL annealing). Plate scales are not applied."""
    kwargs = kwargs or {}
    particles = pyro.plate("num_particles", num_particles, dim=-nesting - 1)
    guide_trace = poutine.trace(particles(guide_fn)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(
        poutine.replay(particles(model_fn), trace=guide_trace)).get_trace(*args, **kwargs)
    total = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for _, site in _sample_sites(trace):
            factor = 1.0 if site["is_observed"] else latent_factor
            # unscaled: the "data" plate's num_data / batch_size scale belongs outside the
            # logsumexp over particles (fit_svi applies it to the bound)
            log_p = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
            total = total + (sign * factor) * per_datum(log_p)
    return total
