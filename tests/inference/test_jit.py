"""``fit_svi(jit=True)``: the traced loss trains every pyrocrl model exactly as the eager loss
does, and what a trace cannot do is refused before training."""

import numpy as np
import pyro
import pytest
import torch

from pyrocrl import simulate
from pyrocrl.inference import fit_svi
from pyrocrl.models import (
    IVAE,
    VAE,
    DeepMarkovModel,
    DiscreteConceptModel,
    FactorAnalysis,
    LatentCausalVAE,
    LinearGaussianSSM,
    SparseVAE,
    TemporalVAE,
)


def iid():
    ds = simulate.nonstationary_sources(num_latents=2, num_domains=6, samples_per_domain=50,
                                        obs_dim=4, seed=0)
    return ds.x, ds.u


def sequences():
    ds = simulate.nonstationary_temporal(num_latents=3, lag=2, num_domains=4, obs_dim=5,
                                         num_sequences=120, seq_len=6, setting="change",
                                         seed=0)
    return ds.x, ds.u


def dag():
    ds = simulate.latent_dag(3, graph="chain", interventions="perfect", samples_per_env=60,
                             obs_dim=6, seed=0)
    return ds.x, ds.u


def gaussian_sequences():
    return (simulate.linear_gaussian(2, 3, num_sequences=48, seq_len=6, seed=0).x,)


def concepts():
    return (simulate.discrete_concepts(3, "chain", num_observed=8, num_samples=300, seed=0).x,)


# (id, model factory, data factory, extra fit_svi arguments)
CASES = [
    ("VAE", lambda: VAE(4, 2), lambda: iid()[:1], {}),
    ("IVAE", lambda: IVAE(4, 2, 6), iid, {}),
    ("IVAE-full", lambda: IVAE(4, 2, 6, covariance="full"), iid, {}),
    ("IVAE-particles", lambda: IVAE(4, 2, 6), iid, {"num_particles": 3}),
    ("TemporalVAE", lambda: TemporalVAE(5, 3, lag=2, num_domains=4), sequences, {}),
    ("LatentCausalVAE", lambda: LatentCausalVAE(6, 3, 4, targets=[-1, 0, 1, 2]), dag, {}),
    ("SparseVAE", lambda: SparseVAE(6, 3, hidden_dim=8, num_layers=2), lambda: dag()[:1], {}),
    ("FactorAnalysis", lambda: FactorAnalysis(6, 3), lambda: dag()[:1], {}),
    ("LinearGaussianSSM", lambda: LinearGaussianSSM(2, 3), gaussian_sequences, {}),
    ("DiscreteConceptModel", lambda: DiscreteConceptModel(3, 8), concepts,
     {"elbo": "traceenum", "learning_rate": 0.05}),
]


def run(make_model, data, jit, **kw):
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    model = make_model()
    kw = dict(dict(num_steps=12, batch_size=32, progress=False, device="cpu", seed=1), **kw)
    return model, fit_svi(model, *data, jit=jit, **kw)


@pytest.mark.parametrize("name, make_model, make_data, extra", CASES, ids=[c[0] for c in CASES])
def test_traced_loss_trains_like_the_eager_loss(name, make_model, make_data, extra):
    data = make_data()
    eager_model, eager = run(make_model, data, False, **extra)
    traced_model, traced = run(make_model, data, True, **extra)
    # same batches, same noise, same parameters: the same losses to float rounding, step
    # after step (a trace that froze a Python number would drift from step 2 on)
    np.testing.assert_allclose(traced.losses, eager.losses, rtol=1e-4)
    for (key, a), b in zip(eager_model.state_dict().items(), traced_model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5, msg=key)
    # the module's parameters were only borrowed by the param store
    assert not any(k.startswith("_fit_svi_jit") for k in pyro.get_param_store().keys())


def test_resume_is_exact_with_jit(tmp_path):
    data, path = iid(), tmp_path / "fit.pt"
    _, full = run(lambda: IVAE(4, 2, 6), data, True, num_steps=20)
    run(lambda: IVAE(4, 2, 6), data, True, num_steps=10, checkpoint=path, checkpoint_every=10)
    _, rest = run(lambda: IVAE(4, 2, 6), data, True, num_steps=20, checkpoint=path, resume=True)
    np.testing.assert_array_equal(rest.losses, full.losses)


class Counting(IVAE):
    """Its loss holds a Python number that changes from call to call (like an annealing
    counter kept in Python): a trace freezes it."""

    calls = 0

    def model(self, x, u=None, num_data=None):
        self.calls += 1
        pyro.factor("counter", torch.tensor(1e6 * self.calls))
        return super().model(x, u, num_data)


def test_a_model_a_trace_cannot_follow_is_refused_before_training():
    pyro.clear_param_store()
    x, u = iid()
    with pytest.raises(ValueError, match="traced loss .* differs from the eager loss"):
        fit_svi(Counting(4, 2, 6), x, u, num_steps=5, progress=False, device="cpu", jit=True)
    assert len(pyro.get_param_store()) == 0  # the borrowed parameters were handed back
    # the Deep Markov Model counts its training steps in a buffer (for KL annealing)
    dmm = DeepMarkovModel(3, 2, transition_dim=8, rnn_dim=8, emission_dim=8)
    with pytest.raises(ValueError, match=r"changes its buffers \['annealing_step'\]"):
        fit_svi(dmm, *gaussian_sequences(), num_steps=5, progress=False, device="cpu", jit=True)
    assert int(dmm.annealing_step) == 0  # and the refused attempt left no trace in the model
    assert len(pyro.get_param_store()) == 0  # nor in the param store


@pytest.mark.parametrize("kwargs, match", [
    ({"elbo": "iwae", "num_particles": 2}, "elbo='iwae'"),
    ({"kl_warmup": 10}, "kl_warmup=10"),
    ({"strategy": "ddp_fork", "num_devices": 2}, "strategy='ddp_fork'"),
])
def test_what_a_trace_cannot_do_is_named(kwargs, match):
    x, u = iid()
    with pytest.raises(ValueError, match=f"jit=True cannot be used with {match}"):
        fit_svi(IVAE(4, 2, 6), x, u, num_steps=5, progress=False, jit=True, **kwargs)


def test_a_dataloader_is_refused():
    x, u = iid()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, u), batch_size=32)
    with pytest.raises(ValueError, match="jit=True cannot be used with a DataLoader"):
        fit_svi(IVAE(4, 2, 6), loader, num_steps=5, progress=False, jit=True)


@pytest.mark.gpu
def test_traced_loss_on_cuda_matches_the_eager_loss():
    data = sequences()
    _, eager = run(lambda: TemporalVAE(5, 3, lag=2, num_domains=4), data, False, device="cuda")
    _, traced = run(lambda: TemporalVAE(5, 3, lag=2, num_domains=4), data, True, device="cuda")
    assert traced.device.startswith("cuda")
    np.testing.assert_allclose(traced.losses, eager.losses, rtol=1e-3)
