"""Reusable networks shared by the model families."""

from pyrocrl.nn.mlp import ACTIVATIONS, mlp
from pyrocrl.nn.transition import MonotoneInverseTransition

__all__ = ["ACTIVATIONS", "MonotoneInverseTransition", "mlp"]
