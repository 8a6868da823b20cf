"""SparseVAE (Moran et al., 2022): the Pyro contract, the Lipschitz-bounded selection, the
spike-and-slab lasso, and recovery of factors and support from anchor features."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

from pyrocrl.diagnostics import mcc
from pyrocrl.distributions import SpikeAndSlabLasso
from pyrocrl.inference import fit_svi
from pyrocrl.models import VAE, IdentifiabilityWarning, SparseVAE
from tests.models.sites import latent_and_guided_sites


@pytest.fixture
def x():
    return torch.randn(64, 6)


def test_sites_plate_and_guide_coverage(x):
    model = SparseVAE(6, 3)
    model_trace, latent, guided = latent_and_guided_sites(model, x)
    assert latent == guided == {"z"}
    assert model_trace.nodes["x"]["is_observed"]
    assert model_trace.nodes["z"]["value"].shape == (64, 3)
    for name in ("z", "x", "sparsity_prior"):
        assert [f.name for f in model_trace.nodes[name]["cond_indep_stack"]] == ["data"]


def test_minibatch_scaling_and_penalty_per_data_point(x):
    model = SparseVAE(6, 3, sparsity_weight=0.3)
    guide_trace = poutine.trace(model.guide).get_trace(x)
    replayed = poutine.replay(model.model, trace=guide_trace)
    full = poutine.trace(replayed).get_trace(x)
    scaled = poutine.trace(replayed).get_trace(x, num_data=640)
    full.compute_log_prob()
    scaled.compute_log_prob()
    torch.testing.assert_close(scaled.log_prob_sum(), 10 * full.log_prob_sum())
    # the prior of the globals enters rho * N times in all
    penalty = scaled.nodes["sparsity_prior"]["log_prob_sum"]
    torch.testing.assert_close(penalty, 0.3 * 640 * model.log_prior().detach(),
                               rtol=1e-5, atol=1e-3)


def test_log_prior_against_closed_form():
    model = SparseVAE(6, 3, spike_rate=20.0, slab_rate=2.0, inclusion_a=2.0, inclusion_b=5.0)
    w = model.selection_weights.detach().double()
    eta = model.inclusion.detach().double()
    mixture = eta * 2.0 * torch.exp(-2.0 * w) + (1 - eta) * 20.0 * torch.exp(-20.0 * w)
    beta = ((2.0 - 1) * torch.log(eta) + (5.0 - 1) * torch.log1p(-eta)
            - (math.lgamma(2.0) + math.lgamma(5.0) - math.lgamma(7.0)))
    expected = torch.log(mixture).sum() + beta.sum()
    assert float(model.log_prior().detach()) == pytest.approx(float(expected), rel=1e-5)
    slab = eta * 2.0 * torch.exp(-2.0 * w)
    np.testing.assert_allclose(model.inclusion_probability(), (slab / mixture).numpy(),
                               rtol=1e-5)


def test_spike_and_slab_lasso_density_and_sampling():
    prior = SpikeAndSlabLasso(torch.tensor(0.3), 10.0, 1.0)
    grid = torch.linspace(0, 40, 400_001, dtype=torch.float64)
    density = SpikeAndSlabLasso(torch.tensor(0.3, dtype=torch.float64), 10.0, 1.0,
                                validate_args=True).log_prob(grid).exp()
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-4)
    torch.manual_seed(0)
    draws = prior.sample((200_000,))
    assert draws.min() >= 0
    assert float(draws.mean()) == pytest.approx(0.3 / 1.0 + 0.7 / 10.0, rel=0.02)
    assert prior.expand((4, 2)).sample().shape == (4, 2)
    with pytest.raises(ValueError):
        SpikeAndSlabLasso(torch.tensor(0.3), 10.0, 1.0, validate_args=True).log_prob(
            torch.tensor(-1.0))


def test_selection_bounds_each_features_dependence_on_each_factor():
    """|d mean_j / d z_k| <= w_jk for every sample: a small weight cannot be amplified."""
    model = SparseVAE(6, 3)
    with torch.no_grad():
        model.selection_weights = torch.rand(6, 3) * torch.tensor([1.0, 0.0, 2.0])
        for layer in model.decoder:  # large raw weights: the normalization must bound them
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(50.0)
    z = torch.randn(200, 3)
    jacobian = torch.func.vmap(torch.func.jacrev(lambda v: model.decode(v[None])[0]))(z)
    assert jacobian.shape == (200, 6, 3)
    w = torch.as_tensor(model.selection())
    assert torch.all(jacobian.abs() <= w + 1e-5)
    assert torch.all(jacobian[:, :, 1] == 0)  # w_{j1} = 0: no feature depends on z_1


def test_encode_selection_and_shapes(x):
    model = SparseVAE(6, 3)
    z = model.encode(x)
    assert z.shape == (64, 3) and not z.requires_grad
    torch.testing.assert_close(z, model.posterior(x)[0].detach())
    assert model.decode(z).shape == (64, 6)
    assert model.decode(torch.randn(5, 64, 3)).shape == (5, 64, 6)
    selection = model.selection()
    assert isinstance(selection, np.ndarray) and selection.shape == (6, 3)
    assert np.all(selection > 0)
    inclusion = model.inclusion_probability()
    assert inclusion.shape == (6, 3) and np.all((inclusion >= 0) & (inclusion <= 1))


def test_parameters_stay_in_the_module(x):
    a, b = SparseVAE(6, 3), SparseVAE(6, 3)
    with torch.no_grad():
        a.selection_weights_unconstrained.fill_(3.0)
    poutine.trace(b.model).get_trace(x)
    assert not np.allclose(b.selection(), a.selection())
    assert len(pyro.get_param_store()) == 0


def test_fits_with_minibatches_and_vectorized_particles(x):
    model = SparseVAE(6, 3, hidden_dim=8, num_layers=2)
    result = fit_svi(model, x, num_steps=3, batch_size=16, num_particles=2, progress=False,
                     device="cpu")
    assert np.all(np.isfinite(result.losses))


@pytest.mark.parametrize("kwargs, match", [
    (dict(obs_dim=2, latent_dim=3), r"obs_dim=2 < latent_dim=3"),
    (dict(obs_dim=0, latent_dim=3), "obs_dim must be a positive int"),
    (dict(spike_rate=-1.0), r"spike_rate must be a positive number, got -1\.0"),
    (dict(slab_rate=0.0), "slab_rate must be a positive number"),
    (dict(spike_rate=1.0, slab_rate=2.0), "spike_rate .* must exceed slab_rate"),
    (dict(inclusion_b=-3.0), "inclusion_b must be a positive number"),
    (dict(sparsity_weight=float("nan")), "sparsity_weight must be a positive number"),
    (dict(init_selection=True), "init_selection must be a positive number"),
    (dict(init_obs_scale=-0.1), "init_obs_scale must be positive"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = dict(obs_dim=6, latent_dim=3) | kwargs
    with pytest.raises(ValueError, match=match):
        SparseVAE(**args)


def test_too_few_features_for_two_anchors_per_factor_warns():
    with pytest.warns(IdentifiabilityWarning, match="two anchor features per factor"):
        SparseVAE(5, 3)


@pytest.mark.parametrize("bad, match", [
    (torch.randn(64, 5), r"x must have shape \(N, obs_dim=6\)"),
    (torch.full((64, 6), float("nan")), "NaN"),
    (torch.zeros(64, 6, dtype=torch.long), "floating-point"),
])
def test_bad_x(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SparseVAE(6, 3).encode(bad)


# ---- recovery: anchor features identify the factors -----------------------------------------
#: One recipe for both models, chosen on seeds 0-2 from the SparseVAE's training loss: at
#: 3000 steps it still falls on seed 2 (support F1 0.77 there), learning rates of 5e-3 and
#: 1e-2 land some seeds in local optima, decaying the rate to 0.1x stalls it.
#: ``init_obs_scale=0.1`` (the data's noise level after standardizing) instead of the default
#: 0.02, for both models alike: from 0.02 the huge gradients of the first steps inflate
#: Adam's second moments and the noise scale creeps up for thousands of steps.
RECOVERY_FIT = dict(num_steps=4000, batch_size=256, learning_rate=3e-3, progress=False,
                    device="cpu")


def support_f1(estimated: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-factor F1 of an estimated ``(D, K)`` support against the true one."""
    hits = (estimated & true).sum(0)
    return 2 * hits / np.maximum(estimated.sum(0) + true.sum(0), 1)


