"""Learnable Pyro models, each with its neural guide in the same module (and, in
``models/sae.py``, the plain-torch sparse autoencoders)."""

from pyrocrl.models.base import IdentifiabilityWarning, LatentVariableModel
from pyrocrl.models.concepts import DiscreteConceptModel, NextTokenPredictor, random_mask
from pyrocrl.models.latent_dag import FactorAnalysis, LatentCausalVAE, SparseVAE
from pyrocrl.models.linear_causal import (
    LinearCausalEstimate,
    linear_causal_disentanglement,
    linear_causal_disentanglement_from_covariances,
)
from pyrocrl.models.sae import (
    BatchTopKSAE,
    L1AnnealingSAE,
    SparseAutoencoder,
    StructuredSAE,
    TopKSAE,
)
from pyrocrl.models.state_space import DeepMarkovModel, LinearGaussianSSM, TemporalVAE
from pyrocrl.models.vae import IVAE, VAE, IFlow

__all__ = [
    "IFlow",
    "IVAE",
    "VAE",
    "BatchTopKSAE",
    "L1AnnealingSAE",
    "LatentCausalVAE",
    "LinearCausalEstimate",
    "LinearGaussianSSM",
    "SparseAutoencoder",
    "SparseVAE",
    "StructuredSAE",
    "TemporalVAE",
    "TopKSAE",
    "DeepMarkovModel",
    "DiscreteConceptModel",
    "FactorAnalysis",
    "IdentifiabilityWarning",
    "LatentVariableModel",
    "NextTokenPredictor",
    "linear_causal_disentanglement",
    "linear_causal_disentanglement_from_covariances",
    "random_mask",
]
