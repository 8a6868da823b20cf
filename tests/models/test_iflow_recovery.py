"""Slow tier: IFlow with its starts side by side recovers the sources through a deep mixing.

The setting of tests/models/test_recovery.py's nonlinear test (3 sources, 20 domains x 500,
3-layer leaky-ReLU mixing, 80/20 split; held-out Pearson MCC, nothing chosen with ground
truth): IFlow(num_starts=32), 8000 steps on 90 % of train, the start with the best
likelihood on the other 10 % kept (fit_and_score; B1's recipe, benchmarks/ivae.py
--variants iflow_starts, at a smaller size).

Measured (one thread, 2026-12-07): MCC 1.000 / 1.000 / 1.000 on seeds 0 / 1 / 2 (affine R²
1.000), 107-110 s per fit; the kept start's held-out NLL 1.81 / 1.38 / -0.65 with the next
starts at 2.26 / 1.39 / -0.64 — on seed 0 one start of 32 found the sources. With 16 starts
of 5000 steps: 0.947 / 0.953 / 1.000. IVAE from the linear start reaches 0.945 / 0.939 /
0.906 here (test_recovery.py). The thresholds leave room for a machine whose arithmetic
sends seed 0's one good start elsewhere (a start short of the truth's likelihood, as kept
by the 16 x 5000 run: 0.947).
"""

import numpy as np
import pytest

from pyrocrl import simulate
from pyrocrl.experiments import fit_and_score


@pytest.mark.slow
def test_iflow_starts_side_by_side_recover_sources_through_a_3_layer_mixing():
    scores = []
    for seed in (0, 1, 2):
        ds = simulate.nonstationary_sources(num_latents=3, num_domains=20,
                                            samples_per_domain=500, mixing_layers=3, seed=seed)
        train, test = ds.split(0.8, seed=seed)
        run = fit_and_score("iflow", train, test, num_steps=8000, seed=seed,
                            model_options={"num_starts": 32})
        scores.append(float(run.mcc))
    assert min(scores) >= 0.9, scores
    assert np.mean(scores) >= 0.95, scores
