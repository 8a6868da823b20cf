"""B3-B5: TemporalVAE vs DeepMarkovModel vs IVAE/VAE on nonstationary latent dynamics.

Settings (BENCHMARKS.md): TDRL "fixed" (stationary nonlinear transition, history-modulated
noise), TDRL "change" (domain-specific transition weights and noise scales) and LEAP's
sufficient-variability curve ("noise_regimes", K = 1, 5, 10, 15, 20 regimes of noise; here
each regime also shifts the noise mean, ``noise_mean_range``, so that seed 001's 2n condition
can hold at all — with scales alone it never does, see the diagnostic's docstring).

CPU size (this file's default, clearly smaller than the published 8 latents): 4 latents, lag
2, 8-dimensional observations through a 3-layer leaky-ReLU MLP, 1000 sequences of 10 frames
(80/20 split), 2000 steps, seeds 0 1 2 (regime curve: 0 1). Held-out Pearson MCC of posterior
means over every frame; nothing is selected with ground truth. The IVAE/VAE baselines see
frames with their domain labels but no dynamics. For each regime count the
``sufficient_variability`` diagnostic is run on the true process (fraction of points where the
2n condition holds).

Published anchors: TDRL 0.959 (fixed) / 0.947 (change), in-sample, 1 seed, checkpoint chosen
by true MCC, 8 latents; LEAP curve ~0.2 / 0.72 / 0.8 / 0.9 / 0.95 at K = 1 / 5 / 10 / 15 / 20,
baselines <= 0.47.

    python benchmarks/temporal.py                       # CPU size, every setting
    python benchmarks/temporal.py --settings fixed change --tag tdrl     # what ran here
    python benchmarks/temporal.py --settings regimes --seeds 0 1 --tag regimes
    python benchmarks/temporal.py --size full           # 8 latents (for a GPU)
    python benchmarks/temporal.py --quick               # seconds, for the test suite
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _common import benchmark_parser, mean_std, save_figure, write

from pyrocrl import diagnostics, simulate
from pyrocrl.experiments import fit_and_score

SIZES = {
    "cpu": dict(num_latents=4, lag=2, obs_dim=8, num_sequences=1000, seq_len=10, steps=2000,
                domains=5),
    "full": dict(num_latents=8, lag=2, obs_dim=8, num_sequences=8000, seq_len=10, steps=20000,
                 domains=5),
    "quick": dict(num_latents=2, lag=1, obs_dim=4, num_sequences=60, seq_len=4, steps=10,
                  domains=3),
}
REGIMES = [1, 5, 10, 15, 20]
PUBLISHED = {"fixed": 0.959, "change": 0.947,
             "regimes": {1: 0.2, 5: 0.72, 10: 0.8, 15: 0.9, 20: 0.95}, "baselines_max": 0.47}
#: variant -> (model, fit_and_score options); the variants not named in MODELS run on request
#: (--models). The linear start needs domains, so it applies to "change" and K >= 2 regimes.
VARIANTS = {"temporal_vae_linear": ("temporal_vae", {"init": "linear", "init_steps": 1500})}
MODELS = {"fixed": ["temporal_vae", "dmm", "ivae", "vae"],
          "change": ["temporal_vae", "dmm", "ivae", "vae"],
          "regimes": ["temporal_vae", "ivae"]}


def simulate_setting(setting: str, size: dict, seed: int, regimes: int | None = None):
    common = dict(num_latents=size["num_latents"], lag=size["lag"], obs_dim=size["obs_dim"],
                  num_sequences=size["num_sequences"], seq_len=size["seq_len"], seed=seed)
    if setting == "fixed":
        return simulate.nonstationary_temporal(setting="fixed", num_domains=1, **common)
    if setting == "change":
        return simulate.nonstationary_temporal(setting="change", num_domains=size["domains"],
                                               **common)
    return simulate.nonstationary_temporal(setting="noise_regimes", num_domains=regimes,
                                           noise_mean_range=(-1.0, 1.0), **common)


def variability(ds, num_points: int = 200) -> float:
    """Fraction of held-in points where the true process satisfies the 2n condition."""
    if ds.info["num_domains"] < 2:
        return 0.0
    points, context = diagnostics.lagged_points(ds.z[:num_points], lag=ds.info["lag"])
    return float(diagnostics.sufficient_variability(ds.info["process"], points,
                                                    ds.info["num_domains"], context=context))


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--size", choices=["cpu", "full"], default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["fixed", "change", "regimes"])
    parser.add_argument("--regimes", type=int, nargs="+", default=REGIMES)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=None,
                        help="models/variants to run instead of each setting's default list "
                             f"(variants: {', '.join(VARIANTS)})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tag", default=None,
                        help="suffix of the result file (temporal_<tag>.json), e.g. to keep "
                             "runs of different settings apart")
    args = parser.parse_args(argv)
    size = dict(SIZES["quick" if args.quick else args.size])
    if args.steps:
        size["steps"] = args.steps
    seeds = [0] if args.quick else args.seeds
    regime_counts = [1, 3] if args.quick else args.regimes

    def models_of(setting):
        return args.models or MODELS[setting]

    rows = []
    for setting in args.settings:
        for regimes in (regime_counts if setting == "regimes" else [None]):
            for seed in seeds:
                ds = simulate_setting(setting, size, seed, regimes)
                train, test = ds.split(0.8, seed=seed)
                holds = variability(ds)
                for name in models_of(setting):
                    model, options = VARIANTS.get(name, (name, {}))
                    if args.quick and "init_steps" in options:
                        options = {**options, "init_steps": 10}
                    run = fit_and_score(model, train, test, num_steps=size["steps"], seed=seed,
                                        device=args.device, **options)
                    rows.append({"setting": setting, "regimes": regimes, "seed": seed,
                                 "variability_holds": holds, **run.summary(), "model": name})
                    label = setting if regimes is None else f"K={regimes}"
                    print(f"{label:<7} seed {seed} {name:<12} held-out MCC {float(run.mcc):.3f}"
                          f" (affine R2 {float(run.affine_r2):.3f}) in {run.fit.time_s:.0f}s"
                          f"{'' if regimes is None else f', 2n condition at {holds:.0%}'}",
                          flush=True)

    def pick(setting, name, regimes=None):
        return [r for r in rows if r["setting"] == setting and r["model"] == name
                and r["regimes"] == regimes]

    summary = {}
    for setting in args.settings:
        for regimes in (regime_counts if setting == "regimes" else [None]):
            key = setting if regimes is None else f"regimes_{regimes}"
            summary[key] = {name: {m: mean_std([r[m] for r in pick(setting, name, regimes)])
                                   for m in ("mcc", "affine_r2", "fit_seconds")}
                            for name in models_of(setting)}
            if regimes is not None:
                summary[key]["variability_holds"] = mean_std(
                    [r["variability_holds"] for r in rows
                     if r["setting"] == setting and r["regimes"] == regimes])
    name = "temporal_quick" if args.quick else "_".join(
        ["temporal"] + ([] if args.size == "cpu" else [args.size]) + ([args.tag] if args.tag
                                                                      else []))
    path = write(name, {
        "setting": {**size, "size": "quick" if args.quick else args.size, "seeds": seeds,
                    "regimes": regime_counts, "noise_mean_range_for_regimes": [-1.0, 1.0],
                    "split": "80/20 held-out sequences", "mixing_layers": 3},
        "published_anchor": PUBLISHED,
        "target": {"fixed_mcc": 0.96, "change_mcc": 0.96, "regimes": "at or above LEAP"},
        "summary": summary, "runs": rows}, args.out)

    if "regimes" in args.settings:
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        for i, model in enumerate(models_of("regimes")):
            means = [summary[f"regimes_{k}"][model]["mcc"]["mean"] for k in regime_counts]
            stds = [summary[f"regimes_{k}"][model]["mcc"]["std"] for k in regime_counts]
            ax.errorbar(regime_counts, means, stds, marker="o", capsize=3, color=f"C{i}",
                        label=f"{model} ({size['num_latents']} latents, ours)")
        ks = sorted(PUBLISHED["regimes"])
        ax.plot(ks, [PUBLISHED["regimes"][k] for k in ks], "k--", marker="s",
                label="TDRL/LEAP published (8 latents)")
        holds = [summary[f"regimes_{k}"]["variability_holds"]["mean"] for k in regime_counts]
        ax.plot(regime_counts, holds, ":", color="gray", marker="^",
                label="2n condition holds (true process)")
        ax.set_xlabel("number of noise regimes K")
        ax.set_ylabel("held-out MCC")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="lower right")
        save_figure(fig, path)
    for key, block in summary.items():
        print(key, {m: round(v["mcc"]["mean"], 3) for m, v in block.items() if "mcc" in v})
    return summary


if __name__ == "__main__":
    main()
