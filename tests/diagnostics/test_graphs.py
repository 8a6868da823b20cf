import itertools
import math
import os

import numpy as np
import pytest
import torch

from pyrocrl.diagnostics.graphs import EdgeMetrics, cpdag, edge_metrics, match_latents, shd

# Convention: adj[i, j] != 0 means i -> j; an undirected edge i - j is adj[i, j] = adj[j, i] = 1.


def adjacency(n, *edges, undirected=()):
    adj = np.zeros((n, n), dtype=int)
    for i, j in edges:
        adj[i, j] = 1
    for i, j in undirected:
        adj[i, j] = adj[j, i] = 1
    return adj


def random_dag(rng, n, p=0.4, weighted=False):
    """Upper-triangular Bernoulli(p) edges, nodes relabelled by a random permutation."""
    upper = np.triu(rng.random((n, n)) < p, 1)
    weights = rng.uniform(0.5, 2.0, (n, n)) * rng.choice([-1, 1], (n, n)) if weighted else 1
    perm = rng.permutation(n)
    return (upper * weights)[np.ix_(perm, perm)]


CHAIN = adjacency(3, (0, 1), (1, 2))         # 0 -> 1 -> 2
EMPTY = np.zeros((3, 3), dtype=int)


# ----------------------------------------------------------------------------- shd


def test_shd_empty_vs_chain_counts_each_missing_edge():
    # pairs {0,1} and {1,2} have an edge in the chain and none in the empty graph; {0,2}
    # agrees (no edge in either): 2 pairs differ.
    assert shd(CHAIN, EMPTY) == 2
    r = shd(CHAIN, EMPTY)
    assert (r.missing, r.extra, r.misoriented) == (2, 0, 0)
    assert r.normalized == pytest.approx(2 / 3)   # 3 pairs on 3 nodes
    assert shd(EMPTY, CHAIN).extra == 2


def test_shd_reversed_edge_counts_one():
    # 0 -> 1 vs 1 -> 0: a single pair {0,1} whose mark differs -> 1 (cdt's default counts 2)
    r = shd(adjacency(2, (0, 1)), adjacency(2, (1, 0)))
    assert r == 1 and r.misoriented == 1 and r.missing == r.extra == 0


def test_shd_extra_plus_missing_plus_reversed():
    # truth 0 -> 1 -> 2 -> 3; estimate drops 1 -> 2 (missing), reverses 2 -> 3 into 3 -> 2
    # (1), adds 0 -> 3 (extra): pairs {1,2}, {2,3}, {0,3} differ -> 3.
    true = adjacency(4, (0, 1), (1, 2), (2, 3))
    est = adjacency(4, (0, 1), (3, 2), (0, 3))
    r = shd(true, est)
    assert r == 3 and (r.missing, r.extra, r.misoriented) == (1, 1, 1)


def test_shd_partially_directed_marks():
    # i -> j vs i - j: same pair, different mark -> 1; i - j vs i - j -> 0; i - j vs none -> 1
    directed, undirected = adjacency(2, (0, 1)), adjacency(2, undirected=[(0, 1)])
    assert shd(directed, undirected) == 1 and shd(undirected, directed).misoriented == 1
    assert shd(undirected, undirected) == 0
    assert shd(undirected, np.zeros((2, 2))) == 1
    # CPDAGs of the chain (0 - 1 - 2) and of the collider (0 -> 1 <- 2): both pairs change
    # mark -> 2
    assert shd(cpdag(CHAIN), cpdag(adjacency(3, (0, 1), (2, 1)))) == 2


def test_shd_threshold():
    # |w| <= threshold is no edge. Truth 0 -> 1 -> 2; estimate weights 0 -> 1: 0.5,
    # 1 -> 2: -0.1, 0 -> 2: 0.03.
    est = np.array([[0.0, 0.5, 0.03], [0.0, 0.0, -0.1], [0.0, 0.0, 0.0]])
    assert shd(CHAIN, est, threshold=0.1) == 1     # only 0 -> 1 left: {1,2} missing
    assert shd(CHAIN, est, threshold=0.05) == 0    # 0 -> 1, 1 -> 2 (sign ignored)
    assert shd(CHAIN, est) == 1                    # all three: {0,2} extra


