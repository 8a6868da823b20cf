"""Ground-truth generative processes written as Pyro programs with fixed, seeded
parameters. Every simulator takes ``seed=`` and returns a :class:`Dataset`."""

from pyrocrl.simulate.dataset import Dataset
from pyrocrl.simulate.mixing import MIXINGS, LeakyReLUMLPMixing, make_mixing
from pyrocrl.simulate.sources import NonstationarySources, nonstationary_sources

__all__ = [
    "MIXINGS",
    "Dataset",
    "LeakyReLUMLPMixing",
    "NonstationarySources",
    "make_mixing",
    "nonstationary_sources",
]
