import numpy as np
import pytest
import torch

from pyrocrl import diagnostics, simulate
from pyrocrl.inference import initialize_linear, linear_ica
from pyrocrl.models import IVAE


@pytest.fixture(scope="module")
def linear_data():
    ds = simulate.nonstationary_sources(num_latents=4, num_domains=12, samples_per_domain=400,
                                        obs_dim=6, mixing_layers=1, seed=3)
    return ds.split(0.8, seed=0)


def test_linear_ica_recovers_nonstationary_sources_on_held_out_data(linear_data):
    train, test = linear_data
    ica = linear_ica(train.x, train.u, latent_dim=4)
    assert ica.unmixing.shape == (4, 6) and ica.mean.shape == (6,)
    s = ica.transform(test.x)
    assert float(diagnostics.mcc(test.z, s)) >= 0.99
    # independent check: unmixing @ (true linear mixing) is a scaled permutation
    mixing = train.info["mixing"].weights[0]  # (D, n)
    product = (ica.unmixing @ mixing).abs()
    assert torch.all(product.max(1).values > 10 * (product.sum(1) - product.max(1).values))
    torch.testing.assert_close(ica.transform(train.x).std(0), torch.ones(4), atol=0.02,
                               rtol=0)


def test_linear_ica_fails_without_domain_information(linear_data):
    train, test = linear_data
    shuffled = train.u[torch.randperm(len(train.u), generator=torch.Generator().manual_seed(0))]
    s = linear_ica(train.x, shuffled, latent_dim=4).transform(test.x)
    assert float(diagnostics.mcc(test.z, s)) < 0.9  # a rotation the domains no longer pin
    assert float(diagnostics.affine_r2(test.z, s)) > 0.99  # but still the right subspace


def test_linear_ica_pools_the_frames_of_sequences(linear_data):
    train, _ = linear_data
    x = train.x[:2400].reshape(600, 4, 6)
    u = train.u[:2400].reshape(600, 4)[:, 0]
    with pytest.raises(ValueError, match="u must be an integer tensor of shape \\(600,\\)"):
        linear_ica(x, train.u[:2400], latent_dim=4)
    assert linear_ica(x, u, latent_dim=4).unmixing.shape == (4, 6)
    with pytest.raises(ValueError, match="x spans fewer than latent_dim=6"):
        linear_ica(x, u)


@pytest.mark.parametrize("kwargs, match", [
    (dict(u=None), "u \\(the domain of each row of x"),
    (dict(u="float"), "u must be an integer tensor"),
    (dict(u="one"), "at least 2 values"),
    (dict(latent_dim=7), "latent_dim must be an int in \\[1, D=6\\]"),
    (dict(x="1d"), "x must be a float tensor"),
])
def test_linear_ica_bad_input(linear_data, kwargs, match):
    train, _ = linear_data
    x, u = train.x, train.u
    if kwargs.get("x") == "1d":
        x = x[:, 0]
    if "u" in kwargs:
        u = {None: None, "float": u.float(), "one": torch.zeros_like(u)}[kwargs["u"]]
    with pytest.raises(ValueError, match=match):
        linear_ica(x, u, latent_dim=kwargs.get("latent_dim", 4))


def test_initialize_linear_starts_the_encoder_at_the_linear_sources(linear_data):
    train, test = linear_data
    model = IVAE(6, 4, 12)
    before = float(diagnostics.mcc(test.z, model.encode(test.x, test.u)))
    result = initialize_linear(model, train.x, train.u, num_steps=600, seed=0)
    after = float(diagnostics.mcc(test.z, model.encode(test.x, test.u)))
    assert after >= 0.97 and after > before + 0.1, (before, after)
    assert result.losses[-1] < 0.05 * result.losses[0]
    assert result.metrics["ica_nll"]
    assert model.training  # the model's mode is left as it was


def test_initialize_linear_needs_an_encoder_and_decoder(linear_data):
    train, _ = linear_data
    with pytest.raises(TypeError, match="must have"):
        initialize_linear(torch.nn.Linear(6, 4), train.x, train.u)
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        initialize_linear(IVAE(6, 4, 12), train.x, train.u, num_steps=0)


def test_initialize_at_checks_the_targets_and_works_without_domains(linear_data):
    from pyrocrl.inference import initialize_at
    from pyrocrl.models import VAE

    train, _ = linear_data
    with pytest.raises(ValueError, match=r"z must have shape \(3840, 4\)"):
        initialize_at(IVAE(6, 4, 12), train.x, train.u, train.z[:, :3])
    model = VAE(6, 4)
    result = initialize_at(model, train.x, None, train.z, num_steps=300)
    assert result.losses[-1] < 0.2 * result.losses[0]
    assert set(result.metrics) >= {"encoder_mse", "decoder_mse"}


