"""TemporalVAE: its Pyro program, its learned density and its input checks (fast tier)."""

import pytest
import torch
from pyro import poutine

from pyrocrl.models import TemporalVAE
from tests.models.sites import latent_and_guided_sites


@pytest.fixture
def data():
    torch.manual_seed(0)
    return torch.randn(12, 6, 5), torch.arange(12) % 4


def test_sites_shapes_and_plate_scaling(data):
    model = TemporalVAE(5, 3, lag=2, num_domains=4)
    model_trace, latent, guided = latent_and_guided_sites(model, *data)
    assert latent == guided == {"z"}
    assert model_trace.nodes["z"]["value"].shape == (12, 6, 3)
    assert model_trace.nodes["x"]["is_observed"]
    guide_trace = poutine.trace(model.guide).get_trace(*data)
    replayed = poutine.replay(model.model, trace=guide_trace)
    full = poutine.trace(replayed).get_trace(*data).log_prob_sum()
    scaled = poutine.trace(replayed).get_trace(*data, num_data=48).log_prob_sum()
    torch.testing.assert_close(scaled, 4 * full)


def test_prior_is_the_sum_of_its_conditionals(data):
    model = TemporalVAE(5, 3, lag=2, num_domains=4)
    x, u = data
    z = torch.randn(12, 6, 3)
    total = model.prior(u, 6).log_prob(z)
    initial = torch.distributions.Normal(0.0, 1.0).log_prob(z[:, :2]).sum((-1, -2))
    steps = sum(model.conditional_log_prob(z[:, t], u, z[:, t - 2:t]) for t in range(2, 6))
    torch.testing.assert_close(total, initial + steps)


def test_domains_change_the_prior_and_stationary_model_ignores_u(data):
    x, u = data
    model = TemporalVAE(5, 3, lag=1, num_domains=4)
    with torch.no_grad():
        model.transition.embedding.weight.normal_()
        model.transition.net[-1].weight.normal_(0, 0.3)
    z = torch.randn(12, 6, 3)
    assert not torch.allclose(model.prior(u, 6).log_prob(z), model.prior((u + 1) % 4, 6)
                              .log_prob(z))
    stationary = TemporalVAE(5, 3)
    torch.testing.assert_close(stationary.prior(u, 6).log_prob(z),
                               stationary.prior(None, 6).expand((12,)).log_prob(z))


def test_encode_shape_no_grad_and_prior_samples(data):
    model = TemporalVAE(5, 3, lag=1, num_domains=4, bidirectional=False)
    z = model.encode(*data)
    assert z.shape == (12, 6, 3) and not z.requires_grad
    sample = model.prior(data[1], 6).sample()
    assert sample.shape == (12, 6, 3) and torch.isfinite(sample).all()


def test_causal_encoder_does_not_look_ahead(data):
    x, u = data
    model = TemporalVAE(5, 3, num_domains=4, bidirectional=False)
    changed = x.clone()
    changed[:, 4:] += 1.0
    a, b = model.encode(x, u), model.encode(changed, u)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("x, u, match", [
    (torch.randn(4, 2, 5), torch.arange(4), r"length T=2 but must be at least lag \+ 1 = 3"),
    (torch.randn(4, 6, 5), None, r"u is required with num_domains=4"),
    (torch.randn(4, 6, 7), torch.arange(4), r"x must have shape \(N, T, obs_dim=5\)"),
    (torch.randn(4, 5), torch.arange(4), r"x must have shape \(N, T, obs_dim=5\)"),
    (torch.randn(4, 6, 5), torch.arange(5), r"u must have shape \(N,\) = \(4,\)"),
    (torch.randn(4, 6, 5), torch.tensor([0, 1, 2, 4]), r"u must lie in \[0, num_domains=4\)"),
    (torch.full((4, 6, 5), float("nan")), torch.arange(4), r"NaN/inf"),
])
def test_bad_input_is_named(x, u, match):
    model = TemporalVAE(5, 3, lag=2, num_domains=4)
    with pytest.raises(ValueError, match=match):
        model.check_data(x, u)


def test_bad_construction():
    with pytest.raises(ValueError, match="lag must be a positive int"):
        TemporalVAE(5, 3, lag=0)
    with pytest.raises(ValueError, match="num_domains must be a positive int"):
        TemporalVAE(5, 3, num_domains=0)


def test_learned_prior_plugs_into_the_sufficient_variability_diagnostic():
    from pyrocrl import diagnostics

    torch.manual_seed(0)
    z = torch.randn(20, 5, 2)
    points, context = diagnostics.lagged_points(z, lag=1)
    varied = TemporalVAE(4, 2, lag=1, num_domains=6)
    with torch.no_grad():  # domains that change the transition's coefficients
        varied.transition.embedding.weight.normal_(0, 2.0)
        varied.transition.net[-1].weight.normal_(0, 0.5)
    assert float(diagnostics.sufficient_variability(varied, points, 6, context=context)) > 0.9
    same = TemporalVAE(4, 2, lag=1, num_domains=6)
    with torch.no_grad():  # every domain embedded at the same point: no variability
        same.transition.embedding.weight.fill_(0.3)
    score = diagnostics.sufficient_variability(same, points, 6, context=context)
    assert float(score) == 0.0 and int(score.rank.max()) == 0


def test_recipes_size_models_from_the_data_and_accept_overrides():
    from pyrocrl import simulate
    from pyrocrl.experiments import build_model

    ds = simulate.nonstationary_temporal(num_latents=2, lag=2, num_sequences=12, seq_len=5,
                                         setting="change", num_domains=3, seed=0)
    model = build_model("temporal_vae", ds)
    assert (model.latent_dim, model.lag, model.num_domains, model.obs_dim) == (2, 2, 3, 2)
    model = build_model("temporal_vae", ds, latent_dim=1, lag=3)
    assert (model.latent_dim, model.lag) == (1, 3)
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("slowvae", ds)
