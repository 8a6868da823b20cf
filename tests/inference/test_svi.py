import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyrocrl import simulate
from pyrocrl.inference import NonFiniteLossError, fit_svi, resolve_device
from pyrocrl.inference.svi import _ScaleLatents
from pyrocrl.models import IVAE, VAE

from .toy_models import Conjugate, Exploding, GlobalMean, ValidationRecorder


@pytest.fixture(scope="module")
def dataset():
    return simulate.nonstationary_sources(num_latents=2, num_domains=6, samples_per_domain=100,
                                          seed=0)


def fit(model, ds, **kw):
    kw.setdefault("num_steps", 40)
    kw.setdefault("batch_size", 64)
    kw.setdefault("progress", False)
    return fit_svi(model, ds.x, ds.u, **kw)


def test_loss_decreases_and_result_fields(dataset):
    model = IVAE(2, 2, 6)
    result = fit(model, dataset, num_steps=300, learning_rate=3e-3, log_every=50)
    assert result.losses.shape == (300,) and result.num_steps == 300
    assert result.losses[-50:].mean() < result.losses[:50].mean() - 0.5
    assert result.device == "cpu" and result.time_s > 0
    assert result.best_step is None and result.validation_losses == []


def test_progress_false_prints_nothing(dataset, capsys):
    fit(VAE(2, 2), dataset, num_steps=5)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_shows_running_loss(dataset, capsys):
    fit(VAE(2, 2), dataset, num_steps=20, log_every=10, progress=True)
    assert "loss=" in capsys.readouterr().err


class InterruptedIVAE(IVAE):
    """Raises KeyboardInterrupt (a user's Ctrl-C) halfway through training step ``at``."""

    def __init__(self, *args, at):
        super().__init__(*args)
        self.at, self.training_calls = at, 0

    def guide(self, x, u=None, num_data=None):
        if torch.is_grad_enabled():  # training steps, not validation
            self.training_calls += 1
            if self.training_calls == self.at + 2:  # call 1 collects the parameters
                pyro.sample("noise", dist.Normal(0.0, 1.0))  # consume RNG mid-step
                raise KeyboardInterrupt
        return super().guide(x, u, num_data)


