r"""Binary concepts on a DAG observed through a deterministic, possibly non-invertible map
(seed 004, §2 and Appendix G.1).

Generative story, with :math:`n` binary concepts and :math:`D` observed binary variables:

.. math::

    z_i \mid z_{\mathrm{pa}(i)} &\sim \mathrm{Bernoulli}\big(\theta_i[z_{\mathrm{pa}(i)}]\big),
        \qquad \theta_i[\cdot] \sim U[0.2, 0.8] \text{ (fixed by the seed)},\\
    c &= \textstyle\sum_i z_i 2^{n-1-i} \in \{0, \dots, 2^n - 1\}
        \quad\text{(the joint configuration; concept 0 is the most significant bit)},\\
    g_j(c) &= \mathrm{bit}_{b_j}\big(\pi_j(c)\big), \qquad j = 1, \dots, D,\\
    x_j &= g_j(c) \oplus \epsilon_j, \qquad \epsilon_j \sim \mathrm{Bernoulli}(\rho).

Each observed variable is one bit of the binary code of a randomly permuted one-hot
encoding of :math:`c` (a permutation :math:`\pi_j` of the :math:`2^n` configurations and a
bit :math:`b_j`), i.e. a random balanced Boolean function of the concepts. A few observed
variables cannot tell all configurations apart; the more are kept, the closer the map comes
to invertible (``info["distinct_fraction"]``). G.1 is noiseless (:math:`\rho = 0`); a small
flip probability makes :math:`\log p(z \mid x)` finite everywhere, which Theorem 3.1's
regression onto the log-posterior needs.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyrocrl.simulate._random import seeded
from pyrocrl.simulate.dataset import Dataset
from pyrocrl.simulate.graphs import random_dag

__all__ = ["ConceptNetwork", "configurations", "counterfactual_pairs", "discrete_concepts"]


def configurations(num_concepts: int) -> torch.Tensor:
    """``(2**n, n)`` long tensor: row ``c`` holds the concepts of configuration ``c``
    (concept 0 is the most significant bit)."""
    shifts = torch.arange(num_concepts - 1, -1, -1)
    return (torch.arange(2**num_concepts)[:, None] >> shifts) & 1


class ConceptNetwork:
    """The ground-truth process: a Bayesian network of binary concepts and the map to
    observed bits. ``model(num_samples)`` is the Pyro program that samples it.

    Args:
        graph: ``(n, n)`` 0/1 DAG adjacency, ``graph[i, j] = 1`` meaning ``z_i -> z_j``.
        cpds: ``cpds[i]`` has shape ``(2,) * len(parents[i])`` and holds
            :math:`P(z_i = 1 \\mid z_{\\mathrm{pa}(i)})`, indexed by the parents in
            increasing order.
        observation_map: ``(2**n, D)`` 0/1 array, :math:`g(c)`.
        flip_prob: probability that an observed bit is flipped.
    """

    def __init__(self, graph, cpds, observation_map, flip_prob: float = 0.0):
        self.graph = np.asarray(graph, dtype=float)
        self.num_concepts = self.graph.shape[0]
        self.parents = [list(np.flatnonzero(self.graph[:, i])) for i in range(self.num_concepts)]
        self.cpds = [torch.as_tensor(np.asarray(c, dtype=float), dtype=torch.float32)
                     for c in cpds]
        self.observation_map = torch.as_tensor(np.asarray(observation_map), dtype=torch.float32)
        self.flip_prob = float(flip_prob)
        import networkx as nx

        self.order = list(nx.topological_sort(nx.DiGraph(self.graph != 0)))
        self.order += [i for i in range(self.num_concepts) if i not in self.order]

    @property
    def num_observed(self) -> int:
        return self.observation_map.shape[1]

    def observe_probs(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`P(x_j = 1 \\mid z)`, ``(N, D)``, for concepts ``z`` ``(N, n)``."""
        clean = self.observation_map[config_index(z)]
        return clean * (1 - self.flip_prob) + (1 - clean) * self.flip_prob

    def model(self, num_samples: int):
        """Sample ``(z, x)``: sites ``"z_<i>"`` per concept in topological order, ``"x"``."""
        with pyro.plate("data", num_samples):
            z = [None] * self.num_concepts
            for i in self.order:
                table = self.cpds[i]
                probs = table[tuple(z[p].long() for p in self.parents[i])] if self.parents[i] \
                    else table.expand(num_samples)
                z[i] = pyro.sample(f"z_{i}", dist.Bernoulli(probs))
            z = torch.stack(z, -1)
            x = pyro.sample("x", dist.Bernoulli(self.observe_probs(z)).to_event(1))
        return z, x


def config_index(z: torch.Tensor) -> torch.Tensor:
    """Joint configuration index of binary concepts ``z`` ``(..., n)``."""
    n = z.shape[-1]
    weights = 2 ** torch.arange(n - 1, -1, -1, device=z.device)
    return (z.long() * weights).sum(-1)


