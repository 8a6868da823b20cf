"""Random DAGs for the latent causal graphs of the simulators (networkx underneath)."""

from __future__ import annotations

import re

import networkx as nx
import numpy as np

__all__ = ["check_dag", "random_dag"]


def check_dag(name: str, adjacency, num_nodes: int | None = None) -> np.ndarray:
    """Return ``adjacency`` as a float ``(n, n)`` array after checking it is a square,
    finite DAG without self-loops (``adjacency[i, j] != 0`` means ``i -> j``); raise a
    ``ValueError`` naming ``name`` (and a cycle, when there is one) otherwise."""
    adjacency = np.asarray(adjacency, dtype=float)
    if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) adjacency, got shape {adjacency.shape}")
    if num_nodes is not None and adjacency.shape[0] != num_nodes:
        raise ValueError(f"{name} must be ({num_nodes}, {num_nodes}), got {adjacency.shape}")
    if not np.isfinite(adjacency).all():
        raise ValueError(f"{name} contains NaN or inf")
    digraph = nx.DiGraph(adjacency != 0)
    try:
        cycle = nx.find_cycle(digraph)
    except nx.NetworkXNoCycle:
        return adjacency
    raise ValueError(f"{name} must be acyclic; it has the cycle "
                     f"{' -> '.join(str(u) for u, _ in cycle)} -> {cycle[0][0]}")


def random_dag(num_nodes: int, graph="er", edges_per_node: float = 1.0,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """A random DAG as a 0/1 ``(n, n)`` array, ``dag[i, j] = 1`` meaning ``i -> j``.

    ``graph``:
        ``"chain"``: ``0 -> 1 -> ... -> n-1``;
        ``"er"``: Erdős–Rényi with ``edges_per_node * n`` edges expected (edge probability
        ``min(1, 2 * edges_per_node / (n - 1))`` per pair), oriented along a random
        topological order; ``"er1"``, ``"er2"``, ... fix ``edges_per_node`` to 1, 2, ...
        (the ER-k graphs of NOTEARS and of seed 004, capped at the complete DAG);
        ``"full"``: the complete DAG in index order; ``"empty"``: no edges;
        an ``(n, n)`` array: used as given after checking it is a DAG.
    """
    if not isinstance(num_nodes, (int, np.integer)) or num_nodes < 1:
        raise ValueError(f"num_nodes must be a positive int, got {num_nodes!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    if not isinstance(graph, str):
        return (check_dag("graph", graph, num_nodes) != 0).astype(float)
    match = re.fullmatch(r"er(\d+(?:\.\d+)?)?", graph)
    if graph == "chain":
        return np.eye(num_nodes, k=1)
    if graph == "full":
        return np.triu(np.ones((num_nodes, num_nodes)), k=1)
    if graph == "empty":
        return np.zeros((num_nodes, num_nodes))
    if match is None:
        raise ValueError(f"graph must be 'chain', 'er', 'er<k>', 'full', 'empty' or an (n, n) "
                         f"adjacency array, got {graph!r}")
    if match.group(1) is not None:
        edges_per_node = float(match.group(1))
    if edges_per_node < 0:
        raise ValueError(f"edges_per_node must be >= 0, got {edges_per_node}")
    prob = 0.0 if num_nodes == 1 else min(1.0, 2.0 * edges_per_node / (num_nodes - 1))
    skeleton = nx.gnp_random_graph(num_nodes, prob, seed=int(rng.integers(2**31)))
    order = rng.permutation(num_nodes)  # order[k] = the node at topological position k
    position = np.argsort(order)
    dag = np.zeros((num_nodes, num_nodes))
    for a, b in skeleton.edges:
        i, j = (a, b) if position[a] < position[b] else (b, a)
        dag[i, j] = 1.0
    return dag
