"""Ground-truth generative processes written as Pyro programs with fixed, seeded
parameters. Every simulator takes ``seed=`` and returns a :class:`Dataset`."""

from pyrocrl.simulate.concepts import ConceptNetwork, counterfactual_pairs, discrete_concepts
from pyrocrl.simulate.dataset import Dataset
from pyrocrl.simulate.dictionary import sparse_dictionary
from pyrocrl.simulate.factors import FactorProcess, factor_model
from pyrocrl.simulate.graphs import random_dag
from pyrocrl.simulate.latent_dag import LatentSEM, latent_dag
from pyrocrl.simulate.linear_gaussian import linear_gaussian
from pyrocrl.simulate.mixing import MIXINGS, LeakyReLUMLPMixing, make_mixing
from pyrocrl.simulate.pendulum import pendulum
from pyrocrl.simulate.sources import NonstationarySources, exact_log_prob, nonstationary_sources
from pyrocrl.simulate.temporal import TemporalProcess, nonstationary_temporal

__all__ = [
    "MIXINGS",
    "ConceptNetwork",
    "Dataset",
    "FactorProcess",
    "LatentSEM",
    "LeakyReLUMLPMixing",
    "NonstationarySources",
    "TemporalProcess",
    "counterfactual_pairs",
    "discrete_concepts",
    "exact_log_prob",
    "factor_model",
    "latent_dag",
    "linear_gaussian",
    "make_mixing",
    "nonstationary_sources",
    "nonstationary_temporal",
    "pendulum",
    "random_dag",
    "sparse_dictionary",
]
