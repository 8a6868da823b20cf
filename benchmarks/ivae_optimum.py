"""Why IVAE misses B1: where does the ELBO put its optimum, and where does SVI end?

An oracle diagnostic (it uses ground truth on purpose, to explain a failure, never to select a
model). On B1's data (n = D = 5, 40 domains x 1000 points, seed 0) with a linear and with the
published 3-layer mixing, IVAE is fitted for the same number of steps from five starts:

* random, mean-field posterior (the plain recipe) and random, full-covariance posterior;
* linear: full covariance, started at the linear ICA of (x, u) (``initialize_linear``; no
  ground truth);
* oracle, mean-field and oracle, full: networks first regressed onto the *true* latents
  (``initialize_at``).

If an oracle start drifts away from the truth, the ELBO's optimum is not the truth (a bias of
the objective, e.g. mean-field); if it stays with a clearly better ELBO than the random starts
reach, the random starts fail to find it (an optimization problem). As a floor, the exact
negative log-likelihood of the truth on the same training data
(``pyrocrl.simulate.exact_log_prob``: the x are noise-free, so the true density is known) is
reported beside the losses: no model of x can do better on average, and the distance of a
fit's loss from it says how much of the data's structure the fit has not captured.

    python benchmarks/ivae_optimum.py            # ~8 min on 2 cores
    python benchmarks/ivae_optimum.py --quick    # seconds, for the test suite
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pyro
from _common import benchmark_parser, write

from pyrocrl import diagnostics, models, simulate
from pyrocrl.experiments import IID_FIT
from pyrocrl.inference import fit_svi, initialize_at, initialize_linear

FULL = dict(num_domains=40, samples_per_domain=1000, steps=8000, init_steps=3000,
            mixing_layers=[1, 3])
QUICK = dict(num_domains=12, samples_per_domain=60, steps=20, init_steps=10, mixing_layers=[3])
STARTS = {  # label -> (posterior covariance, start)
    "random, mean-field": ("diagonal", "random"),
    "random, full": ("full", "random"),
    "linear ICA, full": ("full", "linear"),
    "oracle, mean-field": ("diagonal", "oracle"),
    "oracle, full": ("full", "oracle"),
}


def run(train, test, covariance, start, size, seed):
    pyro.set_rng_seed(seed)
    model = models.IVAE(5, 5, size["num_domains"], covariance=covariance)
    row = {}
    if start == "linear":
        initialize_linear(model, train.x, train.u, num_steps=size["init_steps"], seed=seed)
    elif start == "oracle":
        initialize_at(model, train.x, train.u, train.z, num_steps=size["init_steps"], seed=seed)
    if start != "random":
        row["mcc_at_start"] = float(diagnostics.mcc(test.z, model.encode(test.x, test.u)))
    result = fit_svi(model, train.x, train.u, num_steps=size["steps"], seed=seed,
                     progress=False, **IID_FIT)
    z_est = model.encode(test.x, test.u)
    return {**row, "final_loss_per_point": float(np.mean(result.losses[-200:])),
            "mcc": float(diagnostics.mcc(test.z, z_est)),
            "affine_r2": float(diagnostics.affine_r2(test.z, z_est)),
            "obs_scale": float(model.obs_scale.detach().mean())}


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--data-seed", type=int, default=0)
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    rows, truth = [], {}
    for layers in size["mixing_layers"]:
        ds = simulate.nonstationary_sources(num_latents=5, num_domains=size["num_domains"],
                                            samples_per_domain=size["samples_per_domain"],
                                            mixing_layers=layers, seed=args.data_seed)
        train, test = ds.split(0.8, seed=args.data_seed)
        truth[f"{layers}_layer"] = float(-simulate.exact_log_prob(train).mean())
        print(f"{layers}-layer mixing: the truth's exact NLL per training point "
              f"{truth[f'{layers}_layer']:.3f}", flush=True)
        for label, (covariance, start) in STARTS.items():
            row = {"mixing_layers": layers, "start": label,
                   **run(train, test, covariance, start, size, args.data_seed)}
            rows.append(row)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()},
                  flush=True)
    write("ivae_optimum_quick" if args.quick else "ivae_optimum", {
        "setting": {**size, "data_seed": args.data_seed, "fit": IID_FIT,
                    "note": "oracle starts use ground truth to diagnose, not to select"},
        "truth_nll_per_point": truth, "runs": rows}, args.out)
    return rows


if __name__ == "__main__":
    main()
