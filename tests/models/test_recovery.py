"""Slow tier: do the models recover the true latents? Small scale so CI can afford it.

3 sources, 20 domains x 500 samples; scores are held-out Pearson MCC of posterior means and
nothing is selected with ground truth. The same recipe (pyrocrl.experiments.fit_and_score)
produces the benchmark numbers in benchmarks/results/ivae.json.

At full benchmark size (n = 5, 40 domains, benchmarks/results/ivae.json) the plain IVAE
(mean-field, random start) reaches 0.840 +- 0.066 with linear mixing (VAE 0.764) and 0.580 +-
0.033 with the 3-layer leaky-ReLU mixing (VAE 0.599); the linear-start recipe
(covariance="full" + initialize_linear) reaches 0.985 +- 0.006 and 0.740 +- 0.063. At this
smaller size (3 sources) the linear start recovers the sources through the 3-layer mixing.
"""

import numpy as np
import pytest

from pyrocrl import simulate
from pyrocrl.experiments import fit_and_score

STEPS = 8000


def split(seed, mixing_layers):
    ds = simulate.nonstationary_sources(num_latents=3, num_domains=20, samples_per_domain=500,
                                        mixing_layers=mixing_layers, seed=seed)
    return ds.split(0.8, seed=seed)


@pytest.mark.slow
def test_ivae_pins_the_axes_that_the_vae_leaves_free_linear_mixing():
    ivae_scores, vae_scores = [], []
    for seed in (0, 1, 2):
        train, test = split(seed, mixing_layers=1)
        ivae = fit_and_score("ivae", train, test, num_steps=STEPS, seed=seed)
        vae = fit_and_score("vae", train, test, num_steps=STEPS, seed=seed)
        # both recover the latent space up to an affine map (linear identifiability) ...
        assert float(ivae.affine_r2) >= 0.99 and float(vae.affine_r2) >= 0.99, seed
        ivae_scores.append(float(ivae.mcc))
        vae_scores.append(float(vae.mcc))
    # ... but only IVAE's domain-dependent prior picks out the source axes
    assert np.median(ivae_scores) >= 0.9, ivae_scores
    assert np.mean(ivae_scores) - np.mean(vae_scores) >= 0.05, (ivae_scores, vae_scores)


LINEAR_START = dict(init="linear", model_options={"covariance": "full"})


@pytest.mark.slow
def test_linear_start_recovers_sources_through_nonlinear_mixing():
    """3-layer leaky-ReLU mixing at this small size: measured 0.945 / 0.939 / 0.906 (affine R²
    0.90 / 0.91 / 0.88); the plain recipe (mean-field, random start) 0.659 / 0.787 / 0.800.
    At B1's size the linear start reaches only 0.740 (benchmarks/ivae.py)."""
    scores = []
    for seed in (0, 1, 2):
        train, test = split(seed, mixing_layers=3)
        scores.append(float(fit_and_score("ivae", train, test, num_steps=STEPS, seed=seed,
                                          **LINEAR_START).mcc))
    assert min(scores) >= 0.88, scores
    assert np.mean(scores) >= 0.92, scores
