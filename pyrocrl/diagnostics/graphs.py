"""Is the learned causal graph over the latents the true one, up to what theory allows?

Convention everywhere: ``graph[i, j] != 0`` means the edge ``i -> j`` (row -> column); weights
are allowed and only whether ``|graph[i, j]| > threshold`` matters. A partially directed graph
(CPDAG / PDAG) encodes the undirected edge ``i - j`` as both ``graph[i, j]`` and
``graph[j, i]`` nonzero. These functions only need arrays (NumPy or torch); they never import
a model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields

import networkx as nx
import numpy as np
import torch

from pyrocrl.diagnostics.identifiability import Score, _numpy, as_samples, mcc

__all__ = ["EdgeMetrics", "LatentGraphMatch", "cpdag", "edge_metrics", "intervention_leakage",
           "match_latents", "shd"]


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not (np.isfinite(threshold) and threshold >= 0.0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    return threshold


def _edges(name: str, adj, threshold: float = 0.0) -> np.ndarray:
    """``adj`` (NumPy or torch, weighted allowed) as a boolean ``(n, n)`` edge matrix
    ``|adj| > threshold``; raise naming ``name`` unless square, finite and loop-free."""
    if isinstance(adj, torch.Tensor):
        adj = adj.detach().cpu().numpy()
    try:
        adj = np.asarray(adj, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric (n, n) adjacency matrix: {error}") from None
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) adjacency matrix, got shape "
                         f"{adj.shape}")
    if not np.isfinite(adj).all():
        raise ValueError(f"{name} contains NaN or inf")
    edges = np.abs(adj) > threshold
    loops = np.flatnonzero(np.diag(edges))
    if loops.size:
        raise ValueError(f"{name} has self-loops (nonzero diagonal beyond threshold) at nodes "
                         f"{loops.tolist()}; graphs here have no self-loops")
    return edges


def _edge_pair(true_adj, est_adj, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    threshold = _check_threshold(threshold)
    a, b = _edges("true_adj", true_adj, threshold), _edges("est_adj", est_adj, threshold)
    if a.shape != b.shape:
        raise ValueError(f"true_adj and est_adj must have the same shape, got {a.shape} and "
                         f"{b.shape}")
    return a, b


def _pair_marks(edges: np.ndarray) -> np.ndarray:
    """Edge mark of every unordered pair ``i < j`` (upper-triangle order):
    0 no edge, 1 ``i -> j``, 2 ``j -> i``, 3 undirected ``i - j``."""
    rows, cols = np.triu_indices(edges.shape[0], 1)
    return edges[rows, cols].astype(np.int64) + 2 * edges[cols, rows].astype(np.int64)


def shd(true_adj, est_adj, threshold: float = 0.0) -> Score:
    r"""Structural Hamming distance: the number of node pairs :math:`\{i, j\}` whose edge
    differs between the two graphs.

    Each pair counts at most 1: a missing edge, an extra edge and a **reversed edge each count
    1** (this matches ``gadjid.shd``; cdt's ``SHD(..., double_for_anticausal=True)``, its
    default, counts a reversed edge 2, as a missing plus an extra edge). For partially directed
    graphs (CPDAG / PDAG, undirected ``i - j`` encoded as both ``[i, j]`` and ``[j, i]``
    nonzero) a pair counts 1 whenever its mark differs, e.g. ``i -> j`` vs ``i - j``.

    Equivalence it measures up to: none beyond the node labelling (the graphs are compared
    edge by edge in the given node order; weights are ignored, only :math:`|w| >` ``threshold``
    matters). To compare up to Markov equivalence, pass :func:`cpdag` of both DAGs; to compare
    latent graphs up to a permutation of the latents, use :func:`match_latents`.

    Args:
        true_adj, est_adj: ``(n, n)`` adjacency matrices (NumPy or torch), ``[i, j] != 0``
            meaning ``i -> j``; no self-loops. Acyclicity is not required.
        threshold: entries with :math:`|w| \le` ``threshold`` count as no edge.

    Returns:
        :class:`Score` (an integer-valued float) with ``missing`` (true pairs with no
        estimated edge), ``extra`` (estimated pairs with no true edge), ``misoriented`` (pairs
        adjacent in both with different marks, e.g. reversed) and ``normalized``
        (``shd / (n (n - 1) / 2)``, 0 for ``n < 2``). For DAGs it is symmetric in its
        arguments.
    """
    a, b = _edge_pair(true_adj, est_adj, threshold)
    ta, tb = _pair_marks(a), _pair_marks(b)
    missing = int(np.sum((ta != 0) & (tb == 0)))
    extra = int(np.sum((ta == 0) & (tb != 0)))
    misoriented = int(np.sum((ta != 0) & (tb != 0) & (ta != tb)))
    total = missing + extra + misoriented
    return Score(total, missing=missing, extra=extra, misoriented=misoriented,
                 normalized=total / ta.size if ta.size else 0.0)


@dataclass(frozen=True)
class EdgeMetrics(Mapping):
    """Edge-recovery scores; read them as attributes (``m.f1``) or as a mapping
    (``m["f1"]``, ``dict(m)``, :meth:`as_dict`). See :func:`edge_metrics`."""

    precision: float
    recall: float
    f1: float
    skeleton_precision: float
    skeleton_recall: float
    skeleton_f1: float
    orientation_accuracy: float
    n_true_edges: int
    n_est_edges: int
    true_positives: int
    skeleton_true_positives: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key: str):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return (f.name for f in fields(self))

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


def edge_metrics(true_adj, est_adj, threshold: float = 0.0,
                 zero_division: float = 1.0) -> EdgeMetrics:
    r"""Precision, recall and F1 of the estimated edges, with and without direction.

    Counted per node pair (one edge = one pair, as in :func:`shd`):

    * **directed** (``precision``, ``recall``, ``f1``): an estimated edge is a true positive
      when the true graph has an edge on the same pair with the **same mark**. For DAGs this is
      the usual precision/recall over directed edges ``i -> j``; a reversed edge is both a
      false positive and a false negative. In CPDAGs an undirected edge must be estimated as
      undirected.
    * **skeleton** (``skeleton_precision``, ``skeleton_recall``, ``skeleton_f1``): direction
      ignored, only adjacency matters.
    * ``orientation_accuracy``: among the true edges whose skeleton edge is found, the fraction
      with the same mark (``true_positives / skeleton_true_positives``).

    ``f1 = 2 TP / (n_true_edges + n_est_edges)`` (the harmonic mean of precision and recall
    whenever both are defined). **0/0 cases** (no estimated edges for precision, no true edges
    for recall, both graphs empty for F1, no found skeleton edge for orientation accuracy)
    return ``zero_division``, by default 1.0 ("nothing to get wrong"): two empty graphs score
    1 everywhere, an empty estimate of a nonempty graph scores precision 1 but recall 0 and
    F1 0, and F1 is 1 exactly when the graphs agree. ``orientation_accuracy`` is then
    vacuous, so read it together with ``skeleton_recall`` (or pass ``zero_division=nan``).
    It plays the role of scikit-learn's ``zero_division`` (whose default gives 0 and warns).

    Equivalence it measures up to: none beyond the node labelling, as :func:`shd`.

    Args:
        true_adj, est_adj: ``(n, n)`` adjacency matrices (NumPy or torch), ``[i, j] != 0``
            meaning ``i -> j``; an undirected edge is a symmetric pair of entries.
        threshold: entries with :math:`|w| \le` ``threshold`` count as no edge.
        zero_division: value returned for 0/0: a number in [0, 1] or NaN.

    Returns:
        :class:`EdgeMetrics` with the seven scores and the counts ``n_true_edges``,
        ``n_est_edges``, ``true_positives`` and ``skeleton_true_positives``.
    """
    zero_division = float(zero_division)
    if not (np.isnan(zero_division) or 0.0 <= zero_division <= 1.0):
        raise ValueError(f"zero_division must lie in [0, 1] or be NaN, got {zero_division}")
    a, b = _edge_pair(true_adj, est_adj, threshold)
    ta, tb = _pair_marks(a), _pair_marks(b)
    n_true, n_est = int(np.sum(ta != 0)), int(np.sum(tb != 0))
    skeleton_tp = int(np.sum((ta != 0) & (tb != 0)))
    tp = int(np.sum((ta != 0) & (ta == tb)))

    def ratio(num: int, den: int) -> float:
        return num / den if den else zero_division

    return EdgeMetrics(
        precision=ratio(tp, n_est), recall=ratio(tp, n_true),
        f1=ratio(2 * tp, n_true + n_est),
        skeleton_precision=ratio(skeleton_tp, n_est), skeleton_recall=ratio(skeleton_tp, n_true),
        skeleton_f1=ratio(2 * skeleton_tp, n_true + n_est),
        orientation_accuracy=ratio(tp, skeleton_tp),
        n_true_edges=n_true, n_est_edges=n_est, true_positives=tp,
        skeleton_true_positives=skeleton_tp)


def _digraph(edges: np.ndarray) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(range(edges.shape[0]))
    graph.add_edges_from((int(i), int(j)) for i, j in zip(*np.nonzero(edges)))
    return graph


def _check_dag(name: str, edges: np.ndarray) -> nx.DiGraph:
    """The networkx DiGraph of ``edges``; raise naming ``name`` and a cycle if it has one."""
    graph = _digraph(edges)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return graph
    path = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
    raise ValueError(f"{name} must be a DAG but has the cycle {path}"
                     + (" (an undirected edge, i.e. symmetric entries, is a 2-cycle: pass a "
                        "DAG, not a CPDAG)" if len(cycle) == 2 else ""))


def _dag_cpdag(name: str, edges: np.ndarray) -> np.ndarray:
    """CPDAG of the DAG with boolean edge matrix ``edges``; raise naming ``name`` if cyclic."""
    graph = _check_dag(name, edges)
    adjacent = edges | edges.T
    # Pattern: the skeleton, undirected (both marks), except the v-structures a -> c <- b
    # (a, b non-adjacent), which every DAG of the Markov equivalence class shares (Verma &
    # Pearl 1990).
    marks = adjacent.copy()
    for a, c, b in nx.dag.v_structures(graph):
        marks[c, a] = marks[c, b] = False

    # Meek (1995) rules R1-R3, applied until nothing changes, orient exactly the compelled
    # edges when started from the pattern of a DAG (R4 is only needed with background
    # knowledge). Orienting a - b as a -> b clears marks[b, a].
    changed = True
    while changed:
        changed = False
        directed = marks & ~marks.T
        undirected = marks & marks.T
        for a, b in zip(*np.nonzero(undirected)):
            if not undirected[a, b]:  # oriented earlier in this sweep
                continue
            # R1: c -> a - b, c and b non-adjacent  =>  a -> b (else a new v-structure).
            r1 = np.any(directed[:, a] & ~adjacent[:, b])
            # R2: a -> c -> b and a - b  =>  a -> b (else a cycle).
            r2 = np.any(directed[a, :] & directed[:, b])
            # R3: a - c -> b, a - d -> b, c and d non-adjacent, a - b  =>  a -> b.
            r3 = False
            if not (r1 or r2):
                parents = np.flatnonzero(undirected[a, :] & directed[:, b])
                sub = adjacent[np.ix_(parents, parents)] | np.eye(len(parents), dtype=bool)
                r3 = not sub.all()
            if r1 or r2 or r3:
                marks[b, a] = False
                directed[a, b], undirected[a, b], undirected[b, a] = True, False, False
                changed = True
    return marks


def cpdag(adj, threshold: float = 0.0) -> np.ndarray:
    r"""The CPDAG (completed partially directed acyclic graph, essential graph) of a DAG.

    Two DAGs are Markov equivalent (imply the same conditional independences) iff they have
    the same skeleton and the same v-structures ``a -> c <- b`` with ``a``, ``b`` non-adjacent
    (Verma & Pearl 1990). The CPDAG keeps an edge directed iff every DAG of the equivalence
    class orients it the same way (a *compelled* edge) and makes the others undirected. It is
    computed from the pattern (skeleton plus v-structures, via networkx) by applying Meek's
    rules R1-R3 to a fixed point (Meek 1995), which is complete for this case.

    Equivalence it measures up to: it *is* the canonical representative of the Markov
    equivalence class, so ``cpdag(G1) == cpdag(G2)`` iff ``G1`` and ``G2`` are Markov
    equivalent; ``shd(cpdag(G1), cpdag(G2))`` compares DAGs up to Markov equivalence (what
    observational data can identify without further assumptions).

    Args:
        adj: ``(n, n)`` DAG adjacency (NumPy or torch, weighted allowed), ``[i, j] != 0``
            meaning ``i -> j``.
        threshold: entries with :math:`|w| \le` ``threshold`` count as no edge.

    Returns:
        ``(n, n)`` int64 0/1 NumPy array: ``[i, j] = 1, [j, i] = 0`` for a compelled edge
        ``i -> j``, ``[i, j] = [j, i] = 1`` for an undirected (reversible) edge ``i - j``.

    Raises:
        ValueError: ``adj`` not square, not finite, with self-loops, or cyclic (the message
            names a cycle).
    """
    edges = _edges("adj", adj, _check_threshold(threshold))
    return _dag_cpdag("adj", edges).astype(np.int64)


@dataclass(frozen=True)
class LatentGraphMatch:
    """Result of :func:`match_latents`.

    Attributes:
        permutation: ``(n,)`` estimated latent matched to each true latent.
        mcc: the :func:`~pyrocrl.diagnostics.mcc` :class:`Score` of that matching (with
            ``per_dim``, ``signs``, ``correlation``).
        equivalence: ``"dag"`` or ``"cpdag"``.
        est_adj_matched: ``(n, n)`` estimated adjacency in the true latents' order (original
            weights; ``[i, j] = est_adj[permutation[i], permutation[j]]``), or ``None``.
        true_graph, est_graph: the 0/1 graphs actually compared: the thresholded true and
            matched adjacencies (``"dag"``) or their CPDAGs (``"cpdag"``), or ``None``.
        shd: :func:`shd` between ``true_graph`` and ``est_graph``, or ``None``.
        edge_metrics: :func:`edge_metrics` between them, or ``None``.
        unmatched_edges: estimated edges touching an estimated latent left unmatched
            (``z_est`` with more dimensions than ``z_true``); they are not scored.
    """

    permutation: np.ndarray
    mcc: Score
    equivalence: str
    est_adj_matched: np.ndarray | None = None
    true_graph: np.ndarray | None = None
    est_graph: np.ndarray | None = None
    shd: Score | None = None
    edge_metrics: EdgeMetrics | None = None
    unmatched_edges: int = 0


def match_latents(z_true, z_est, true_adj=None, est_adj=None, equivalence: str = "dag",
                  threshold: float = 0.0, method: str = "pearson") -> LatentGraphMatch:
    r"""Match estimated latents to true ones, then score the latent graph in that order.

    The permutation is the Hungarian assignment maximising the summed :math:`|\mathrm{corr}|`
    between true and estimated latents (exactly :func:`~pyrocrl.diagnostics.mcc`); it uses
    the ground-truth latents, as any such evaluation must, but **never the graphs**: the graph
    scores are not optimised over permutations. The estimated adjacency is then reordered into
    the true latents' order and compared with the truth.

    Equivalence it measures up to: the latents up to permutation and, for ``method="pearson"``
    (``"spearman"``), per-dimension sign/affine (strictly monotone) maps; neither changes
    which edges exist. The graph, given the matching, up to:

    * ``"dag"``: nothing: edges and their directions must agree;
    * ``"cpdag"``: Markov equivalence: both DAGs are replaced by their :func:`cpdag` before
      :func:`shd` and :func:`edge_metrics`. Use it when only the Markov equivalence class is
      identifiable (e.g. observational data without further assumptions).

    Args:
        z_true: ``(N, n)`` or ``(N, T, n)`` true latents (leading dims flattened).
        z_est: ``(N, m)`` or ``(N, T, m)`` estimated latents, ``m >= n``; extra dimensions
            are left unmatched.
        true_adj: ``(n, n)`` true adjacency, ``[i, j] != 0`` meaning ``i -> j``; give it
            together with ``est_adj`` or not at all.
        est_adj: ``(m, m)`` estimated adjacency over the columns of ``z_est``.
        equivalence: ``"dag"`` or ``"cpdag"`` (then both adjacencies must be DAGs).
        threshold: entries with :math:`|w| \le` ``threshold`` count as no edge.
        method: ``"pearson"`` or ``"spearman"``, passed to ``mcc``.

    Returns:
        :class:`LatentGraphMatch`; without adjacencies only ``permutation`` and ``mcc`` are
        set.
    """
    if equivalence not in ("dag", "cpdag"):
        raise ValueError(f"match_latents: equivalence must be 'dag' or 'cpdag', got "
                         f"{equivalence!r}")
    if (true_adj is None) != (est_adj is None):
        raise ValueError("match_latents: give true_adj and est_adj together (or neither); got "
                         f"only {'true_adj' if est_adj is None else 'est_adj'}")
    threshold = _check_threshold(threshold)
    score = mcc(z_true, z_est, method=method)
    permutation = np.asarray(score.permutation)
    if true_adj is None:
        return LatentGraphMatch(permutation=permutation, mcc=score, equivalence=equivalence)

    n, m = score.correlation.shape
    true_edges = _edges("true_adj", true_adj, threshold)
    est_edges = _edges("est_adj", est_adj, threshold)
    if equivalence == "cpdag":  # check in the caller's node order, before any permuting
        _check_dag("true_adj", true_edges)
        _check_dag("est_adj", est_edges)
    if true_edges.shape != (n, n):
        raise ValueError(f"match_latents: true_adj must be ({n}, {n}) for z_true's {n} "
                         f"latents, got {true_edges.shape}")
    if est_edges.shape != (m, m):
        raise ValueError(f"match_latents: est_adj must be ({m}, {m}) for z_est's {m} latents, "
                         f"got {est_edges.shape}")
    if isinstance(est_adj, torch.Tensor):
        est_adj = est_adj.detach().cpu().numpy()
    est_adj_matched = np.asarray(est_adj)[np.ix_(permutation, permutation)]
    matched_edges = est_edges[np.ix_(permutation, permutation)]
    unmatched = int(est_edges.sum() - matched_edges.sum())
    if equivalence == "cpdag":
        true_graph = _dag_cpdag("true_adj", true_edges)
        est_graph = _dag_cpdag("est_adj", matched_edges)
    else:
        true_graph, est_graph = true_edges, matched_edges
    true_graph, est_graph = true_graph.astype(np.int64), est_graph.astype(np.int64)
    return LatentGraphMatch(
        permutation=permutation, mcc=score, equivalence=equivalence,
        est_adj_matched=est_adj_matched, true_graph=true_graph, est_graph=est_graph,
        shd=shd(true_graph, est_graph), edge_metrics=edge_metrics(true_graph, est_graph),
        unmatched_edges=unmatched)


def intervention_leakage(z_true, z_est, u, targets, true_adj,
                         threshold: float = 0.0) -> np.ndarray:
    r"""How much of the latents it cannot depend on each estimated latent still carries where
    it is intervened on: ``(n,)``, entry ``j`` the largest :math:`|\mathrm{corr}(\hat z_j,
    z_k)|` over the true non-descendants :math:`k \ne j` of :math:`j`, within the
    environments that intervene on :math:`j` (the largest over them if several).

    Under a perfect intervention on :math:`z_j` its fresh noise enters none of its
    non-descendants, and its parents no longer enter it, so :math:`z_j` is independent of
    every non-descendant there: any :math:`\hat z_j = h(z_j)` scores about
    :math:`1/\sqrt{N_e}`. An estimate mixed with a parent, :math:`\hat z_j = z_j + c\,z_p`,
    scores :math:`|c|\,\mathrm{sd}(z_p) / \mathrm{sd}(\hat z_j)` (computed within the
    environment). MCC hardly sees such mixing, because in the observational data :math:`z_p`
    is correlated with :math:`z_j` anyway, but every estimated weight into :math:`j` moves
    with it: a latent-side measure to set beside the graph's scores. On B7's 3-layer data
    (``benchmarks/contrastive_optimum.py``, 5 seeds, ~800 test points per environment) the
    largest leakage over the latents is 0.064 ± 0.013 for the true latents (the noise floor)
    and 0.35–0.53 for the contrastive restart with the best MCC (0.88–0.91) of each seed.
    Uses ground truth; for evaluation only. With soft interventions the independence does not
    hold, so the score has no zero to compare with.

    Args:
        z_true: ``(N, n)`` true latents.
        z_est: ``(N, n)`` estimates, column ``j`` the estimate of latent ``j`` (with known
            targets, as :class:`~pyrocrl.models.LatentCausalVAE` orders them; otherwise apply
            :func:`match_latents`' permutation first).
        u: ``(N,)`` integer environment of each row, in ``[0, len(targets))``.
        targets: ``(E,)`` the latent intervened on in each environment, ``-1`` observational.
        true_adj: ``(n, n)`` true DAG, ``[i, j] != 0`` meaning ``i -> j``.
        threshold: entries of ``true_adj`` with :math:`|w| \le` ``threshold`` are no edge.

    Returns: ``(n,)`` float array; NaN for a latent that no environment intervenes on, or
    that has no non-descendant.
    """
    z_true, z_est = as_samples("z_true", z_true), as_samples("z_est", z_est)
    u, targets = _numpy(u), _numpy(targets)
    n = z_true.shape[1]
    if z_est.shape != z_true.shape:
        raise ValueError(f"z_est must have z_true's shape {z_true.shape} (column j the "
                         f"estimate of latent j), got {z_est.shape}")
    if u.shape != (len(z_true),) or not np.issubdtype(u.dtype, np.integer):
        raise ValueError(f"u must be an integer array of shape ({len(z_true)},), got "
                         f"{u.dtype} {u.shape}")
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer) or (
            (targets < -1) | (targets >= n)).any():
        raise ValueError(f"targets must be integers in [-1, {n}), got {targets.tolist()}")
    if u.size and (u.min() < 0 or u.max() >= len(targets)):
        raise ValueError(f"u must lie in [0, len(targets)={len(targets)}), got values in "
                         f"[{u.min()}, {u.max()}]")
    edges = _edges("true_adj", true_adj, _check_threshold(threshold))
    if edges.shape != (n, n):
        raise ValueError(f"true_adj must be ({n}, {n}) like the latents, got {edges.shape}")
    graph = _check_dag("true_adj", edges)
    leakage = np.full(n, np.nan)
    for e, j in enumerate(targets.tolist()):
        rows = u == e
        others = sorted(set(range(n)) - nx.descendants(graph, j) - {j}) if j >= 0 else []
        if j < 0 or not others or rows.sum() < 3:
            continue
        corr = np.corrcoef(np.c_[z_est[rows, j], z_true[rows][:, others]].T)[0, 1:]
        leakage[j] = np.nanmax([leakage[j], np.abs(corr).max()])
    return leakage