def test_shd_properties_on_random_dags():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        a, b = random_dag(rng, n, rng.uniform(0.1, 0.9)), random_dag(rng, n, rng.uniform(0.1, 0.9))
        assert shd(a, a) == 0
        assert shd(a, b) == shd(b, a)                   # symmetric for DAGs
        wa, wb = a * rng.uniform(0.3, 3.0, a.shape), -b * rng.uniform(0.3, 3.0, b.shape)
        assert shd(wa, wb) == shd(a, b)                 # weights (and signs) do not matter
        assert shd(torch.as_tensor(a), torch.as_tensor(b)) == shd(a, b)
        # reference: differing node pairs via networkx-free set algebra on ordered edges
        ea, eb = set(zip(*np.nonzero(a))), set(zip(*np.nonzero(b)))
        pairs = {frozenset(e) for e in ea ^ eb}         # a reversed edge gives one pair
        assert shd(a, b) == len(pairs)


def test_shd_matches_gadjid():
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    gadjid = pytest.importorskip("gadjid")

    def to_gadjid(adj):
        # gadjid: 1 at [r, c] codes r -> c; an undirected edge is ONE entry 2 (a symmetric
        # pair of 1s is rejected as a 2-cycle). Its shd ignores direction conventions and
        # counts a reversed edge 1.
        adj = np.asarray(adj) != 0
        out = (adj & ~adj.T).astype(np.int8)
        out[np.triu(adj & adj.T)] = 2
        return out

    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 9))
        a, b = random_dag(rng, n, rng.uniform(0.1, 0.8)), random_dag(rng, n, rng.uniform(0.1, 0.8))
        normalized, count = gadjid.shd(to_gadjid(a), to_gadjid(b))
        assert shd(a, b) == count
        assert shd(a, b).normalized == pytest.approx(normalized)
        # CPDAG inputs (undirected edges): i -> j vs i - j counts 1 in both
        ca, cb = cpdag(a), cpdag(b)
        assert shd(ca, cb) == gadjid.shd(to_gadjid(ca), to_gadjid(cb))[1]


# ---------------------------------------------------------------------- edge_metrics


def test_edge_metrics_hand_worked():
    # truth 0 -> 1 -> 2; estimate 0 -> 1 (right), 2 -> 1 (reversed), 0 -> 2 (extra).
    # directed TP = 1 of 3 estimated and 2 true: precision 1/3, recall 1/2, f1 = 2/(3+2).
    # skeleton TP = 2 ({0,1}, {1,2}): precision 2/3, recall 1, f1 = 4/5.
    # orientation: of the 2 found true edges, 1 is oriented right -> 1/2.
    m = edge_metrics(CHAIN, adjacency(3, (0, 1), (2, 1), (0, 2)))
    assert isinstance(m, EdgeMetrics)
    expected = dict(precision=1 / 3, recall=1 / 2, f1=2 / 5, skeleton_precision=2 / 3,
                    skeleton_recall=1.0, skeleton_f1=4 / 5, orientation_accuracy=1 / 2,
                    n_true_edges=2, n_est_edges=3, true_positives=1, skeleton_true_positives=2)
    assert m.as_dict() == pytest.approx(expected)
    assert dict(m) == pytest.approx(expected) and m["f1"] == m.f1 and len(m) == len(expected)
    with pytest.raises(KeyError):
        m["auc"]


def test_edge_metrics_undirected_must_match_mark():
    # truth 0 - 1 (undirected), estimate 0 -> 1: skeleton right, mark wrong.
    m = edge_metrics(adjacency(2, undirected=[(0, 1)]), adjacency(2, (0, 1)))
    assert (m.precision, m.recall, m.skeleton_f1, m.orientation_accuracy) == (0, 0, 1, 0)


def test_edge_metrics_zero_division():
    # both empty: every ratio is 0/0 -> zero_division (1.0): nothing to get wrong
    assert all(v == 1.0 for k, v in edge_metrics(EMPTY, EMPTY).items() if not k.startswith("n_")
               and "positives" not in k)
    # empty estimate of the chain: precision 0/0 -> 1, recall 0/2 = 0, f1 = 0/(2+0) = 0,
    # orientation accuracy 0/0 -> 1 (vacuous; skeleton_recall 0 tells)
    m = edge_metrics(CHAIN, EMPTY)
    assert (m.precision, m.recall, m.f1, m.orientation_accuracy) == (1.0, 0.0, 0.0, 1.0)
    assert m.skeleton_recall == 0.0
    # extra edges on an empty truth: precision 0/2, recall 0/0 -> 1, f1 0
    m = edge_metrics(EMPTY, CHAIN)
    assert (m.precision, m.recall, m.f1) == (0.0, 1.0, 0.0)
    m = edge_metrics(CHAIN, EMPTY, zero_division=float("nan"))
    assert math.isnan(m.precision) and math.isnan(m.orientation_accuracy) and m.f1 == 0.0
    with pytest.raises(ValueError, match="zero_division"):
        edge_metrics(CHAIN, EMPTY, zero_division=2)


