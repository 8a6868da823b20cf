"""Learnable Pyro models, each with its neural guide in the same module (and, in
``models/sae.py``, the plain-torch sparse autoencoders)."""

from pyrocrl.models.base import IdentifiabilityWarning, LatentVariableModel
from pyrocrl.models.concepts import DiscreteConceptModel, NextTokenPredictor, random_mask
from pyrocrl.models.sae import (
    BatchTopKSAE,
    L1AnnealingSAE,
    SparseAutoencoder,
    StructuredSAE,
    TopKSAE,
)
from pyrocrl.models.vae import IVAE, VAE

__all__ = [
    "IVAE",
    "VAE",
    "BatchTopKSAE",
    "L1AnnealingSAE",
    "SparseAutoencoder",
    "StructuredSAE",
    "TopKSAE",
    "DiscreteConceptModel",
    "IdentifiabilityWarning",
    "LatentVariableModel",
    "NextTokenPredictor",
    "random_mask",
]
