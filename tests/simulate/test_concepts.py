import networkx as nx
import numpy as np
import pytest
import torch

from pyrocrl.simulate.concepts import (
    configurations,
    counterfactual_pairs,
    discrete_concepts,
)
from pyrocrl.simulate.graphs import check_dag, random_dag


def test_shapes_determinism_and_info():
    ds = discrete_concepts(3, "chain", num_observed=9, num_samples=500, seed=3)
    assert ds.x.shape == (500, 9) and ds.z.shape == (500, 3) and ds.u is None
    assert set(ds.x.unique().tolist()) <= {0.0, 1.0} and set(ds.z.unique().tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(ds.graph, np.eye(3, k=1))
    again = discrete_concepts(3, "chain", num_observed=9, num_samples=500, seed=3)
    assert torch.equal(ds.x, again.x) and torch.equal(ds.z, again.z)
    other = discrete_concepts(3, "chain", num_observed=9, num_samples=500, seed=4)
    assert not torch.equal(ds.x, other.x)
    for table, parents in zip(ds.info["cpds"], ds.info["parents"]):
        assert table.shape == (2,) * len(parents) and ((0.2 <= table) & (table <= 0.8)).all()


def test_observations_are_the_map_of_the_concepts_and_balanced():
    ds = discrete_concepts(4, "er2", num_observed=10, num_samples=300, seed=1)
    obs_map = ds.info["observation_map"]
    index = (ds.z.long() * torch.tensor([8, 4, 2, 1])).sum(-1)
    np.testing.assert_array_equal(ds.x.numpy(), obs_map[index.numpy()])
    # every observed variable is one bit of a permuted one-hot code: a balanced function
    np.testing.assert_array_equal(obs_map.sum(0), np.full(10, 8))
    # it is that bit of that permutation
    perm, bits = ds.info["permutations"], ds.info["bits"]
    for j in range(10):
        np.testing.assert_array_equal(obs_map[:, j], (perm[j] >> (3 - bits[j])) & 1)


def test_root_marginal_matches_its_cpd():
    ds = discrete_concepts(3, "chain", num_observed=6, num_samples=40_000, seed=0)
    p_root = float(ds.info["cpds"][0])
    assert abs(ds.z[:, 0].mean().item() - p_root) < 0.01
    # z_1 | z_0 follows the chain's table
    table = ds.info["cpds"][1]
    for value in (0, 1):
        rows = ds.z[:, 0] == value
        assert abs(ds.z[rows, 1].mean().item() - table[value]) < 0.02


def test_more_observed_variables_make_the_map_more_invertible():
    frac = [np.mean([discrete_concepts(4, "chain", d, 10, seed=s).info["distinct_fraction"]
                     for s in range(10)]) for d in (2, 4, 8, 16)]
    # with 2 bits at most 4 of 16 configurations can be told apart; 16 random bits almost surely
    # separate all of them
    assert frac[0] <= 0.25 and frac[-1] == 1.0 and frac == sorted(frac)


def test_flip_noise_rate():
    ds = discrete_concepts(3, "chain", 20, 20_000, seed=0, flip_prob=0.1)
    clean = torch.as_tensor(ds.info["observation_map"])[(ds.z.long() @ torch.tensor([4, 2, 1]))]
    assert abs((clean != ds.x).float().mean().item() - 0.1) < 0.005


def test_counterfactual_pairs_differ_in_one_concept():
    ds = discrete_concepts(4, "er1", 12, 100, seed=2)
    x_a, x_b, concept = counterfactual_pairs(ds, 200, seed=0)
    assert x_a.shape == x_b.shape == (200, 12) and concept.shape == (200,)
    obs_map = torch.as_tensor(ds.info["observation_map"]).float()
    configs = configurations(4).float()
    for xa, xb, i in zip(x_a, x_b, concept):
        za = configs[(obs_map == xa).all(1)]
        zb = configs[(obs_map == xb).all(1)]
        assert len(za) == len(zb) == 1  # 12 bits identify every configuration here
        diff = (za[0] != zb[0]).nonzero().flatten().tolist()
        assert diff == [int(i)] and za[0, i] == 0 and zb[0, i] == 1
    assert set(concept.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("kind,k", [("er1", 1), ("er2", 2), ("er3", 3)])
def test_er_graphs_are_dags_with_the_expected_number_of_edges(kind, k):
    rng = np.random.default_rng(0)
    n = 8
    edges = []
    for _ in range(300):
        dag = random_dag(n, kind, rng=rng)
        assert nx.is_directed_acyclic_graph(nx.DiGraph(dag))
        edges.append(dag.sum())
    assert abs(np.mean(edges) - min(k * n, n * (n - 1) / 2)) < 0.6


def test_bad_input():
    with pytest.raises(ValueError, match="cycle"):
        check_dag("graph", np.array([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="graph must be"):
        discrete_concepts(3, "tree")
    with pytest.raises(ValueError, match="num_observed"):
        discrete_concepts(3, "chain", num_observed=0)
    with pytest.raises(ValueError, match="flip_prob"):
        discrete_concepts(3, "chain", flip_prob=0.6)
    with pytest.raises(ValueError, match="at most 12"):
        discrete_concepts(13, "chain")
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        discrete_concepts(3, np.zeros((2, 2)))