def test_edge_metrics_consistent_with_shd_on_random_graphs():
    rng = np.random.default_rng(2)
    for _ in range(100):
        n = int(rng.integers(2, 7))
        a, b = random_dag(rng, n, weighted=True), random_dag(rng, n, weighted=True)
        if rng.random() < 0.5:
            a, b = cpdag(a), cpdag(b)
        m, d = edge_metrics(a, b), shd(a, b)
        # shd = true edges not found + estimated edges not true + found with the wrong mark
        assert d.missing == m.n_true_edges - m.skeleton_true_positives
        assert d.extra == m.n_est_edges - m.skeleton_true_positives
        assert d.misoriented == m.skeleton_true_positives - m.true_positives
        if m.precision + m.recall > 0 and m.n_est_edges and m.n_true_edges:
            harmonic = 2 * m.precision * m.recall / (m.precision + m.recall)
            assert m.f1 == pytest.approx(harmonic)
        assert edge_metrics(a, a).f1 == 1.0


# ----------------------------------------------------------------------------- cpdag


def test_cpdag_v_structure_stays_compelled_chain_becomes_undirected():
    # a -> c <- b with a, b non-adjacent: reversing either edge destroys the v-structure,
    # so both stay directed.
    collider = adjacency(3, (0, 2), (1, 2))
    np.testing.assert_array_equal(cpdag(collider), collider)
    # a -> b -> c is Markov equivalent to a <- b <- c and a <- b -> c (no v-structure):
    # both edges reversible -> 0 - 1 - 2.
    np.testing.assert_array_equal(cpdag(CHAIN), adjacency(3, undirected=[(0, 1), (1, 2)]))
    # fork and reversed chain have the same CPDAG
    np.testing.assert_array_equal(cpdag(adjacency(3, (1, 0), (1, 2))), cpdag(CHAIN))
    # a triangle (complete DAG) has no v-structure: all undirected
    np.testing.assert_array_equal(cpdag(adjacency(3, (0, 1), (0, 2), (1, 2))),
                                  adjacency(3, undirected=[(0, 1), (0, 2), (1, 2)]))


def test_cpdag_meek_rule_1():
    # 0 -> 2 <- 1 (v-structure), 2 -> 3: pattern has 2 - 3; since 1 -> 2 and 1, 3 are
    # non-adjacent, 3 -> 2 would create the new v-structure 1 -> 2 <- 3: R1 compels 2 -> 3.
    dag = adjacency(4, (0, 2), (1, 2), (2, 3))
    np.testing.assert_array_equal(cpdag(dag), dag)


def test_cpdag_meek_rule_2():
    # 0 -> 2 <- 1, 2 -> 3, 0 -> 3. Pattern: 0 -> 2 <- 1, 2 - 3, 0 - 3 (0 -> 3 <- 2 is no
    # v-structure, 0 and 2 are adjacent). R1 compels 2 -> 3 (via 1 -> 2); then 0 -> 2 -> 3
    # with 0 - 3: 3 -> 0 would close the cycle 0 -> 2 -> 3 -> 0, so R2 compels 0 -> 3.
    # (R1 cannot orient 0 - 3: nothing points into 0.)
    dag = adjacency(4, (0, 2), (1, 2), (2, 3), (0, 3))
    np.testing.assert_array_equal(cpdag(dag), dag)


def test_cpdag_meek_rule_3():
    # a=0, b=1, c=2, d=3: a -> c, a -> d, c -> b <- d (c, d non-adjacent: v-structure),
    # a -> b. Pattern: c -> b <- d, a - c, a - d, a - b. R1/R2 cannot fire on a - b
    # (nothing points into a, no directed path a -> . -> b); R3: a - c -> b, a - d -> b with
    # c, d non-adjacent compels a -> b (b -> a would force c -> a or d -> a, a cycle or a new
    # v-structure c -> a <- d). a - c and a - d stay undirected.
    dag = adjacency(4, (0, 2), (0, 3), (2, 1), (3, 1), (0, 1))
    expected = adjacency(4, (2, 1), (3, 1), (0, 1), undirected=[(0, 2), (0, 3)])
    np.testing.assert_array_equal(cpdag(dag), expected)