def test_fit_and_score_linear_start_runs_and_names_a_bad_init(linear_data):
    from pyrocrl.experiments import fit_and_score

    train, test = linear_data
    run = fit_and_score("ivae", train, test, num_steps=50, init="linear", init_steps=300,
                        model_options={"covariance": "full"})
    assert float(run.mcc) >= 0.9  # 300 regression steps onto the linear ICA, 50 SVI steps
    with pytest.raises(ValueError, match=r"init must be one of \('random', 'linear', "
                                         r"'contrastive'\), got 'pca'"):
        fit_and_score("ivae", train, test, num_steps=5, init="pca")


def test_fit_and_score_passes_a_validation_split_as_the_model_sees_it():
    from pyrocrl.experiments import fit_and_score

    ds = simulate.nonstationary_temporal(num_latents=2, lag=1, num_domains=4, obs_dim=3,
                                         num_sequences=60, seq_len=5, setting="change", seed=0)
    train, rest = ds.split(0.6, seed=0)
    val, test = rest.split(0.5, seed=0)
    for name in ("ivae", "temporal_vae"):  # frames for the i.i.d. model, sequences otherwise
        run = fit_and_score(name, train, test, num_steps=20, validation=val, log_every=10)
        assert [step for step, _ in run.fit.validation_losses] == [10, 20]
        assert np.isfinite([loss for _, loss in run.fit.validation_losses]).all()


def _by_target(z_true, z_est):
    """Mean |corr| of latent j with estimate j: the known targets fix the labels."""
    return float(np.abs(np.diag(diagnostics.mcc(z_true, z_est).correlation)).mean())


@pytest.fixture(scope="module")
def dag_data():
    # a nonlinear (2-layer leaky-ReLU) mixing of 3 latents on a chain, one perfect
    # intervention per latent: linear methods cannot unmix it
    ds = simulate.latent_dag(3, graph="chain", samples_per_env=1000, obs_dim=6,
                             mixing_layers=2, seed=3)
    return ds.split(0.8, seed=0)


def test_initialize_contrastive_finds_the_intervened_latents(dag_data):
    from pyrocrl.inference import initialize_contrastive
    from pyrocrl.models import LatentCausalVAE

    train, test = dag_data
    torch.manual_seed(0)
    model = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
    before = _by_target(test.z.numpy(), model.encode(test.x, test.u))
    result = initialize_contrastive(model, train.x, train.u, num_steps=1500,
                                    regression_steps=600, seed=0)
    after = _by_target(test.z.numpy(), model.encode(test.x, test.u))
    # measured 0.886 (from 0.568); another initialization: 0.854 (from 0.464)
    assert after >= 0.8 and after > before + 0.2, (before, after)
    # the classifier beats chance (1/4) by far (measured 0.645, cross-entropy 0.815 nats);
    # the regression reproduced its features
    assert result.metrics["accuracy"][-1] > 0.5
    assert result.losses[-50:].mean() < 0.8 * np.log(4)
    assert result.metrics["regression_mse"][0] < 0.3
    # the acyclicity penalty kept the learned SEM (nearly) a DAG
    assert model.acyclicity_penalty().item() < 1e-2
    # the prior was trained with the classifier: no longer its initial empty graph
    assert model.adjacency.abs().max() > 0.05
    assert model.training  # the model's mode is left as it was


def test_initialize_contrastive_names_bad_input(dag_data):
    from pyrocrl.inference import initialize_contrastive
    from pyrocrl.models import VAE, LatentCausalVAE

    train, _ = dag_data
    with pytest.raises(TypeError, match="must have 'num_domains'"):
        initialize_contrastive(VAE(6, 3), train.x, train.u)
    model = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        initialize_contrastive(model, train.x, train.u, num_steps=0)
    with pytest.raises(ValueError, match="u"):
        initialize_contrastive(model, train.x, train.u + 4, num_steps=5)
    with pytest.raises(ValueError, match="restarts must be a positive int, got 0"):
        initialize_contrastive(model, train.x, train.u, num_steps=5, restarts=0)
    with pytest.raises(ValueError, match="sparsity must be >= 0, got -1"):
        initialize_contrastive(model, train.x, train.u, num_steps=5, sparsity=-1)
    from pyrocrl.models import IVAE

    with pytest.raises(TypeError, match="must have 'adjacency'"):
        initialize_contrastive(IVAE(6, 3, 4, learn_prior_mean=False), train.x, train.u,
                               num_steps=5, sparsity=0.1)