def test_resume_after_interrupt_reproduces_uninterrupted_run_exactly(dataset, tmp_path):
    common = dict(num_steps=60, log_every=10, checkpoint_every=20, kl_warmup=30, seed=3,
                  learning_rate_decay=0.1, validation=(dataset.x[:100], dataset.u[:100]))
    pyro.set_rng_seed(11)
    straight = IVAE(2, 2, 6)
    full = fit(straight, dataset, checkpoint=tmp_path / "a.pt", **common)

    pyro.set_rng_seed(11)
    with pytest.raises(KeyboardInterrupt):
        fit(InterruptedIVAE(2, 2, 6, at=33), dataset, checkpoint=tmp_path / "b.pt", **common)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 33
    pyro.set_rng_seed(999)  # a fresh process would have another RNG state; it must not matter
    resumed_model = IVAE(2, 2, 6)
    resumed = fit(resumed_model, dataset, checkpoint=tmp_path / "b.pt", resume=True, **common)

    np.testing.assert_array_equal(resumed.losses, full.losses)
    assert resumed.validation_losses == full.validation_losses
    assert resumed.best_step == full.best_step
    for (name, a), b in zip(straight.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_without_a_checkpoint_file_starts_fresh(dataset, tmp_path):
    result = fit(VAE(2, 2), dataset, num_steps=5, checkpoint=tmp_path / "new.pt", resume=True)
    assert result.num_steps == 5 and (tmp_path / "new.pt").exists()


def test_resume_rejects_a_different_batch_size(dataset, tmp_path):
    fit(VAE(2, 2), dataset, num_steps=5, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="batch_size"):
        fit(VAE(2, 2), dataset, num_steps=10, batch_size=32, checkpoint=tmp_path / "c.pt",
            resume=True)


@pytest.mark.parametrize("validation", [True, False])
def test_non_finite_loss_stops_with_step_and_keeps_last_good_state(tmp_path, validation):
    """With Pyro's validation on, the NaN surfaces as a distribution ValueError; off, as a NaN
    loss. Both must stop with the step named and the last good state kept."""
    pyro.enable_validation(validation)
    x = torch.randn(50) + 3.0
    model = Exploding(explode_at=8)  # call 1 collects parameters; step k is call k + 2
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 7 .*kept") as error:
        fit_svi(model, x, num_steps=50, batch_size=None, progress=False, learning_rate=0.1,
                checkpoint=tmp_path / "nan.pt")
    assert "written to" in str(error.value)
    # the model holds the parameters the failing step started from (after step 6's update)
    assert model.loc.item() == pytest.approx(model.history[-1].item())
    assert model.loc.item() > 0.5  # it did learn before the failure
    saved = torch.load(tmp_path / "nan.pt", weights_only=False)
    assert saved["step"] == 7 and len(saved["losses"]) == 7
    assert torch.isfinite(torch.tensor(saved["losses"])).all()


def test_users_own_pyro_model_with_global_params():
    """A plain Pyro model (pyro.param, no num_data argument): the whole ELBO is scaled."""
    x = torch.randn(400) * 0.5 + 2.0

    result = fit_svi(GlobalMean(0.5), x, num_steps=400, batch_size=50, learning_rate=0.05,
                     progress=False)
    assert pyro.param("loc").item() == pytest.approx(x.mean().item(), abs=0.05)
    # loss per data point at the optimum is the Gaussian NLL at the MLE
    nll = -dist.Normal(x.mean(), 0.5).log_prob(x).mean().item()
    assert result.losses[-100:].mean() == pytest.approx(nll, abs=0.1)


def test_validation_selects_best_held_out_state_and_early_stops(dataset):
    train, val = dataset.split(0.8, seed=0)
    model = IVAE(2, 2, 6)
    result = fit(model, train, num_steps=2000, log_every=20, learning_rate=3e-2,
                 validation=(val.x, val.u), patience=3)
    steps, losses = zip(*result.validation_losses)
    assert result.best_step == steps[int(np.argmin(losses))]
    # a high learning rate overfits the small training split quickly, so patience runs out
    assert result.stopped_early
    assert result.num_steps < 2000 and result.num_steps - result.best_step == 3 * 20


def test_kl_warmup_scales_only_latent_sites():
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.5))

    plain = poutine.trace(model).get_trace()
    scaled = poutine.trace(poutine.replay(_ScaleLatents(0.25)(model), trace=plain)).get_trace()
    plain.compute_log_prob()
    scaled.compute_log_prob()
    torch.testing.assert_close(scaled.nodes["z"]["log_prob_sum"],
                               0.25 * plain.nodes["z"]["log_prob_sum"])
    torch.testing.assert_close(scaled.nodes["x"]["log_prob_sum"], plain.nodes["x"]["log_prob_sum"])


@pytest.mark.parametrize("elbo, num_particles", [("trace", 1), ("trace", 4), ("iwae", 8)])
def test_loss_is_exact_negative_log_likelihood_under_the_exact_posterior(elbo, num_particles):
    """With q = p(z | x) every importance weight equals p(x): both bounds are exact, so the
    reported loss must be -mean log p(x), whatever the particles."""
    x = torch.randn(30) * 1.1
    model = Conjugate(width=1.0)
    result = fit_svi(model, x, num_steps=1, batch_size=None, elbo=elbo,
                     num_particles=num_particles, progress=False)
    expected = -model.log_marginal(x).mean().item()
    np.testing.assert_allclose(result.losses[0], expected, rtol=1e-5)