def all_dags(n):
    """Every DAG on n labelled nodes: each pair none / i -> j / j -> i, acyclic by
    nilpotency (A^n = 0), independent of networkx and of the code under test."""
    pairs = list(itertools.combinations(range(n), 2))
    for states in itertools.product(range(3), repeat=len(pairs)):
        adj = np.zeros((n, n), dtype=int)
        for (i, j), s in zip(pairs, states):
            if s == 1:
                adj[i, j] = 1
            elif s == 2:
                adj[j, i] = 1
        if not np.linalg.matrix_power(adj, n).any():
            yield adj


def markov_key(adj):
    """Skeleton + v-structures (Verma & Pearl): equal keys <=> Markov equivalent."""
    n = len(adj)
    skeleton = frozenset(frozenset(e) for e in zip(*np.nonzero(adj)))
    vs = frozenset((frozenset((a, b)), c) for c in range(n)
                   for a, b in itertools.combinations(range(n), 2)
                   if adj[a, c] and adj[b, c] and not adj[a, b] and not adj[b, a])
    return skeleton, vs


@pytest.mark.parametrize("n, n_classes", [(2, 2), (3, 11), (4, 185)])
def test_cpdag_brute_force_equivalence_classes(n, n_classes):
    # group all DAGs by Markov equivalence; an edge is directed in the CPDAG iff every
    # member of the class orients it the same way, undirected iff both orientations occur.
    classes = {}
    for adj in all_dags(n):
        classes.setdefault(markov_key(adj), []).append(adj)
    assert len(classes) == n_classes   # OEIS A085406: 1, 2, 11, 185, ...
    seen = set()
    for members in classes.values():
        stack = np.stack(members)
        directions = stack.any(0)                  # [i, j]: some member has i -> j
        expected = directions.astype(int)          # both directions seen -> symmetric entries
        for adj in members:
            np.testing.assert_array_equal(cpdag(adj), expected)
        seen.add(expected.tobytes())
    assert len(seen) == n_classes                  # distinct classes give distinct CPDAGs


