"""Learnable Pyro models, each with its neural guide in the same module."""

from pyrocrl.models.base import IdentifiabilityWarning, LatentVariableModel
from pyrocrl.models.vae import IVAE, VAE

__all__ = ["IVAE", "VAE", "IdentifiabilityWarning", "LatentVariableModel"]
