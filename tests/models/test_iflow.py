"""IFlow: the exact likelihood of an invertible leaky-ReLU network with the iVAE prior."""

import copy
import warnings

import arviz as az
import numpy as np
import pyro
import pytest
import torch

from pyrocrl import diagnostics, simulate
from pyrocrl.experiments import fit_and_score
from pyrocrl.inference import NonFiniteLossError, fit_restarts, fit_svi, to_inference_data
from pyrocrl.models import IdentifiabilityWarning, IFlow
from pyrocrl.nn.flows import InvertibleLinear


def at_the_truth(ds, smoothness=1e-6):
    """An IFlow whose parameters are the simulator's: inverse weights of the true mixing,
    the true per-domain means and scales."""
    g, process = ds.info["mixing"], ds.info["process"]
    n = ds.z.shape[1]
    model = IFlow(n, n, process.num_domains, num_layers=g.num_layers,
                  negative_slope=g.negative_slope, smoothness=smoothness).double()
    with torch.no_grad():
        linear = [layer for layer in model.layers if isinstance(layer, InvertibleLinear)]
        for layer, w in zip(linear, g.weights):
            layer.weight.copy_(torch.linalg.inv(w.double()))
        model.prior_loc.copy_(process.loc.double())
        model.prior_scale = process.scale.double()
    return model


@pytest.fixture(scope="module")
def data():
    return simulate.nonstationary_sources(num_latents=3, num_domains=8, samples_per_domain=200,
                                          mixing_layers=3, seed=0)


def test_at_the_true_parameters_the_likelihood_is_the_simulator_s_exact_density(data):
    model = at_the_truth(data)
    x, u = data.x.double(), data.u
    ours = model.log_likelihood(x, u).detach()
    exact = simulate.exact_log_prob(data).double()  # autograd Jacobian of the true mixing
    # equal except within ~1e-6 of a kink, where the smoothed activation differs
    assert (ours - exact).abs().median() < 1e-4
    assert np.quantile((ours - exact).abs().numpy(), 0.99) < 1e-3
    z = model.encode(x, u)
    torch.testing.assert_close(z, data.z.double(), atol=1e-5, rtol=1e-5)


def test_the_svi_loss_is_the_exact_negative_log_likelihood(data):
    torch.manual_seed(0)
    model = IFlow(3, 3, 8)
    result = fit_svi(model, data.x, data.u, num_steps=1, batch_size=None, learning_rate=1e-12,
                     progress=False)
    nll = -model.log_likelihood(data.x, data.u).mean().item()
    assert result.losses[0] == pytest.approx(nll, rel=1e-4)


@pytest.mark.parametrize("smoothness, stays", [(0.01, True), (1e-6, False)])
def test_started_at_the_truth_a_smoothed_flow_stays_and_a_sharp_one_walks_off(data, smoothness,
                                                                              stays):
    """Why the activations are smoothed: with exact kinks the log-determinant is piecewise
    constant in the parameters, its gradient misses points crossing a kink, and maximum
    likelihood leaves the truth (benchmarks/NOTES.md, B1)."""
    model = at_the_truth(data, smoothness).float()
    start = -model.log_likelihood(data.x, data.u).mean().item()
    fit_svi(model, data.x, data.u, num_steps=600, batch_size=256, learning_rate=1e-2,
            learning_rate_decay=0.1, progress=False)
    end = -model.log_likelihood(data.x, data.u).mean().item()
    mcc = float(diagnostics.mcc(data.z, model.encode(data.x, data.u)))
    if stays:
        assert end < start + 0.1 and mcc > 0.98
    else:
        assert end > start + 0.5


def test_fitting_raises_the_likelihood_and_finds_the_sources_of_a_linear_mixing():
    ds = simulate.nonstationary_sources(num_latents=3, num_domains=10, samples_per_domain=300,
                                        mixing_layers=1, seed=1)
    train, test = ds.split(0.8, seed=1)
    torch.manual_seed(1)
    model = IFlow(3, 3, 10, num_layers=1)
    before = model.log_likelihood(test.x, test.u).mean().item()
    fit_svi(model, train.x, train.u, num_steps=1500, batch_size=512, learning_rate=1e-2,
            progress=False)
    after = model.log_likelihood(test.x, test.u).mean().item()
    # a linear mixing is inside the 1-layer model: the fit reaches the truth's exact held-out
    # log-likelihood (measured -3.426 vs -3.409; started at -4.309)
    assert after > before and after > simulate.exact_log_prob(test).mean().item() - 0.05
    assert float(diagnostics.mcc(test.z, model.encode(test.x, test.u))) > 0.95


