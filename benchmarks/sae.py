"""B11: four sparse autoencoders on activations with known concepts (seed 004, Appendix H).

(a) Concepts: a NextTokenPredictor is trained on seed 004's discrete-concept data (6 concepts,
ER2 graph, 24 observed bits with 5% flips); its held-out features are the activations. As in
H.2, a logistic-regression probe per concept (fitted on the other half) gives the concept
logits; each SAE's codes are exponentiated, correlated with the logits (Pearson), matched by
the Hungarian algorithm, and we report the mean matched PCC and coverage@0.5, beside the
seed's table for Pythia-70M (0.365 / 0.331 / 0.638 / 0.674).
(b) Synthetic ground truth: sparse-dictionary data (known unit-norm atoms, k-sparse positive
codes); PCC of codes with the true codes (no exp) and the fraction of atoms recovered.
(c) Training throughput of fit_sae (samples/s) on this machine, for every SAE.

    python benchmarks/sae.py            # full size, seeds 0 1 2
    python benchmarks/sae.py --quick    # seconds, for the test suite
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from _common import benchmark_parser, mean_std, save_figure, write
from sklearn.linear_model import LogisticRegression

from pyrocrl import models, simulate
from pyrocrl.experiments import compare_saes, scale_activations
from pyrocrl.inference import fit_next_token

FULL = dict(num_concepts=6, num_observed=24, num_samples=20_000, predictor_steps=1500,
            sae_steps=2000, batch_size=1024, d_in=64, num_atoms=96, k=4, dict_samples=16_384)
QUICK = dict(num_concepts=3, num_observed=8, num_samples=800, predictor_steps=20,
             sae_steps=20, batch_size=256, d_in=16, num_atoms=20, k=2, dict_samples=512)
PUBLISHED = {"top_k": (0.365, 0.107), "batch_top_k": (0.331, 0.071),
             "l1_annealing": (0.638, 0.893), "structured": (0.674, 0.964)}
NAMES = list(PUBLISHED)


def concept_activations(size, seed, device):
    ds = simulate.discrete_concepts(size["num_concepts"], "er2", size["num_observed"],
                                    size["num_samples"], seed=seed, flip_prob=0.05)
    train, test = ds.split(0.5, seed=seed)
    torch.manual_seed(seed)
    predictor = models.NextTokenPredictor(size["num_observed"])
    fit_next_token(predictor, train.x, num_steps=size["predictor_steps"], seed=seed,
                   device=device, progress=False)
    train_acts, test_acts = scale_activations(predictor.features(train.x),
                                              predictor.features(test.x))
    logits = np.stack([LogisticRegression(max_iter=2000).fit(
        train_acts.numpy(), train.z[:, i].numpy()).decision_function(test_acts.numpy())
        for i in range(ds.z.shape[1])], 1)
    return train_acts, test_acts, logits


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    fit = dict(num_steps=size["sae_steps"], batch_size=size["batch_size"], device=args.device)

    runs = {"concepts": [], "dictionary": []}
    for seed in args.seeds:
        train_acts, test_acts, logits = concept_activations(size, seed, args.device)
        rows = compare_saes(train_acts, test_acts, logits, transform="exp", seed=seed, **fit)
        runs["concepts"].append({"seed": seed, **rows})
        ds = simulate.sparse_dictionary(size["d_in"], size["num_atoms"], size["k"],
                                        size["dict_samples"], seed=seed, noise=0.01)
        train, test = ds.split(0.75, seed=seed)
        train_x, test_x = scale_activations(train.x, test.x)
        rows_d = compare_saes(train_x, test_x, test.z, transform="identity", k=size["k"],
                              d_sae=size["num_atoms"], seed=seed,
                              true_atoms=ds.info["atoms"], **fit)
        runs["dictionary"].append({"seed": seed, **rows_d})
        for name in NAMES:
            print(f"seed {seed} {name:<13} concepts: PCC {rows[name]['mean_pcc']:.3f} cov "
                  f"{rows[name]['coverage']:.2f} | dictionary: PCC {rows_d[name]['mean_pcc']:.3f}"
                  f" atoms {rows_d[name]['atoms_recovered']:.2f} | "
                  f"{rows[name]['samples_per_second']:.0f} samples/s", flush=True)

    def stats(part, metric):
        return {name: mean_std([r[name][metric] for r in runs[part]]) for name in NAMES}

    summary = {
        "concepts": {m: stats("concepts", m) for m in
                     ("mean_pcc", "coverage", "fraction_of_variance_unexplained", "l0")},
        "dictionary": {m: stats("dictionary", m) for m in
                       ("mean_pcc", "coverage", "atoms_recovered",
                        "fraction_of_variance_unexplained", "l0")},
        "throughput_samples_per_second": stats("concepts", "samples_per_second"),
    }
    path = write("sae_quick" if args.quick else "sae", {
        "setting": {**size, "seeds": args.seeds, "d_sae_concepts": 2 * 256,
                    "flip_prob": 0.05, "graph": "er2"},
        "published_anchor": {"table": "seed 004 Table 2 (Pythia-70M, 27 concepts)",
                             **{n: {"mean_pcc": p, "coverage": c}
                                for n, (p, c) in PUBLISHED.items()}},
        "target": {"ordering": "annealing variants above top-k variants",
                   "structured_mean_pcc_synthetic": 0.8},
        "summary": summary, "runs": runs}, args.out)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    x = np.arange(len(NAMES))
    for ax, part, title in ((axes[0], "concepts", "next-token features vs probe logits"),
                            (axes[1], "dictionary", "sparse dictionary vs true codes")):
        block = summary[part]["mean_pcc"]
        ax.bar(x - 0.2, [block[n]["mean"] for n in NAMES], 0.4,
               yerr=[block[n]["std"] for n in NAMES], label="pyrocrl (held-out)")
        if part == "concepts":
            ax.bar(x + 0.2, [PUBLISHED[n][0] for n in NAMES], 0.4, color="gray",
                   label="seed 004 (Pythia-70M)")
        ax.set_xticks(x, [n.replace("_", "-") for n in NAMES], fontsize=8)
        ax.set_ylabel("mean matched PCC")
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return summary


if __name__ == "__main__":
    main()