@pytest.mark.parametrize("elbo", ["trace", "iwae"])
def test_minibatch_loss_matches_full_batch_on_identical_rows(elbo):
    """Identical rows: a minibatch's loss per data point estimates the same number as the
    full batch's. A ``"data"``-plate scale applied inside IWAE's logsumexp would inflate it
    several-fold."""
    x = torch.randn(1, 4).repeat(64, 1)
    losses = []
    for batch_size in (None, 16):
        pyro.set_rng_seed(0)
        model = VAE(4, 2)
        losses.append(fit_svi(model, x, num_steps=1, batch_size=batch_size, elbo=elbo,
                              num_particles=32, progress=False).losses[0])
    np.testing.assert_allclose(losses[1], losses[0], rtol=0.05)


def test_iwae_is_tighter_than_the_elbo_for_a_narrow_guide():
    x = torch.randn(200)
    model = Conjugate(width=0.5)
    common = dict(num_steps=1, batch_size=None, progress=False)
    trace = fit_svi(model, x, num_particles=64, **common).losses[0]
    iwae = fit_svi(model, x, elbo="iwae", num_particles=64, **common).losses[0]
    exact = -model.log_marginal(x).mean().item()
    assert exact < iwae < trace


def test_iwae_trains_ivae_with_minibatches(dataset):
    result = fit(IVAE(2, 2, 6), dataset, num_steps=100, elbo="iwae", num_particles=4,
                 learning_rate=3e-3, validation=(dataset.x[::7], dataset.u[::7]), log_every=50)
    assert result.losses[-20:].mean() < result.losses[:20].mean()
    assert len(result.validation_losses) == 2


class CountingIVAE(IVAE):
    def guide(self, *args, **kwargs):
        raise AssertionError("training started before the input was checked")


@pytest.mark.parametrize("kwargs, match", [
    ({"num_steps": 0}, "num_steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"learning_rate_decay": 0.0}, "learning_rate_decay"),
    ({"clip_norm": 0.0}, "clip_norm"),
    ({"kl_warmup": -5}, "kl_warmup"),
    ({"patience": 3}, "patience needs validation"),
    ({"elbo": "renyi"}, "elbo must be"),
    ({"elbo": "iwae"}, "num_particles >= 2"),
    ({"resume": True}, "resume=True needs a checkpoint"),
])
def test_bad_arguments_fail_before_training(dataset, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(CountingIVAE(2, 2, 6), dataset, **kwargs)


def test_bad_data_fails_before_training(dataset):
    model = CountingIVAE(2, 2, 6)
    with pytest.raises(ValueError, match="same length along dim 0"):
        fit_svi(model, dataset.x, dataset.u[:10], progress=False)
    with pytest.raises(ValueError, match="u is required"):
        fit_svi(model, dataset.x, progress=False)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fit_svi(model, dataset.x.numpy(), dataset.u, progress=False)
    with pytest.raises(ValueError, match="validation must hold as many"):
        fit_svi(model, dataset.x, dataset.u, validation=dataset.x, progress=False)
    with pytest.raises(TypeError, match="callable .model and .guide"):
        fit_svi(object(), dataset.x)


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.gpu
def test_fit_on_gpu(dataset):
    model = IVAE(2, 2, 6)
    result = fit(model, dataset, num_steps=50, device="auto")
    assert result.device.startswith("cuda") and model.device.type == "cuda"
    assert model.encode(dataset.x, dataset.u).device == dataset.x.device


# ---- data larger than memory: a Dataset or a DataLoader in place of tensors ----------------

class MemmapDataset(torch.utils.data.Dataset):
    """``(x_i, u_i)`` read from two ``.npy`` files memory-mapped from disk, one row per index.
    With ``batched``, it also reads a whole batch at once (torch's ``__getitems__``)."""

    def __init__(self, x_path, u_path, batched=False):
        self.x = np.load(x_path, mmap_mode="r")
        self.u = np.load(u_path, mmap_mode="r")
        if batched:
            self.__getitems__ = self.getitems

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.x[i])), torch.from_numpy(np.array(self.u[i]))

    def getitems(self, indices):
        xs, us = np.array(self.x[indices]), np.array(self.u[indices])
        return list(zip(torch.from_numpy(xs), torch.from_numpy(us)))