def test_inference_data_has_the_point_mass_posterior_and_exact_log_likelihood(data):
    model = at_the_truth(data, smoothness=1e-3).float()
    x, u = data.x[:40], data.u[:40]
    idata = to_inference_data(model, x, u, num_samples=3)
    z = idata.posterior["z"].values  # (chain, draw, obs, latent)
    assert z.shape == (1, 3, 40, 3)
    np.testing.assert_allclose(z[0, 1], model.encode(x, u).numpy(), atol=1e-6)
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0, 0],
                               model.log_likelihood(x, u).detach().numpy(), rtol=1e-5, atol=1e-5)
    # posterior predictive: new x from the fitted flow (Newton inverse of the activations)
    assert idata.posterior_predictive["x"].values.shape == (1, 3, 40, 3)
    assert np.isfinite(idata.posterior_predictive["x"].values).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(az.loo(idata).elpd_loo)


def test_bad_input_names_the_argument(data):
    with pytest.raises(ValueError, match="obs_dim must equal latent_dim"):
        IFlow(4, 3, 8)
    with pytest.raises(ValueError, match="num_domains"):
        IFlow(3, 3, 0)
    model = IFlow(3, 3, 8)
    with pytest.raises(ValueError, match="u is required"):
        model.encode(data.x)
    with pytest.raises(ValueError, match=r"u must take values in \[0, num_domains=8\)"):
        model.encode(data.x, data.u + 1)
    with pytest.raises(ValueError, match="num_samples"):
        model.sample_posterior(data.x, data.u, num_samples=0)
    with pytest.warns(IdentifiabilityWarning, match="IFlow: 4 domains"):
        IFlow(3, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        IFlow(3, 3, 4, learn_prior_mean=False)  # n + 1 suffice for a variance-only prior


def test_fit_restarts_keeps_the_restart_with_the_best_held_out_loss(data):
    train, val = data.split(0.8, seed=0)
    model, result = fit_restarts(lambda: IFlow(3, 3, 8), train.x, train.u,
                                 validation=(val.x, val.u), restarts=3, num_steps=40,
                                 batch_size=256, learning_rate=1e-2, log_every=20,
                                 progress=False)
    scores = result.metrics["restart_validation_loss"]
    assert len(scores) == 3 and len(set(scores)) == 3  # the starts differ
    chosen = result.metrics["chosen_restart"][0]
    assert scores[chosen] == min(scores)
    # the returned model holds the chosen restart's best parameters
    held_out = -model.log_likelihood(val.x, val.u).mean().item()
    assert held_out == pytest.approx(scores[chosen], rel=1e-4)


class _DivergingIFlow(IFlow):
    """An IFlow whose loss turns NaN at its 6th step: a restart that diverges mid-run."""

    calls = 0

    def model(self, *args, **kwargs):
        super().model(*args, **kwargs)
        self.calls += 1
        if self.calls > 5:
            pyro.factor("diverged", torch.tensor(float("nan")))


def test_fit_restarts_drops_a_diverged_restart_and_keeps_going(data):
    train, val = data.split(0.8, seed=0)

    def build():  # restart 1 (torch seeded with 0 + 1) diverges
        return _DivergingIFlow(3, 3, 8) if torch.initial_seed() == 1 else IFlow(3, 3, 8)

    options = dict(validation=(val.x, val.u), num_steps=20, batch_size=256,
                   learning_rate=1e-2, log_every=10, progress=False)
    with pytest.warns(RuntimeWarning, match=r"dropped restart 1 \(seed 1\): .*loss is nan"):
        model, result = fit_restarts(build, train.x, train.u, restarts=3, **options)
    scores = result.metrics["restart_validation_loss"]
    assert np.isnan(scores[1]) and np.isfinite(scores[0]) and np.isfinite(scores[2])
    assert result.metrics["chosen_restart"][0] == int(np.nanargmin(scores))
    assert type(model) is IFlow
    assert np.isfinite(model.log_likelihood(val.x, val.u).mean().item())
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError,
                                                     match="all 2 restarts diverged"):
        fit_restarts(lambda: _DivergingIFlow(3, 3, 8), train.x, train.u, restarts=2,
                     **options)