def test_initialize_contrastive_starts_at_given_latents_and_keeps_them(dag_data):
    """start_at: every feature network begins at the given latents (here the true ones,
    rescaled, shifted and one sign flipped -- start_at is standardized; an oracle check of
    the mechanism, not a way to fit) and the classification keeps them, where the random
    start above reaches 0.886."""
    from pyrocrl.inference import initialize_contrastive
    from pyrocrl.models import LatentCausalVAE

    train, test = dag_data
    torch.manual_seed(0)
    model = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
    start = train.z * torch.tensor([2.0, -0.5, 3.0]) + 1.0
    result = initialize_contrastive(model, train.x, train.u, num_steps=300, seed=0,
                                    regression_steps=600, start_at=start, start_steps=1500,
                                    prior_steps=300)
    after = _by_target(test.z.numpy(), model.encode(test.x, test.u))
    assert after >= 0.95, after  # measured 0.994
    assert result.metrics["accuracy"][-1] > 0.5
    with pytest.raises(ValueError, match=r"finite tensor of shape \(3200, 3\)"):
        initialize_contrastive(model, train.x, train.u, num_steps=5, start_at=start[:, :2])
    with pytest.raises(ValueError, match="start_at must be a finite tensor"):
        initialize_contrastive(model, train.x, train.u, num_steps=5,
                               start_at=start * float("nan"))
    with pytest.raises(ValueError, match="takes no linear stage"):
        initialize_contrastive(model, train.x, train.u, num_steps=5, start_at=start,
                               linear_steps=5)
    with pytest.raises(ValueError, match="start_steps must be a positive int"):
        initialize_contrastive(model, train.x, train.u, num_steps=5, start_at=start,
                               start_steps=0)


def test_initialize_contrastive_sparsity_shrinks_the_sem_weights(dag_data):
    """The L1 term enters the classification: the same run with sparsity ends with a smaller
    ||W||_1 (the cross-entropy alone leaves spurious weights, issue 4's extra edges)."""
    from pyrocrl.inference import initialize_contrastive
    from pyrocrl.models import LatentCausalVAE

    train, _ = dag_data
    norms = []
    for sparsity in (0.0, 0.05):
        torch.manual_seed(0)
        model = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
        initialize_contrastive(model, train.x, train.u, num_steps=400, regression_steps=10,
                               sparsity=sparsity, seed=0)
        norms.append(float(model.adjacency.detach().abs().sum()))
    assert norms[1] < 0.7 * norms[0], norms


def test_initialize_contrastive_keeps_the_restart_that_agrees_with_the_others(dag_data):
    from pyrocrl.inference import initialize_contrastive
    from pyrocrl.inference.initialize import _agreement
    from pyrocrl.models import LatentCausalVAE

    # the agreement score: identical feature sets agree fully, a sign flip changes nothing,
    # an independent set drags the others down and scores lowest itself
    g = torch.Generator().manual_seed(0)
    a, noise = torch.randn(500, 3, generator=g), torch.randn(500, 3, generator=g)
    np.testing.assert_allclose(_agreement([a, -a]), [1.0, 1.0])
    score = _agreement([a, a + 0.1 * noise, noise])
    assert score.argmin() == 2 and score[0] > 0.45 and score[2] < 0.1, score

    train, _ = dag_data
    torch.manual_seed(0)
    model = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    result = initialize_contrastive(model, train.x, train.u, num_steps=60, regression_steps=20,
                                    restarts=3, seed=0)
    agreement = result.metrics["restart_agreement"]
    assert len(agreement) == 3 and result.metrics["chosen_restart"] == [int(np.argmax(agreement))]
    assert len(result.losses) == 60 and np.isfinite(result.losses).all()
    assert not torch.equal(model.adjacency, start["weights"] * model.off_diagonal)
    # the restarts train side by side, each as if alone: restart r is the single run with
    # seed r from the same initial state, up to float rounding of the vectorized arithmetic
    best = result.metrics["chosen_restart"][0]
    for r in range(3):
        single = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
        single.load_state_dict(start)
        alone = initialize_contrastive(single, train.x, train.u, num_steps=60,
                                       regression_steps=20, seed=r)
        assert alone.metrics["restart_loss"] == [pytest.approx(alone.losses.mean())]
        assert result.metrics["restart_loss"][r] == pytest.approx(
            alone.metrics["restart_loss"][0], abs=1e-5)
        if r == best:
            torch.testing.assert_close(model.adjacency, single.adjacency, rtol=0, atol=1e-6)
            np.testing.assert_allclose(result.losses, alone.losses, rtol=0, atol=1e-5)


