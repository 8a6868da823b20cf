"""How strongly does B1's data identify the source axes? The rotation margin of the true
sources (pyrocrl.diagnostics.rotation_margin): nats per sample that a conditionally factorial
Gaussian fit loses when two true sources are rotated. An estimator whose approximation error
(e.g. a VAE's variational gap) exceeds this margin can settle on rotated axes.

    python benchmarks/margin.py
    python benchmarks/margin.py --quick
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import benchmark_parser, mean_std, save_figure, write

from pyrocrl import simulate
from pyrocrl.diagnostics import rotation_margin

ANGLES_DEG = [5, 10, 22.5, 45]
VARIANCE_RANGES = [(0.5, 3.0), (0.1, 10.0)]


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    size = dict(num_latents=5, num_domains=40, samples_per_domain=1000)
    if args.quick:
        size = dict(num_latents=2, num_domains=5, samples_per_domain=200)

    results = {}
    for low, high in VARIANCE_RANGES:
        key = f"variance_{low}_{high}"
        results[key] = {}
        for angle in ANGLES_DEG:
            margins = [float(rotation_margin(ds.z, ds.u, angle=np.radians(angle)))
                       for ds in (simulate.nonstationary_sources(
                           **size, variance_range=(low, high), seed=seed)
                           for seed in args.seeds)]
            results[key][f"{angle}deg"] = mean_std(margins)
            print(f"variance range [{low}, {high}], {angle:>4} deg: smallest pairwise margin "
                  f"{np.mean(margins):.4f} nats/sample", flush=True)
    path = write("margin" if not args.quick else "margin_quick",
                 {"setting": {**size, "seeds": args.seeds, "angles_deg": ANGLES_DEG},
                  "margin_nats_per_sample": results}, args.out)
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for key, block in results.items():
        ax.errorbar(ANGLES_DEG, [block[f"{a}deg"]["mean"] for a in ANGLES_DEG],
                    [block[f"{a}deg"]["std"] for a in ANGLES_DEG], marker="o",
                    label=key.replace("variance_", "variance in [").replace("_", ", ") + "]")
    ax.set_xlabel("rotation of two true sources (degrees)")
    ax.set_ylabel("likelihood margin (nats / sample)")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return results


if __name__ == "__main__":
    main()
