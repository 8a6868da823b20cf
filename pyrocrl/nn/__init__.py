"""Reusable networks shared by the model families."""

from pyrocrl.nn.flows import InvertibleLinear, SmoothLeakyReLU, leaky_relu_flow
from pyrocrl.nn.mlp import ACTIVATIONS, mlp
from pyrocrl.nn.side_by_side import SideBySide
from pyrocrl.nn.transition import MonotoneInverseTransition

__all__ = [
    "ACTIVATIONS",
    "InvertibleLinear",
    "MonotoneInverseTransition",
    "SideBySide",
    "SmoothLeakyReLU",
    "leaky_relu_flow",
    "mlp",
]
