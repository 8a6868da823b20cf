"""Model-agnostic machinery: the SVI loop, posterior packaging for ArviZ, guide checks."""

from pyrocrl.inference.posterior import guide_khat, to_inference_data
from pyrocrl.inference.svi import FitResult, NonFiniteLossError, fit_svi, resolve_device

__all__ = [
    "FitResult",
    "NonFiniteLossError",
    "fit_svi",
    "guide_khat",
    "resolve_device",
    "to_inference_data",
]
