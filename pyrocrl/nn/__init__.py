"""Reusable networks shared by the model families."""

from pyrocrl.nn.flows import InvertibleLinear, SmoothLeakyReLU, leaky_relu_flow
from pyrocrl.nn.mlp import ACTIVATIONS, mlp
from pyrocrl.nn.transition import MonotoneInverseTransition

__all__ = [
    "ACTIVATIONS",
    "InvertibleLinear",
    "MonotoneInverseTransition",
    "SmoothLeakyReLU",
    "leaky_relu_flow",
    "mlp",
]