def test_fit_restarts_bad_input(data):
    with pytest.raises(ValueError, match="restarts"):
        fit_restarts(lambda: IFlow(3, 3, 8), data.x, data.u, validation=(data.x, data.u),
                     restarts=0)
    with pytest.raises(ValueError, match="validation"):
        fit_restarts(lambda: IFlow(3, 3, 8), data.x, data.u, validation=None)
    with pytest.raises(TypeError, match="build_model"):
        fit_restarts(IFlow(3, 3, 8), data.x, data.u, validation=(data.x, data.u))


# ------------------------------------------------------------------------------------------
# starts side by side (num_starts)


def single_starts(population):
    """The population's starts as K separate one-start IFlows with copied parameters."""
    singles = []
    for k in range(population.num_starts):
        single = IFlow(3, 3, 8)
        with torch.no_grad():
            for mine, theirs in zip(single.parameters(), population.parameters()):
                mine.copy_(theirs[k])
        singles.append(single)
    return singles


def test_starts_side_by_side_train_exactly_as_separate_models(data):
    torch.manual_seed(0)
    population = IFlow(3, 3, 8, num_starts=3)
    singles = single_starts(population)
    options = dict(num_steps=25, batch_size=256, learning_rate=1e-2, seed=4, progress=False)
    fit_svi(population, data.x, data.u, **options)
    losses = [fit_svi(single, data.x, data.u, **options).losses for single in singles]
    for k, single in enumerate(singles):
        for mine, theirs in zip(single.parameters(), population.parameters()):
            torch.testing.assert_close(theirs[k], mine, atol=2e-5, rtol=2e-5)
    # the population's loss is the sum of its starts' losses (each a mean over points)
    population_loss = fit_svi(population, data.x, data.u, **{**options, "num_steps": 1,
                                                             "batch_size": None,
                                                             "learning_rate": 1e-12}).losses[0]
    separate = sum(-s.log_likelihood(data.x, data.u).mean().item() for s in singles)
    assert population_loss == pytest.approx(separate, rel=1e-4)
    assert all(len(run) == 25 for run in losses)


def test_select_start_keeps_the_best_held_out_start_and_becomes_a_single_model(data):
    torch.manual_seed(1)
    population = IFlow(3, 3, 8, num_starts=4)
    fit_svi(population, data.x, data.u, num_steps=40, batch_size=256, learning_rate=1e-2,
            progress=False)
    x, u = data.x[:300], data.u[:300]
    per_start = population.log_likelihood(x, u).detach()
    assert per_start.shape == (4, 300)
    with pytest.raises(RuntimeError, match="select_start"):
        population.encode(x, u)
    inverse = population.inverse(x).detach()
    assert inverse.shape == (4, 300, 3)
    scores = population.select_start(x, u)
    torch.testing.assert_close(scores, per_start.mean(-1))
    keep = int(scores.argmax())
    assert population.num_starts == 1
    torch.testing.assert_close(population.log_likelihood(x, u).detach(), per_start[keep])
    torch.testing.assert_close(population.encode(x, u), inverse[keep])
    assert population.prior_loc.shape == (8, 3)
    assert to_inference_data(population, x, u, num_samples=2).posterior["z"].shape[:2] == (1, 2)