@pytest.fixture
def memmap_dataset(dataset, tmp_path):
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                  shape=tuple(dataset.x.shape))
    x[:] = dataset.x.numpy()
    x.flush()
    np.save(tmp_path / "u.npy", dataset.u.numpy())
    del x
    return tmp_path / "x.npy", tmp_path / "u.npy"


def fit_each(*sources, **kw):
    """Fit a fresh, identically initialised IVAE on each ``(data, extra_kwargs)`` source."""
    kw = dict(dict(num_steps=25, batch_size=64, progress=False), **kw)
    results = []
    for data, extra in sources:
        pyro.set_rng_seed(11)
        model = IVAE(2, 2, 6)
        results.append((model, fit_svi(model, *data, **kw, **extra)))
    return results


def assert_same_fit(a, b):
    (model_a, result_a), (model_b, result_b) = a, b
    assert np.isfinite(result_a.losses).all()
    np.testing.assert_array_equal(result_a.losses, result_b.losses)
    assert result_a.validation_losses == result_b.validation_losses
    for (name, p), q in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("batched, num_workers", [(False, 0), (True, 0), (False, 1)])
def test_memmap_dataset_trains_exactly_like_the_same_tensors(dataset, memmap_dataset, batched,
                                                             num_workers):
    """The batch of a step is a function of (seed, step) whatever holds the data, so streaming
    rows from disk (item by item, a batch at once, or in a worker process) is bit-identical."""
    streamed = MemmapDataset(*memmap_dataset, batched=batched)
    assert isinstance(streamed.x, np.memmap)
    tensors, from_disk = fit_each(((dataset.x, dataset.u), {}),
                                  ((streamed,), {"num_workers": num_workers}), kl_warmup=10)
    assert_same_fit(tensors, from_disk)


def test_dataset_validation_and_iwae_match_tensors(dataset, memmap_dataset):
    streamed = MemmapDataset(*memmap_dataset)
    held_out = torch.utils.data.Subset(streamed, range(0, 600, 7))
    tensors, from_disk = fit_each(
        ((dataset.x, dataset.u), {"validation": (dataset.x[::7], dataset.u[::7])}),
        ((streamed,), {"validation": held_out}),
        elbo="iwae", num_particles=3, log_every=10)
    assert len(tensors[1].validation_losses) == 3
    assert_same_fit(tensors, from_disk)


