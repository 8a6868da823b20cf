"""B6: LinearGaussianSSM's exact log-likelihood vs an independent NumPy Kalman filter.

Linear-Gaussian state space, d_z = 4, d_x = 6, T = 1000, float64, true matrices (drawn by
``simulate.linear_gaussian`` from each seed, with a nonzero initial mean). The reference is a
plain NumPy Kalman filter written here (a loop over time, standard predict/update, Gaussian
log-density of each innovation), sharing no code with the model, whose log-likelihood is
``pyro.distributions.GaussianHMM`` (parallel scan over time). Reported per seed: the largest
absolute log-likelihood error over the sequences (target <= 1e-6), the largest filtered-mean
error of ``LinearGaussianSSM.filter``, and times: best of ``repeats`` for the reference and
ours on the same data, back to back in one process, for one sequence and for the whole batch
(ours batched over sequences, the reference looping). Ratio = ours / NumPy (target < 1). The
recursions of ``filter`` and ``smooth`` (a torch loop over time) are timed too.

Run with ``OMP_NUM_THREADS=1`` (the published numbers were), so that neither side uses
more threads than the other.

    OMP_NUM_THREADS=1 python benchmarks/kalman.py           # full size (~15 s)
    OMP_NUM_THREADS=1 python benchmarks/kalman.py --quick   # seconds
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _common import benchmark_parser, mean_std, write

from pyrocrl import simulate
from pyrocrl.models import LinearGaussianSSM

FULL = dict(seeds=[0, 1, 2], num_sequences=4, seq_len=1000, repeats=7)
QUICK = dict(seeds=[0], num_sequences=2, seq_len=50, repeats=2)
STATE_DIM, OBS_DIM = 4, 6
NAMES = ("transition_matrix", "transition_cov", "observation_matrix", "observation_cov",
         "initial_mean", "initial_cov")


def numpy_kalman(x, transition_matrix, transition_cov, observation_matrix, observation_cov,
                 initial_mean, initial_cov):
    """Reference Kalman filter for one sequence ``x: (T, D)``: ``(log p(x), filtered means
    (T, n))``. Predict, then update with the innovation ``r = x_t - C m`` and its covariance
    ``S = C P C^T + R``; ``log N(r; 0, S)`` through the Cholesky factor of ``S``."""
    a, q, c, r = transition_matrix, transition_cov, observation_matrix, observation_cov
    mean, cov = initial_mean, initial_cov  # the prediction of z_1
    num_steps, obs_dim = x.shape
    log_norm = 0.5 * obs_dim * np.log(2 * np.pi)
    total = 0.0
    means = np.empty((num_steps, mean.shape[0]))
    for t in range(num_steps):
        if t > 0:  # predict
            mean = a @ mean
            cov = a @ cov @ a.T + q
        innovation = x[t] - c @ mean
        s = c @ cov @ c.T + r
        chol = np.linalg.cholesky(s)
        white = np.linalg.solve(chol, innovation)
        total -= log_norm + np.log(np.diag(chol)).sum() + 0.5 * white @ white
        gain = np.linalg.solve(s, c @ cov).T  # P C^T S^{-1}
        mean = mean + gain @ innovation  # update
        cov = cov - gain @ s @ gain.T
        means[t] = mean
    return total, means


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_seed(seed: int, size: dict) -> dict:
    """Errors and timings on the data set of one seed."""
    ds = simulate.linear_gaussian(STATE_DIM, OBS_DIM, num_sequences=size["num_sequences"],
                                  seq_len=size["seq_len"], seed=seed, dtype=torch.float64,
                                  initial_mean=np.linspace(-1.0, 1.0, STATE_DIM))
    matrices = {name: ds.info[name] for name in NAMES}
    ssm = LinearGaussianSSM(STATE_DIM, OBS_DIM, **matrices)
    x, x_np = ds.x, ds.x.numpy()

    def reference_one():
        return numpy_kalman(x_np[0], **matrices)

    def reference_all():
        return [numpy_kalman(seq, **matrices) for seq in x_np]

    @torch.no_grad()
    def ours_one():
        return ssm.log_likelihood(x[:1])

    @torch.no_grad()
    def ours_all():
        return ssm.log_likelihood(x)

    @torch.no_grad()
    def filter_all():
        return ssm.filter(x)

    @torch.no_grad()
    def smooth_all():
        return ssm.smooth(x)

    reference = reference_all()
    expected = np.array([log_lik for log_lik, _ in reference])
    ours = ours_all().numpy()
    filtered_means = filter_all()[0].numpy()
    timing = {name: best_time(fn, size["repeats"]) for name, fn in [
        ("numpy_one", reference_one), ("ours_one", ours_one), ("numpy_all", reference_all),
        ("ours_all", ours_all), ("filter_all", filter_all), ("smooth_all", smooth_all)]}
    return {
        "seed": seed,
        "log_likelihood": expected.tolist(),
        "abs_error": float(np.abs(ours - expected).max()),
        "relative_error": float((np.abs(ours - expected) / np.abs(expected)).max()),
        "filter_mean_abs_error": float(max(np.abs(filtered_means[i] - means).max()
                                           for i, (_, means) in enumerate(reference))),
        "time_s": timing,
        "ratio_one": timing["ours_one"] / timing["numpy_one"],
        "ratio_all": timing["ours_all"] / timing["numpy_all"],
    }


def main(argv=None):
    parser = benchmark_parser(__doc__)
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    rows = []
    for seed in size["seeds"]:
        row = run_seed(seed, size)
        rows.append(row)
        timing = row["time_s"]
        print(f"seed {seed}: |error| {row['abs_error']:.2e}, filter means "
              f"{row['filter_mean_abs_error']:.2e}; one sequence "
              f"{1e3 * timing['ours_one']:.1f} ms vs NumPy {1e3 * timing['numpy_one']:.1f} ms "
              f"(ratio {row['ratio_one']:.3f}); {size['num_sequences']} sequences ratio "
              f"{row['ratio_all']:.3f}; filter {1e3 * timing['filter_all']:.0f} ms, smooth "
              f"{1e3 * timing['smooth_all']:.0f} ms", flush=True)
    summary = {
        "max_abs_error": max(r["abs_error"] for r in rows),
        "max_filter_mean_abs_error": max(r["filter_mean_abs_error"] for r in rows),
        "ratio_one_sequence": mean_std([r["ratio_one"] for r in rows]),
        "ratio_all_sequences": mean_std([r["ratio_all"] for r in rows]),
    }
    summary["passes"] = {"error": summary["max_abs_error"] <= 1e-6,
                         "faster": max(r["ratio_one"] for r in rows) < 1
                         and max(r["ratio_all"] for r in rows) < 1}
    write("kalman_quick" if args.quick else "kalman", {
        "setting": {**size, "state_dim": STATE_DIM, "obs_dim": OBS_DIM, "dtype": "float64",
                    "matrices": "simulate.linear_gaussian defaults (spectral radius 0.9), "
                                "initial_mean linspace(-1, 1)",
                    "timing": "best of `repeats`, ours and NumPy back to back in one process; "
                              "ours under torch.no_grad()",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS")},
        "reference": "NumPy Kalman filter in this script (loop over time, predict/update)",
        "target": {"abs_error": 1e-6, "ratio": "< 1 (faster than NumPy)"},
        "summary": summary, "runs": rows}, args.out)
    return summary


if __name__ == "__main__":
    main()