class _StartDiverges(IFlow):
    """An IFlow whose start ``start`` turns NaN at its ``at_call``-th model call (fit_svi's
    first call collects parameters; its first step is the second call)."""

    def __init__(self, *args, at_call, start, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.at_call, self.start = 0, at_call, start

    def model(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at_call:
            with torch.no_grad():
                self.prior_scale_unconstrained[self.start] = float("nan")
        super().model(*args, **kwargs)


@pytest.mark.parametrize("at_step", [0, 6])  # step 0: under Pyro's argument checks
def test_a_diverged_start_is_dropped_and_the_others_train_on_unchanged(data, at_step):
    options = dict(num_steps=20, batch_size=256, learning_rate=1e-2, seed=4, progress=False)
    torch.manual_seed(2)
    reference = IFlow(3, 3, 8, num_starts=3)
    population = _StartDiverges(3, 3, 8, num_starts=3, at_call=at_step + 2, start=1)
    population.load_state_dict(reference.state_dict())
    fit_svi(reference, data.x, data.u, **options)
    dropped = rf"_StartDiverges dropped start\(s\) \[1\]: .* step {at_step} "
    with pytest.warns(RuntimeWarning, match=dropped):
        result = fit_svi(population, data.x, data.u, **options)
    assert population.dropped_starts == [1]
    assert population.alive.tolist() == [True, False, True]
    assert np.isfinite(result.losses).all() and len(result.losses) == 20
    for mine, theirs in zip(population.parameters(), reference.parameters()):
        for k in (0, 2):  # the same minibatches and gradients: bit for bit
            assert torch.equal(mine[k], theirs[k])
    # the dropped start is never the kept one
    scores = population.select_start(data.x, data.u)
    assert torch.isnan(scores[1]) and torch.isfinite(scores[[0, 2]]).all()
    assert population.num_starts == 1 and population.alive.tolist() == [True]
    assert population.dropped_starts == []


def test_when_every_start_diverges_fit_svi_stops_and_keeps_the_model(data):
    torch.manual_seed(3)
    population = IFlow(3, 3, 8, num_starts=2)
    fit_svi(population, data.x, data.u, num_steps=3, batch_size=256, progress=False)
    with torch.no_grad():
        population.layers[0].weight.mul_(1e30)  # every start's likelihood overflows
    before = copy.deepcopy(population.state_dict())
    with pytest.raises(NonFiniteLossError, match="at step 0"):
        fit_svi(population, data.x, data.u, num_steps=5, batch_size=256, progress=False)
    assert population.alive.all()
    for key, value in population.state_dict().items():
        assert torch.equal(value, before[key])
    # one start has nothing to drop: the error of old
    single = _StartDiverges(3, 3, 8, at_call=3, start=0)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 1"):
        fit_svi(single, data.x, data.u, num_steps=4, progress=False)


def test_a_state_dict_from_before_alive_loads(data):
    population = IFlow(3, 3, 8, num_starts=2)
    state = population.state_dict()
    del state["alive"]
    fresh = IFlow(3, 3, 8, num_starts=2)
    fresh.load_state_dict(state)  # strict
    assert fresh.alive.tolist() == [True, True]


def test_num_starts_bad_input(data):
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_starts"):
            IFlow(3, 3, 8, num_starts=bad)


def test_fit_and_score_trains_starts_side_by_side_and_keeps_the_held_out_best(data):
    train, test = data.split(0.8, seed=0)
    run = fit_and_score("iflow", train, test, num_steps=30, seed=0,
                        model_options={"num_starts": 3})
    scores = run.fit.metrics["start_validation_loss"]
    assert len(scores) == 3 and run.fit.metrics["chosen_start"] == [int(np.argmin(scores))]
    assert run.fit.metrics["dropped_starts"] == []
    assert run.model.num_starts == 1 and run.z_est.shape == test.z.shape
    assert run.summary()["chosen_start"] == run.fit.metrics["chosen_start"]
    # the held-out 10 % of train that chose the start: its loss is the kept model's
    _, held_out = train.split(0.9, seed=0)
    kept = -run.model.log_likelihood(held_out.x, held_out.u).mean().item()
    assert kept == pytest.approx(min(scores), rel=1e-5)
    for bad in (dict(restarts=2), dict(init="linear"), dict(validation=test)):
        with pytest.raises(ValueError, match="num_starts"):
            fit_and_score("iflow", train, test, num_steps=2, model_options={"num_starts": 2},
                          **bad)
