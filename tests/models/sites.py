"""Shared by the model tests: which sample sites a model samples and its guide covers."""

from pyro import poutine


def latent_and_guided_sites(model, *data):
    """``(model_trace, latent, guided)``: the model's trace, the names of its unobserved
    sample sites and the names of the guide's sample sites (subsample sites excluded)."""
    model_trace = poutine.trace(model.model).get_trace(*data)
    guide_trace = poutine.trace(model.guide).get_trace(*data)
    latent = {name for name, site in model_trace.nodes.items()
              if site["type"] == "sample" and not site["is_observed"]
              and not poutine.util.site_is_subsample(site)}
    guided = {name for name, site in guide_trace.nodes.items()
              if site["type"] == "sample" and not poutine.util.site_is_subsample(site)}
    return model_trace, latent, guided