def test_resume_with_a_dataset_reproduces_the_uninterrupted_tensor_run(dataset, memmap_dataset,
                                                                        tmp_path):
    streamed = MemmapDataset(*memmap_dataset)
    common = dict(num_steps=40, batch_size=64, log_every=10, checkpoint_every=10, kl_warmup=20,
                  seed=3, progress=False)
    pyro.set_rng_seed(11)
    straight = IVAE(2, 2, 6)
    full = fit_svi(straight, dataset.x, dataset.u, **common)

    pyro.set_rng_seed(11)
    with pytest.raises(KeyboardInterrupt):
        fit_svi(InterruptedIVAE(2, 2, 6, at=23), streamed, checkpoint=tmp_path / "d.pt",
                **common)
    assert torch.load(tmp_path / "d.pt", weights_only=False)["step"] == 23
    pyro.set_rng_seed(999)
    resumed_model = IVAE(2, 2, 6)
    resumed = fit_svi(resumed_model, streamed, checkpoint=tmp_path / "d.pt", resume=True,
                      **common)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    for (name, a), b in zip(straight.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_dataset_errors_are_clear_and_come_before_training(dataset):
    model = CountingIVAE(2, 2, 6)
    with pytest.raises(ValueError, match=r"Dataset \(ListDataset\) is empty"):
        fit_svi(model, ListDataset([]), progress=False)
    ragged = [(torch.randn(2), torch.tensor(0)) for _ in range(10)]
    ragged[3] = (torch.randn(3), torch.tensor(0))
    with pytest.raises(ValueError, match=r"inconsistent shapes: component 0 of item \d+ has "
                                         r"shape \(2,\) but of item 3 \(3,\)"):
        fit_svi(model, ListDataset(ragged), batch_size=None, progress=False)
    with pytest.raises(ValueError, match="same structure"):
        fit_svi(model, ListDataset([(torch.randn(2), torch.tensor(0)), torch.randn(2)]),
                batch_size=None, progress=False)
    with pytest.raises(TypeError, match="holds a dict"):
        fit_svi(model, ListDataset([{"x": torch.randn(2)}] * 4), progress=False)
    with pytest.raises(TypeError, match="must be the only data argument"):
        fit_svi(model, torch.utils.data.TensorDataset(dataset.x), dataset.u, progress=False)
    with pytest.raises(ValueError, match="num_workers=2 reads the items of a Dataset"):
        fit_svi(model, dataset.x, dataset.u, num_workers=2, progress=False)
    # the model's own check runs on the first batch, with its own message
    wrong_domains = torch.utils.data.TensorDataset(dataset.x, dataset.u + 10)
    with pytest.raises(ValueError, match="u must take values in") as error:
        fit_svi(model, wrong_domains, progress=False)
    assert "first batch of the Dataset" in str(error.value.__notes__)
    with pytest.raises(ValueError, match="validation items must hold as many tensors"):
        fit_svi(model, torch.utils.data.TensorDataset(dataset.x, dataset.u),
                validation=torch.utils.data.TensorDataset(dataset.x), progress=False)


@pytest.mark.parametrize("bad_item, error, match", [
    ((torch.randn(3), torch.tensor(0)), ValueError, "inconsistent shapes.*item {bad}"),
    # a domain the model does not have: the encoder's one_hot fails
    ((torch.randn(2), torch.tensor(10)), RuntimeError, "smaller than num_classes"),
])
def test_a_bad_item_met_later_stops_at_its_step_with_a_checkpoint(tmp_path, bad_item, error,
                                                                   match):
    """Streamed data are not read whole before training: a bad item halfway stops training
    at the step that meets it, with the state before that step written to the checkpoint."""
    from pyrocrl.inference.svi import _Batches

    bad = int(_Batches(640, 64, seed=0).at(5)[0])  # 10 batches an epoch: first met at step 5
    items = [(torch.randn(2), torch.tensor(i % 6)) for i in range(640)]
    items[bad] = bad_item
    with pytest.raises(error, match=match.format(bad=bad)):
        fit_svi(IVAE(2, 2, 6), ListDataset(items), batch_size=64, num_steps=10, progress=False,
                checkpoint=tmp_path / "r.pt")
    saved = torch.load(tmp_path / "r.pt", weights_only=False)
    assert saved["step"] == 5 and len(saved["losses"]) == 5


def test_full_batch_dataloader_matches_tensors(dataset):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(dataset.x, dataset.u),
                                         batch_size=len(dataset.x), shuffle=False)
    results = []
    for source in ((dataset.x, dataset.u), (loader,)):
        pyro.set_rng_seed(11)
        model = IVAE(2, 2, 6)
        results.append((model, fit_svi(model, *source, batch_size=None, num_steps=5,
                                       progress=False)))
    assert_same_fit(*results)


def test_dataloader_batches_are_scaled_to_the_whole_dataset_epoch_after_epoch():
    """Exact posterior: each step's loss is -mean log p(x) over that step's batch, which
    checks the N / batch scaling (also of a smaller last batch) and the epoch cycling."""
    x = torch.randn(30)
    loader = torch.utils.data.DataLoader(x, batch_size=7)  # batches of 7, 7, 7, 7, 2
    model = Conjugate(width=1.0)
    result = fit_svi(model, loader, num_steps=12, learning_rate=1e-9, progress=False)
    batches = [x[i:i + 7] for i in range(0, 30, 7)]
    expected = [-model.log_marginal(batches[k % 5]).mean().item() for k in range(12)]
    np.testing.assert_allclose(result.losses, expected, rtol=1e-5)


