"""Model-agnostic machinery: the SVI loop, posterior packaging for ArviZ, guide checks,
linear-ICA starting points and the plain-torch trainers (next-token predictor, sparse
autoencoders)."""

from pyrocrl.inference.initialize import (
    LinearICA,
    initialize_at,
    initialize_contrastive,
    initialize_linear,
    linear_ica,
)
from pyrocrl.inference.mcmc import fit_mcmc, mcmc_to_inference_data
from pyrocrl.inference.next_token import fit_next_token
from pyrocrl.inference.posterior import guide_khat, to_inference_data
from pyrocrl.inference.restarts import fit_restarts
from pyrocrl.inference.sae import fit_sae
from pyrocrl.inference.svi import FitResult, NonFiniteLossError, fit_svi, resolve_device

__all__ = [
    "FitResult",
    "LinearICA",
    "NonFiniteLossError",
    "fit_mcmc",
    "fit_next_token",
    "fit_restarts",
    "fit_sae",
    "fit_svi",
    "guide_khat",
    "initialize_at",
    "initialize_contrastive",
    "initialize_linear",
    "linear_ica",
    "mcmc_to_inference_data",
    "resolve_device",
    "to_inference_data",
]
