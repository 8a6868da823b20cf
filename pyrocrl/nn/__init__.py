"""Reusable networks shared by the model families."""

from pyrocrl.nn.mlp import ACTIVATIONS, mlp

__all__ = ["ACTIVATIONS", "mlp"]
