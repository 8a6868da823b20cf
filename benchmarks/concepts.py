"""B9/B10: linear probes on next-token-prediction features (seed 004, Fig. 2).

B9 (Fig. 2 left): 3 binary concepts on a chain, G.1's one-hot + permutation map to a growing
number of observed binary variables (noiseless, as in G.1), 5 seeds. B10 (Fig. 2 right):
ER1/ER2/ER3 graphs with 4, 6 and 8 concepts, 4 observed variables per concept, 3 seeds.

For each data set: a NextTokenPredictor (G.1's architecture, one masked variable per example,
Adam 1e-3) is trained on half the samples; on the other half we report held-out linear-probe
accuracy, the Bayes accuracy of the exact posterior (the ceiling), the R² of features ->
exact log p(z | x) (Theorem 3.1), and two nulls — an untrained network of the same
architecture and the raw observations — plus the probe/concept-direction alignment of
Corollary 4.3 on counterfactual pairs. The seed reports accuracy only, as a figure; its
trend (accuracy rises with the number of observed variables) is the published anchor.

    python benchmarks/concepts.py            # full size (~15 min on 2 CPU cores)
    python benchmarks/concepts.py --quick    # seconds, for the test suite
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _common import benchmark_parser, mean_std, save_figure, write

from pyrocrl import simulate
from pyrocrl.experiments import concept_experiment

FULL = dict(observed=[2, 3, 4, 6, 8, 12], chain_seeds=[0, 1, 2, 3, 4], graphs=["er1", "er2", "er3"],
            sizes=[4, 6, 8], graph_seeds=[0, 1, 2], num_samples=10_000, steps=1500)
QUICK = dict(observed=[3, 6], chain_seeds=[0], graphs=["er1"], sizes=[4], graph_seeds=[0],
             num_samples=600, steps=20)
METRICS = ("probe_accuracy", "bayes_accuracy", "untrained_probe_accuracy", "posterior_r2",
           "untrained_posterior_r2", "raw_x_posterior_r2", "alignment_diagonal",
           "alignment_off_diagonal", "distinct_fraction", "fit_seconds")


def summarize(rows, key):
    groups = sorted({key(r) for r in rows})
    return {str(g): {m: mean_std([r[m] for r in rows if key(r) == g]) for m in METRICS}
            for g in groups}


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL

    chain_rows, graph_rows = [], []
    for num_observed in size["observed"]:
        for seed in size["chain_seeds"]:
            ds = simulate.discrete_concepts(3, "chain", num_observed, size["num_samples"],
                                            seed=seed)
            row = concept_experiment(ds, seed=seed, device=args.device, num_steps=size["steps"])
            chain_rows.append(row)
            print(f"chain, {num_observed:>2} observed, seed {seed}: probe "
                  f"{row['probe_accuracy']:.3f} (Bayes {row['bayes_accuracy']:.3f}, untrained "
                  f"{row['untrained_probe_accuracy']:.3f}), R2 {row['posterior_r2']:.3f}",
                  flush=True)
    for graph in size["graphs"]:
        for n in size["sizes"]:
            for seed in size["graph_seeds"]:
                ds = simulate.discrete_concepts(n, graph, 4 * n, size["num_samples"], seed=seed)
                row = {"graph": graph, **concept_experiment(ds, seed=seed, device=args.device,
                                                            num_steps=size["steps"])}
                graph_rows.append(row)
                print(f"{graph}, {n} concepts, seed {seed}: probe {row['probe_accuracy']:.3f} "
                      f"(Bayes {row['bayes_accuracy']:.3f}, untrained "
                      f"{row['untrained_probe_accuracy']:.3f}), R2 {row['posterior_r2']:.3f}",
                      flush=True)

    chain = summarize(chain_rows, lambda r: r["num_observed"])
    graphs = summarize(graph_rows, lambda r: f"{r['graph']}_{r['num_concepts']}")
    path = write("concepts_quick" if args.quick else "concepts", {
        "setting": {**size, "split": "50/50 held-out", "flip_prob": 0.0,
                    "observed_per_concept_in_B10": 4},
        "published_anchor": "seed 004 Fig. 2: accuracy rises with the number of observed "
                            "variables (left) and stays high across ER1-3, 4-8 concepts (right)",
        "target": {"B9_probe_accuracy_at_largest": 0.95, "B9_posterior_r2": 0.95,
                   "B10_probe_accuracy": 0.9},
        "B9_chain": chain, "B10_graphs": graphs,
        "runs": {"chain": chain_rows, "graphs": graph_rows}}, args.out)

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    xs = size["observed"]
    for metric, label, style in (("probe_accuracy", "linear probe (trained)", "o-"),
                                 ("bayes_accuracy", "Bayes (exact posterior)", "k--"),
                                 ("untrained_probe_accuracy", "probe on untrained net", "s:")):
        means = [chain[str(d)][metric]["mean"] for d in xs]
        stds = [chain[str(d)][metric]["std"] for d in xs]
        left.errorbar(xs, means, stds, fmt=style, capsize=3, label=label)
    left.set_xlabel("observed variables (3 concepts, chain)")
    left.set_ylabel("held-out accuracy")
    left.legend(fontsize=7)
    keys = list(graphs)
    for k, metric in enumerate(("probe_accuracy", "bayes_accuracy", "untrained_probe_accuracy")):
        right.bar([i + 0.27 * (k - 1) for i in range(len(keys))],
                  [graphs[g][metric]["mean"] for g in keys], 0.27,
                  yerr=[graphs[g][metric]["std"] for g in keys],
                  label=metric.replace("_", " "))
    right.set_xticks(range(len(keys)), [k.replace("_", "\nn=") for k in keys], fontsize=7)
    right.set_ylim(0.5, 1.01)
    right.legend(fontsize=7)
    save_figure(fig, path)
    return chain, graphs


if __name__ == "__main__":
    main()