def _observation_map(num_concepts: int, num_observed: int, rng: np.random.Generator):
    """G.1's map: observed variable j is bit ``bits[j]`` of ``permutations[j][c]``."""
    num_configs = 2**num_concepts
    permutations = np.stack([rng.permutation(num_configs) for _ in range(num_observed)])
    bits = rng.integers(num_concepts, size=num_observed)
    codes = (permutations >> (num_concepts - 1 - bits)[:, None]) & 1  # (D, 2**n)
    return codes.T.astype(np.int64), permutations, bits


def discrete_concepts(num_concepts: int = 3, graph="chain", num_observed: int = 12,
                      num_samples: int = 10_000, seed: int = 0, flip_prob: float = 0.0,
                      cpd_range: tuple[float, float] = (0.2, 0.8)) -> Dataset:
    """Simulate seed 004's latent-concept model (Appendix G.1).

    Args:
        num_concepts: n binary concepts (2**n joint configurations; keep n <= 12).
        graph: ``"chain"``, ``"er1"``, ``"er2"``, ``"er3"`` (expected 1, 2, 3 edges per
            node, capped at the complete DAG), ``"er"``, ``"full"``, ``"empty"`` or an
            ``(n, n)`` DAG adjacency.
        num_observed: D observed binary variables (the more, the more invertible the map).
        num_samples: N.
        seed: determines the graph, the CPDs, the map and the samples.
        flip_prob: probability that each observed bit is flipped (0 in G.1).
        cpd_range: the CPD entries are drawn uniformly from this interval.

    Returns:
        A :class:`Dataset` with ``x`` ``(N, D)`` and ``z`` ``(N, n)`` (float 0/1), ``u=None``,
        ``graph`` the DAG, and ``info`` holding ``process`` (the :class:`ConceptNetwork`),
        ``cpds``, ``parents``, ``observation_map`` ``(2**n, D)``, ``permutations``, ``bits``,
        ``flip_prob``, ``distinct_fraction`` (share of configurations whose clean
        observation no other configuration shares: 1.0 means invertible) and ``seed``.
    """
    for name, value, low in (("num_concepts", num_concepts, 1), ("num_observed", num_observed, 1),
                             ("num_samples", num_samples, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"discrete_concepts: {name} must be a positive int, got {value!r}")
    if num_concepts > 12:
        raise ValueError(f"discrete_concepts: num_concepts={num_concepts} gives 2**{num_concepts}"
                         f" joint configurations; at most 12 are supported")
    if not 0.0 <= flip_prob < 0.5:
        raise ValueError(f"discrete_concepts: flip_prob must lie in [0, 0.5), got {flip_prob}")
    low, high = cpd_range
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"discrete_concepts: cpd_range must satisfy 0 <= low <= high <= 1, "
                         f"got {cpd_range}")
    with seeded(seed) as rng:
        dag = random_dag(num_concepts, graph, rng=rng)
        parents = [list(np.flatnonzero(dag[:, i])) for i in range(num_concepts)]
        cpds = [rng.uniform(low, high, size=(2,) * len(p)) for p in parents]
        obs_map, permutations, bits = _observation_map(num_concepts, num_observed, rng)
        process = ConceptNetwork(dag, cpds, obs_map, flip_prob)
        z, x = process.model(num_samples)
    _, inverse, counts = np.unique(obs_map, axis=0, return_inverse=True, return_counts=True)
    distinct = float(np.mean(counts[inverse.ravel()] == 1))
    info = {"process": process, "cpds": cpds, "parents": parents, "observation_map": obs_map,
            "permutations": permutations, "bits": bits, "flip_prob": flip_prob,
            "distinct_fraction": distinct, "seed": seed}
    return Dataset(x=x, z=z, u=None, graph=dag, info=info)


def counterfactual_pairs(ds: Dataset, num_pairs: int, seed: int = 0):
    """Pairs of observations that differ in exactly one concept (seed 004, Corollary 4.3).

    Concepts ``z`` are drawn from the data set's process; for pair ``k`` a concept
    ``concept[k]`` is chosen uniformly and set to 0 in ``x_a[k]`` and 1 in ``x_b[k]``, every
    other concept and the bit-flip noise being shared (a counterfactual, not a new draw).

    Returns:
        ``(x_a, x_b, concept)``: ``(P, D)``, ``(P, D)`` float and ``(P,)`` long.
    """
    process = ds.info.get("process")
    if not isinstance(process, ConceptNetwork):
        raise ValueError("counterfactual_pairs: ds must come from simulate.discrete_concepts")
    with seeded(seed):
        z, _ = process.model(num_pairs)
        concept = torch.randint(process.num_concepts, (num_pairs,))
        flips = torch.rand(num_pairs, process.num_observed) < process.flip_prob
    rows = torch.arange(num_pairs)
    z_a, z_b = z.clone(), z.clone()
    z_a[rows, concept], z_b[rows, concept] = 0.0, 1.0
    x_a = process.observation_map[config_index(z_a)]
    x_b = process.observation_map[config_index(z_b)]
    return (x_a + flips) % 2, (x_b + flips) % 2, concept