def test_cpdag_weights_torch_and_threshold():
    w = torch.tensor([[0.0, -2.5, 0.01], [0.0, 0.0, 0.7], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(cpdag(w, threshold=0.05),
                                  adjacency(3, undirected=[(0, 1), (1, 2)]))
    # with the 0.01 edge kept the DAG is a triangle: all undirected
    assert cpdag(w).sum() == 6


# ---------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"true_adj must be a square .*\(2, 3\)"):
        shd(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"est_adj must be a square .*\(4,\)"):
        edge_metrics(np.zeros((2, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"same shape.*\(2, 2\) and \(3, 3\)"):
        shd(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="est_adj contains NaN"):
        shd(np.zeros((2, 2)), np.array([[0, np.nan], [0, 0]]))
    with pytest.raises(ValueError, match=r"true_adj has self-loops .* \[1\]"):
        shd(np.diag([0.0, 1.0]), np.zeros((2, 2)))
    # a diagonal entry within the threshold is no edge, hence no self-loop
    assert shd(np.diag([0.0, 0.01]), np.zeros((2, 2)), threshold=0.05) == 0
    with pytest.raises(ValueError, match="threshold"):
        shd(CHAIN, CHAIN, threshold=-1)
    with pytest.raises(ValueError, match=r"adj must be a DAG but has the cycle 0 -> 1 -> 2 -> 0"):
        cpdag(adjacency(3, (0, 1), (1, 2), (2, 0)))
    with pytest.raises(ValueError, match=r"cycle 0 -> 1 -> 0 .*not a CPDAG"):
        cpdag(adjacency(2, undirected=[(0, 1)]))


# ---------------------------------------------------------------------- match_latents


@pytest.fixture
def latents():
    return np.random.default_rng(3).standard_normal((2000, 4))


def test_match_latents_recovers_permutation_and_graph(latents):
    true_adj = np.array([[0, 1.5, 0, 0], [0, 0, -0.8, 0], [0, 0, 0, 0], [2.0, 0, 0.3, 0]])
    p = np.array([2, 0, 3, 1])                 # estimated column holding true latent i
    z_est = np.empty_like(latents)
    z_est[:, p] = latents * np.array([-1.0, 2.0, 0.5, 3.0]) + 1.0
    est_adj = np.zeros((4, 4))
    est_adj[np.ix_(p, p)] = true_adj * 10.0    # est edge p[i] -> p[j] for true i -> j
    r = match_latents(latents, z_est, true_adj, est_adj)
    np.testing.assert_array_equal(r.permutation, p)
    assert float(r.mcc) == pytest.approx(1.0)
    np.testing.assert_allclose(r.est_adj_matched, true_adj * 10.0)   # weights kept
    assert r.shd == 0 and r.edge_metrics.f1 == 1.0 and r.unmatched_edges == 0
    # torch inputs give the same answer
    rt = match_latents(torch.as_tensor(latents), torch.as_tensor(z_est),
                       torch.as_tensor(true_adj), torch.as_tensor(est_adj))
    np.testing.assert_array_equal(rt.permutation, p)
    assert rt.shd == 0
    # without adjacencies only the matching
    r = match_latents(latents, z_est)
    assert r.shd is None and r.est_adj_matched is None and float(r.mcc) == pytest.approx(1.0)


def test_match_latents_cpdag_equivalence(latents):
    # truth 0 -> 1 -> 2 -> 3; estimate the reversed chain, in a shuffled order: 3 edges
    # reversed -> shd 3 as DAGs, 0 up to Markov equivalence (a chain has no v-structure;
    # both CPDAGs are 0 - 1 - 2 - 3).
    true_adj = adjacency(4, (0, 1), (1, 2), (2, 3))
    p = np.array([1, 3, 0, 2])
    z_est = np.empty_like(latents)
    z_est[:, p] = latents
    est_adj = np.zeros((4, 4), dtype=int)
    est_adj[np.ix_(p, p)] = true_adj.T
    r_dag = match_latents(latents, z_est, true_adj, est_adj, equivalence="dag")
    r_cpdag = match_latents(latents, z_est, true_adj, est_adj, equivalence="cpdag")
    assert r_dag.shd == 3 and r_dag.shd.misoriented == 3
    assert r_cpdag.shd == 0 and r_cpdag.edge_metrics.f1 == 1.0
    np.testing.assert_array_equal(r_cpdag.true_graph, cpdag(true_adj))
    # 0 -> 1 <- 2, 2 -> 3 is not equivalent to the chain: its CPDAG keeps the v-structure
    # 0 -> 1 <- 2 and has 2 - 3 (nothing points into 2, so R1 cannot fire); against
    # 0 - 1 - 2 - 3 the pairs {0,1} and {1,2} change mark, {2,3} agrees -> 2.
    est_adj = np.zeros((4, 4), dtype=int)
    est_adj[np.ix_(p, p)] = adjacency(4, (0, 1), (2, 1), (2, 3))
    r = match_latents(latents, z_est, true_adj, est_adj, equivalence="cpdag")
    assert r.shd == 2 and r.shd.misoriented == 2
    # as DAGs only {1,2} differs (1 -> 2 vs 2 -> 1): 1, fewer than up to equivalence, since
    # the truth's CPDAG un-orients 0 -> 1 while the estimate's keeps it
    assert match_latents(latents, z_est, true_adj, est_adj).shd == 1


def test_match_latents_extra_estimated_latents(latents):
    # 5 estimated latents for 4 true ones: column 4 is noise, its edges are not scored
    rng = np.random.default_rng(4)
    z_est = np.concatenate([latents, rng.standard_normal((2000, 1))], axis=1)
    true_adj = adjacency(4, (0, 1))
    est_adj = adjacency(5, (0, 1), (4, 2), (3, 4))
    r = match_latents(latents, z_est, true_adj, est_adj)
    np.testing.assert_array_equal(r.permutation, [0, 1, 2, 3])
    assert r.est_adj_matched.shape == (4, 4) and r.shd == 0 and r.unmatched_edges == 2


def test_match_latents_errors(latents):
    adj = adjacency(4, (0, 1))
    with pytest.raises(ValueError, match="equivalence"):
        match_latents(latents, latents, adj, adj, equivalence="mec")
    with pytest.raises(ValueError, match="together.*only true_adj"):
        match_latents(latents, latents, true_adj=adj)
    with pytest.raises(ValueError, match=r"est_adj must be \(4, 4\).*\(3, 3\)"):
        match_latents(latents, latents, adj, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"true_adj must be \(4, 4\)"):
        match_latents(latents, latents, np.zeros((5, 5)), adj)
    cyclic = adjacency(4, (0, 1), (1, 0))
    with pytest.raises(ValueError, match="est_adj must be a DAG"):
        match_latents(latents, latents, adj, cyclic, equivalence="cpdag")
    # as DAG comparison a 2-cycle is just a (weird) graph: allowed
    assert match_latents(latents, latents, adj, cyclic).shd == 1


def _chain_data(n_per_env=20000, seed=0):
    """z0 -> z1 with weight 1, unit noises. Environment 0 observational, 1 sets
    z0 ~ N(2, 1.5^2), 2 sets z1 ~ N(-1, 1) (perfect interventions)."""
    rng = np.random.default_rng(seed)
    blocks, envs = [], []
    for e in range(3):
        z0 = rng.normal(2.0, 1.5, n_per_env) if e == 1 else rng.normal(0.0, 1.0, n_per_env)
        z1 = rng.normal(-1.0, 1.0, n_per_env) if e == 2 else z0 + rng.normal(0, 1, n_per_env)
        blocks.append(np.c_[z0, z1])
        envs.append(np.full(n_per_env, e))
    return np.concatenate(blocks), np.concatenate(envs), np.array([-1, 0, 1])


def test_intervention_leakage_hand_worked_chain():
    from pyrocrl.diagnostics import intervention_leakage

    z, u, targets = _chain_data()
    adj = np.array([[0.0, 1.0], [0.0, 0.0]])
    # exact latents: z1 is independent of its only non-descendant z0 where it is intervened
    # on (sampling noise ~ 1/sqrt(20000) = 0.007); z0 has no non-descendant -> NaN
    exact = intervention_leakage(z, z, u, targets, adj)
    assert np.isnan(exact[0]) and exact[1] < 0.03
    # z1 mixed with its parent, z1_hat = z1 + 0.5 z0: in environment 2, cov(z1_hat, z0) =
    # 0.5 var(z0) = 0.5 and var(z1_hat) = 1 + 0.25, so |corr| = 0.5 / sqrt(1.25) = 0.447
    mixed = z.copy()
    mixed[:, 1] = z[:, 1] + 0.5 * z[:, 0]
    leak = intervention_leakage(z, mixed, u, targets, adj)
    assert leak[1] == pytest.approx(0.5 / np.sqrt(1.25), abs=0.02)
    # ... while in the observational environment z1_hat = 1.5 z0 + eps still correlates
    # 2.5 / sqrt(3.25 * 2) = 0.981 with z1: MCC barely sees the mixing
    obs = u == 0
    assert np.corrcoef(mixed[obs, 1], z[obs, 1])[0, 1] == pytest.approx(
        2.5 / np.sqrt(6.5), abs=0.01)
    # a strictly monotone map of the right latent leaks nothing; torch input is accepted
    bent = np.c_[z[:, 0], np.tanh(z[:, 1])]
    assert intervention_leakage(torch.as_tensor(z), torch.as_tensor(bent), torch.as_tensor(u),
                                targets, adj)[1] < 0.03


def test_intervention_leakage_of_simulated_true_latents_is_sampling_noise():
    from pyrocrl.diagnostics import intervention_leakage
    from pyrocrl.simulate import latent_dag

    ds = latent_dag(5, samples_per_env=5000, obs_dim=10, seed=0)
    leak = intervention_leakage(ds.z, ds.z, ds.u, ds.info["targets"], ds.graph)
    finite = leak[np.isfinite(leak)]
    # at most 4 non-descendants per latent, each |corr| ~ N(0, 1/5000): max well below 0.06
    assert len(finite) >= 1 and finite.max() < 0.06, leak


def test_intervention_leakage_names_bad_input():
    from pyrocrl.diagnostics import intervention_leakage

    z, u, targets = _chain_data(50)
    adj = np.array([[0.0, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="z_est must have z_true's shape"):
        intervention_leakage(z, z[:, :1], u, targets, adj)
    with pytest.raises(ValueError, match=r"targets must be integers in \[-1, 2\)"):
        intervention_leakage(z, z, u, np.array([-1, 0, 2]), adj)
    with pytest.raises(ValueError, match=r"u must lie in \[0, len\(targets\)=3\)"):
        intervention_leakage(z, z, u + 1, targets, adj)
    with pytest.raises(ValueError, match="u must be an integer array"):
        intervention_leakage(z, z, u.astype(float), targets, adj)
    with pytest.raises(ValueError, match="must be a DAG but has the cycle"):
        intervention_leakage(z, z, u, targets, np.array([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"true_adj must be \(2, 2\)"):
        intervention_leakage(z, z, u, targets, np.zeros((3, 3)))
