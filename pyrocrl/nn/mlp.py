"""The MLP builder every model uses."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_dim: int = 64,
    num_layers: int = 3,
    activation: str = "leaky_relu",
) -> nn.Sequential:
    """A fully connected network with ``num_layers`` linear layers.

    ``in_dim -> hidden_dim -> ... -> hidden_dim -> out_dim``, with ``activation`` after every
    layer but the last. ``num_layers=1`` is a single affine map.
    """
    if num_layers < 1:
        raise ValueError(f"mlp: num_layers must be >= 1, got {num_layers}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp: activation must be one of {sorted(ACTIVATIONS)}, "
                         f"got {activation!r}")
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i in range(num_layers):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < num_layers - 1:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)