def fit_and_score(seed: int):
    """Fit SparseVAE and VAE on the same standardized sparse-decoder data (K = 3, D = 12,
    two anchors per factor, masked-MLP decoder, N = 3000); score held-out MCC and the
    selected support after matching factors by MCC's permutation."""
    from pyrocrl.simulate.factors import factor_model

    data = factor_model(num_factors=3, obs_dim=12, anchors_per_factor=2, noise=0.1,
                        seed=seed, decoder="masked_mlp", num_samples=3000)
    train, test = data.split(0.8, seed=0)
    mean, std = train.x.mean(0), train.x.std(0)
    x_train, x_test = (train.x - mean) / std, (test.x - mean) / std
    scores, fits = {}, {}
    for name, cls in [("sparse", SparseVAE), ("vae", VAE)]:
        pyro.set_rng_seed(seed)
        model = cls(12, 3, init_obs_scale=0.1)
        fits[name] = fit_svi(model, x_train, seed=seed, **RECOVERY_FIT)
        scores[name] = mcc(test.z, model.encode(x_test))
        if name == "sparse":
            selected = model.inclusion_probability()[:, scores[name].permutation] > 0.5
    f1 = support_f1(selected, data.info["mask"])
    return scores, f1, fits


# Seeds 1 and 2 pass too (MCC 0.988 / 0.983, F1 1.0; ~60 s each); CI runs seed 0 to stay
# within its time budget (add them to the list to check all three).
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_anchor_features_identify_factors_and_support(seed):
    scores, f1, _ = fit_and_score(seed)
    sparse, vae = float(scores["sparse"]), float(scores["vae"])
    # measured (seeds 0, 1, 2): SparseVAE 0.989, 0.988, 0.983; VAE 0.905, 0.843, 0.876
    assert sparse >= 0.95, scores["sparse"].per_dim
    assert sparse >= vae + 0.04, (sparse, vae)
    # measured: F1 = 1 for every factor and seed (selected: inclusion probability > 0.5)
    assert np.all(f1 >= 0.8), f1