class RecordingIVAE(IVAE):
    def __init__(self, *args):
        super().__init__(*args)
        self.seen = []

    def guide(self, x, u=None, num_data=None):
        self.seen.append((x.shape[0], num_data))
        return super().guide(x, u, num_data)


def test_shuffled_dataloader_passes_num_data_and_trains(dataset):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(dataset.x, dataset.u),
                                         batch_size=64, shuffle=True, drop_last=True)
    model = RecordingIVAE(2, 2, 6)
    result = fit_svi(model, loader, num_steps=200, learning_rate=3e-3, progress=False)
    assert {num_data for _, num_data in model.seen} == {600}
    assert {size for size, _ in model.seen} == {64}
    assert result.losses[-30:].mean() < result.losses[:30].mean()


def test_dataloader_errors(dataset, tmp_path):
    model = CountingIVAE(2, 2, 6)
    pairs = torch.utils.data.TensorDataset(dataset.x, dataset.u)
    with pytest.raises(ValueError, match="resume=True is refused for a DataLoader"):
        fit_svi(model, torch.utils.data.DataLoader(pairs), checkpoint=tmp_path / "l.pt",
                resume=True, progress=False)
    with pytest.raises(ValueError, match="yielded no batches"):
        fit_svi(model, torch.utils.data.DataLoader(pairs, batch_size=1000, drop_last=True),
                progress=False)
    with pytest.raises(ValueError, match="DataLoader's dataset is empty"):
        fit_svi(model, torch.utils.data.DataLoader(ListDataset([])), progress=False)
    with pytest.raises(TypeError, match="batches must be a tensor or a tuple/list"):
        fit_svi(model, torch.utils.data.DataLoader(ListDataset([{"x": torch.zeros(2)}])),
                progress=False)
    with pytest.raises(ValueError, match="u must take values in"):
        fit_svi(model, torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(dataset.x, dataset.u + 10), batch_size=64),
            progress=False)


def test_sequence_dataset_batches_are_n_t_d(tmp_path):
    """A Dataset of sequences: item i is (T, D), so a batch is (B, T, D) as the sequence
    models' checks expect; it trains exactly as the stacked tensor would."""
    from pyrocrl.models import TemporalVAE

    x = simulate.linear_gaussian(2, 3, num_sequences=40, seq_len=5, seed=0).x
    results = []
    for data in ((x,), (torch.utils.data.TensorDataset(x),)):
        pyro.set_rng_seed(0)
        model = TemporalVAE(3, 2)
        results.append((model, fit_svi(model, *data, num_steps=4, batch_size=16,
                                       progress=False)))
    assert_same_fit(*results)
    with pytest.raises(ValueError, match=r"TemporalVAE: x must have shape \(N, T, obs_dim=3\), "
                                         r"got \(40, 3\)"):
        fit_svi(TemporalVAE(3, 2), torch.utils.data.TensorDataset(x[:, 0]), progress=False)


def test_distribution_checks_run_on_the_first_step_only_unless_asked():
    """Pyro's checks are on (globally) for the first call (fit_svi's look at the model
    before training) and step 0, then off; validate_every_step=True keeps them on."""
    x = torch.randn(40)
    with pyro.validation_enabled(True):
        model = ValidationRecorder()
        fit_svi(model, x, num_steps=5, batch_size=None, progress=False)
        assert model.checks == [True, True, False, False, False, False]
        model = ValidationRecorder()
        fit_svi(model, x, num_steps=5, batch_size=None, progress=False,
                validate_every_step=True)
        assert model.checks == [True] * 6