def _poisoned_classifiers(monkeypatch, seeds, how):
    """Make initialize_contrastive's classifiers built with torch seeded by one of ``seeds``
    diverge at their first step: a NaN cross-entropy (``how="loss"``), or a finite one whose
    gradient is infinite (``how="gradient"``: a sqrt at 0 added to the logits)."""
    from pyrocrl.inference import initialize

    class Poisoned(initialize._EnvironmentClassifier):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bad = torch.initial_seed() in seeds
            self.poison = torch.nn.Parameter(torch.tensor(0.0 if bad else 1.0))
            if bad and how == "loss":
                with torch.no_grad():
                    self.offset.fill_(float("nan"))

        def forward(self, x, alpha=None):
            h, logits, penalty = super().forward(x, alpha)
            return h, logits + torch.sqrt(self.poison), penalty

    monkeypatch.setattr(initialize, "_EnvironmentClassifier", Poisoned)


@pytest.mark.parametrize("how", ["loss", "gradient"])
def test_initialize_contrastive_drops_a_diverged_restart(dag_data, monkeypatch, how):
    """A restart whose cross-entropy or gradient turns non-finite is dropped; the others
    train exactly as they would beside a healthy one, and one is kept. Only when all
    diverge does it raise, and the model keeps its state."""
    from pyrocrl.inference import NonFiniteLossError, initialize_contrastive
    from pyrocrl.models import LatentCausalVAE

    train, _ = dag_data
    torch.manual_seed(0)
    model = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    options = dict(num_steps=40, regression_steps=10, restarts=3, seed=0)
    _poisoned_classifiers(monkeypatch, seeds=(), how=how)
    healthy = initialize_contrastive(model, train.x, train.u, **options)
    _poisoned_classifiers(monkeypatch, seeds=(1,), how=how)
    model.load_state_dict(start)
    what = "cross-entropy" if how == "loss" else "gradient"
    with pytest.warns(RuntimeWarning, match=f"dropped restart with seed 1: its {what} is not "
                                            f"finite at step 0"):
        result = initialize_contrastive(model, train.x, train.u, **options)
    assert result.metrics["dropped_restarts"] == [1] and healthy.metrics["dropped_restarts"] == []
    agreement = result.metrics["restart_agreement"]
    assert np.isnan(agreement[1]) and np.isfinite(agreement[0]) and np.isfinite(agreement[2])
    assert result.metrics["chosen_restart"] == [int(np.nanargmax(agreement))] != [1]
    for r in (0, 2):  # bit for bit the runs they were beside a healthy restart 1
        assert result.metrics["restart_loss"][r] == healthy.metrics["restart_loss"][r]
    assert np.isfinite(model.adjacency.detach().numpy()).all()
    # the linear stage drops its diverged restarts before screening
    model.load_state_dict(start)
    with pytest.warns(RuntimeWarning, match="dropped linear-stage restart with seed 1"):
        result = initialize_contrastive(model, train.x, train.u, linear_steps=10,
                                        linear_restarts=3, **{**options, "restarts": 2})
    assert np.isnan(result.metrics["linear_loss"][1])
    assert result.metrics["linear_kept"] == [0, 2] and result.metrics["dropped_restarts"] == [1]
    # every restart diverged: an error, and the model as before the call
    _poisoned_classifiers(monkeypatch, seeds=(0, 1, 2), how=how)
    model.load_state_dict(start)
    with pytest.warns(RuntimeWarning), pytest.raises(
            NonFiniteLossError, match=r"every restart diverged \(seeds \[0, 1, 2\]"):
        initialize_contrastive(model, train.x, train.u, **options)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=0)


