"""Slow tier: does TemporalVAE recover the latents of a nonstationary dynamical system?

Issue 3's small "change" setting: 3 latents, lag 1, 5 domains whose transition weights and
noise scales differ, 1000 sequences of 8 frames mixed by a 2-layer leaky-ReLU MLP into 6
dimensions; held-out Pearson MCC of posterior means over every frame, nothing selected with
ground truth (the recipe is pyrocrl.experiments.fit_and_score, as in benchmarks/temporal.py).

Measured (2500 steps, random starts): TemporalVAE 0.845 / 0.818 / 0.974 on seeds 0 / 1 / 2,
IVAE on the frames with their domain labels 0.720 / 0.690 / 0.723. Both started at the linear
ICA of (x, u) (fit_and_score(..., init="linear"); IVAE with covariance="full"): TemporalVAE
0.977 / 0.971 / 0.940, IVAE 0.964 / 0.964 / 0.922. So issue 3's ">= 0.9 on each of 3 seeds"
is met with the linear start, and most of the random-start gap to IVAE was optimization: in
this setting the domains alone nearly identify the latents, the dynamics add 0.01-0.02.
"""

import numpy as np
import pytest

from pyrocrl import simulate
from pyrocrl.experiments import fit_and_score

STEPS = 2500
SEEDS = (0, 1, 2)


LINEAR_START = dict(init="linear", init_steps=1500)


@pytest.fixture(scope="module")
def scores():
    temporal, iid = [], []
    for seed in SEEDS:
        ds = simulate.nonstationary_temporal(num_latents=3, lag=1, num_domains=5,
                                             num_sequences=1000, seq_len=8, obs_dim=6,
                                             mixing_layers=2, setting="change", seed=seed)
        train, test = ds.split(0.8, seed=seed)
        temporal.append(float(fit_and_score("temporal_vae", train, test, num_steps=STEPS,
                                            seed=seed, **LINEAR_START).mcc))
        iid.append(float(fit_and_score("ivae", train, test, num_steps=STEPS, seed=seed,
                                       init="linear", model_options={"covariance": "full"}
                                       ).mcc))
    return np.array(temporal), np.array(iid)


@pytest.mark.slow
def test_temporal_vae_reaches_issue_3_target_on_every_seed(scores):
    temporal, _ = scores
    assert temporal.min() >= 0.9, temporal


@pytest.mark.slow
def test_dynamics_do_not_lose_to_domains_alone(scores):
    temporal, iid = scores
    # the same frames and domain labels without the transition prior, from the same kind of
    # start, measured 0.007-0.018 behind TemporalVAE on every seed
    assert (temporal >= iid - 0.02).all(), (temporal, iid)
    assert temporal.mean() >= iid.mean(), (temporal, iid)
