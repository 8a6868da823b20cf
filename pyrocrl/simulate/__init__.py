"""Ground-truth generative processes written as Pyro programs with fixed, seeded
parameters. Every simulator takes ``seed=`` and returns a :class:`Dataset`."""

from pyrocrl.simulate.concepts import ConceptNetwork, counterfactual_pairs, discrete_concepts
from pyrocrl.simulate.dataset import Dataset
from pyrocrl.simulate.dictionary import sparse_dictionary
from pyrocrl.simulate.factors import FactorProcess, factor_model
from pyrocrl.simulate.graphs import random_dag
from pyrocrl.simulate.latent_dag import LatentSEM, latent_dag
from pyrocrl.simulate.mixing import MIXINGS, LeakyReLUMLPMixing, make_mixing
from pyrocrl.simulate.sources import NonstationarySources, nonstationary_sources

__all__ = [
    "MIXINGS",
    "ConceptNetwork",
    "Dataset",
    "FactorProcess",
    "LatentSEM",
    "LeakyReLUMLPMixing",
    "NonstationarySources",
    "counterfactual_pairs",
    "discrete_concepts",
    "factor_model",
    "latent_dag",
    "make_mixing",
    "nonstationary_sources",
    "random_dag",
    "sparse_dictionary",
]