def test_initialize_contrastive_ranks_restarts_by_held_out_cross_entropy(dag_data):
    """With validation data the kept restart is the one whose classifier predicts the held-out
    environments best; each restart's held-out score is the single run's (seed r)."""
    from pyrocrl.inference import initialize_contrastive
    from pyrocrl.models import LatentCausalVAE

    train, test = dag_data
    torch.manual_seed(0)
    model = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    held_out = (test.x, test.u)
    result = initialize_contrastive(model, train.x, train.u, num_steps=60, regression_steps=20,
                                    restarts=3, seed=0, validation=held_out)
    scores = result.metrics["restart_validation_loss"]
    assert len(scores) == 3 and result.metrics["chosen_restart"] == [int(np.argmin(scores))]
    # cross-entropies per point in nats: below chance (log 4) after 60 steps, not equal
    assert all(0.0 < s < np.log(4) for s in scores) and len(set(scores)) == 3, scores
    for r in range(3):
        single = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
        single.load_state_dict(start)
        alone = initialize_contrastive(single, train.x, train.u, num_steps=60,
                                       regression_steps=1, seed=r, validation=held_out)
        assert alone.metrics["chosen_restart"] == [0]
        assert scores[r] == pytest.approx(alone.metrics["restart_validation_loss"][0],
                                          abs=1e-5)
    with pytest.raises(ValueError, match="validation must be a pair"):
        initialize_contrastive(model, train.x, train.u, num_steps=5, validation=test.x)
    with pytest.raises(ValueError, match="at least one row"):
        initialize_contrastive(model, train.x, train.u, num_steps=5,
                               validation=(test.x[:0], test.u[:0]))
    with pytest.raises(ValueError, match="u"):
        initialize_contrastive(model, train.x, train.u, num_steps=5,
                               validation=(test.x, test.u + 4))


def test_initialize_contrastive_linear_stage_screens_restarts(dag_data):
    """With ``linear_steps`` the classifiers first fit affine features; the ``restarts`` with
    the lowest cross-entropy on all of x go on with the network ramped in, and the kept one's
    classification is the single run's (``restarts=1``, one linear restart) with its seed
    (the regression afterwards draws from ``seed``, so the encoders differ)."""
    from pyrocrl.inference import initialize_contrastive
    from pyrocrl.models import LatentCausalVAE

    train, _ = dag_data
    torch.manual_seed(0)
    model = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    options = dict(num_steps=40, linear_steps=30, ramp_steps=20, regression_steps=20)
    result = initialize_contrastive(model, train.x, train.u, restarts=2, linear_restarts=4,
                                    seed=0, **options)
    linear_loss, kept = result.metrics["linear_loss"], result.metrics["linear_kept"]
    # the two lowest of the four linear cross-entropies (nats per point, below chance log 4)
    assert len(linear_loss) == 4 and all(0.0 < v < np.log(4) for v in linear_loss)
    assert kept == np.argsort(linear_loss)[:2].tolist()
    agreement = result.metrics["restart_agreement"]  # over the kept restarts, in kept's order
    assert len(agreement) == 2
    chosen = kept[int(np.argmax(agreement))]
    assert result.metrics["chosen_restart"] == [chosen]
    # the record runs through both stages: 30 linear steps, then 40
    assert len(result.losses) == 70 and np.isfinite(result.losses).all()
    assert result.metrics["step"][-1] == 70 and len(result.metrics["accuracy"]) == len(
        result.metrics["step"])
    single = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
    single.load_state_dict(start)
    alone = initialize_contrastive(single, train.x, train.u, linear_restarts=1, seed=chosen,
                                   **options)
    assert alone.metrics["linear_kept"] == [0]
    assert alone.metrics["linear_loss"][0] == pytest.approx(linear_loss[chosen], abs=1e-5)
    torch.testing.assert_close(model.adjacency, single.adjacency, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.losses, alone.losses, rtol=0, atol=1e-5)


def test_initialize_contrastive_linear_stage_names_bad_input(dag_data):
    from pyrocrl.inference import initialize_contrastive
    from pyrocrl.models import LatentCausalVAE

    train, _ = dag_data
    model = LatentCausalVAE(6, 3, 4, targets=train.info["targets"])
    for options, message in (
            (dict(linear_steps=-1), "linear_steps must be an integer >= 0, got -1"),
            (dict(linear_steps=True), "linear_steps must be an integer >= 0, got True"),
            (dict(ramp_steps=2.5), "ramp_steps must be an integer >= 0, got 2.5"),
            (dict(linear_steps=5, restarts=3, linear_restarts=2),
             r"linear_restarts \(2\) must be at least restarts \(3\)"),
            (dict(linear_steps=5, linear_restarts=0), "linear_restarts must be a positive int"),
            (dict(linear_steps=5, linear_learning_rate=0),
             "linear_learning_rate must be a positive number, got 0")):
        with pytest.raises(ValueError, match=message):
            initialize_contrastive(model, train.x, train.u, num_steps=5, **options)
