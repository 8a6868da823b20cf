"""Data-parallel fit_svi on PyTorch Lightning (2 CPU processes, gloo).

The fast tests fork the ranks from the test process (``strategy="ddp_fork"``, < 1 s a run);
the slow ones run a script the way users do on one or several machines (``strategy="ddp"``:
Lightning re-runs the script per extra process, or each "machine" is started by hand with
``MASTER_ADDR``/``MASTER_PORT``/``NODE_RANK``).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroParam

from pyrocrl import diagnostics, simulate
from pyrocrl.inference import NonFiniteLossError, fit_svi
from pyrocrl.models import IVAE
from tests.inference.toy_models import Exploding, GlobalMean, ValidationRecorder

pytest.importorskip("lightning")

DDP = dict(strategy="ddp_fork", num_devices=2, device="cpu")


@pytest.fixture(scope="module")
def dataset():
    return simulate.nonstationary_sources(num_latents=2, num_domains=6, samples_per_domain=100,
                                          seed=0)


def fit(ds, model=None, **kw):
    kw = dict(dict(num_steps=30, batch_size=64, progress=False, device="cpu"), **kw)
    if model is None:
        pyro.set_rng_seed(11)
        model = IVAE(2, 2, 6)
    return model, fit_svi(model, ds.x, ds.u, **kw)


class RankRecordingIVAE(IVAE):
    """Saves its parameters, in each rank, as they are when the guide runs for the ``at``-th
    time in training (after ``at - 2`` optimizer steps)."""

    def __init__(self, *args, out, at):
        super().__init__(*args)
        self.out, self.at, self.calls = str(out), at, 0

    def guide(self, x, u=None, num_data=None):
        if torch.distributed.is_initialized() and torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at:
                rank = torch.distributed.get_rank()
                torch.save(self.state_dict(), os.path.join(self.out, f"rank{rank}.pt"))
        return super().guide(x, u, num_data)


def test_two_forked_ranks_stay_identical_and_track_the_single_process_run(dataset, tmp_path):
    pyro.set_rng_seed(11)
    initial = IVAE(2, 2, 6).state_dict()
    pyro.set_rng_seed(11)
    recording = RankRecordingIVAE(2, 2, 6, out=tmp_path, at=25)
    model, ddp = fit(dataset, recording, num_steps=100, learning_rate=3e-3, **DDP)
    _, single = fit(dataset, num_steps=100, learning_rate=3e-3)

    assert (ddp.world_size, ddp.rank, ddp.device) == (2, 0, "cpu")
    assert ddp.losses.shape == (100,) and np.isfinite(ddp.losses).all()
    # replicas hold the same parameters mid-run ...
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # ... and the caller's model got the trained ones back
    assert not torch.equal(model.state_dict()["prior_scale_unconstrained"],
                           initial["prior_scale_unconstrained"])
    # Same global minibatches, other latent noise: the losses agree closely while the noise is
    # small against the loss. (Later, in the steep descent, runs with different noise drift
    # apart by tens of percent, single-process ones too; the slow tests compare plateaus.)
    assert ddp.losses[0] == pytest.approx(single.losses[0], rel=0.01)
    assert ddp.losses[:25].mean() == pytest.approx(single.losses[:25].mean(), rel=0.02)


class Regression(PyroModule):
    """No latent variable, so no noise: a DDP run must follow the single-process run to
    rounding, which checks the sharding, the per-shard scaling and the gradient average."""

    def __init__(self):
        super().__init__()
        self.loc = PyroParam(torch.zeros(3))
        self.linear = torch.nn.Linear(3, 3)

    def model(self, x, num_data=None):
        with pyro.plate("data", num_data or x.shape[0], subsample=torch.arange(x.shape[0])):
            loc = self.linear(self.loc.expand(x.shape[0], 3))
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        pass


@pytest.mark.parametrize("batch_size", [60, 61, None])  # shards of 30 + 30, 31 + 30, 151 + 150
def test_without_noise_ddp_follows_the_single_process_run_to_rounding(batch_size):
    x = torch.randn(301, 3) * 2 + 1
    losses = []
    for kw in ({}, DDP):
        pyro.set_rng_seed(0)
        losses.append(fit_svi(Regression(), x, num_steps=40, batch_size=batch_size,
                              learning_rate=3e-2, progress=False, **kw).losses)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_a_dataset_trains_like_the_same_tensors_and_runs_repeat_exactly(dataset):
    pairs = torch.utils.data.TensorDataset(dataset.x, dataset.u)
    common = dict(num_steps=20, batch_size=64, progress=False, kl_warmup=10, **DDP)
    results = []
    for data in ((dataset.x, dataset.u), (pairs,), (pairs,)):
        pyro.set_rng_seed(11)
        model = IVAE(2, 2, 6)
        results.append((model, fit_svi(model, *data, **common)))
    (model_a, a), (model_b, b), (_, c) = results
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(b.losses, c.losses)
    for (name, p), q in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(p, q), name


def test_validation_selects_the_best_state_and_early_stops_in_every_rank(dataset):
    train, val = dataset.split(0.8, seed=0)
    model, result = fit(train, num_steps=2000, log_every=10, learning_rate=3e-2,
                        validation=(val.x, val.u), patience=3, **DDP)
    steps, losses = zip(*result.validation_losses)
    assert result.best_step == steps[int(np.argmin(losses))]
    assert result.stopped_early
    assert result.num_steps < 2000 and result.num_steps - result.best_step == 3 * 10


def test_checkpoint_and_resume_reproduce_the_uninterrupted_run_exactly(dataset, tmp_path):
    common = dict(log_every=5, checkpoint_every=10, kl_warmup=15, seed=3, elbo="iwae",
                  num_particles=2, validation=(dataset.x[::5], dataset.u[::5]), **DDP)
    model_a, straight = fit(dataset, num_steps=40, checkpoint=tmp_path / "a.pt", **common)
    _, first_half = fit(dataset, num_steps=20, checkpoint=tmp_path / "b.pt", **common)
    saved = torch.load(tmp_path / "b.pt", weights_only=False)
    assert saved["step"] == 20 and saved["world_size"] == 2 and len(saved["rng"]) == 2

    pyro.set_rng_seed(999)
    model_b, resumed = fit(dataset, IVAE(2, 2, 6), num_steps=40, checkpoint=tmp_path / "b.pt",
                           resume=True, **common)
    np.testing.assert_array_equal(resumed.losses, straight.losses)
    assert resumed.validation_losses == straight.validation_losses
    assert resumed.best_step == straight.best_step
    for (name, p), q in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(p, q), name

    with pytest.raises(ValueError, match="written by 2 process"):
        fit(dataset, num_steps=40, checkpoint=tmp_path / "b.pt", resume=True,
            **dict(DDP, num_devices=1))
    with pytest.raises(ValueError, match="strategy='ddp' run with 2 processes"):
        fit(dataset, num_steps=40, checkpoint=tmp_path / "b.pt", resume=True)


def test_a_nan_stops_every_rank_at_the_same_step_with_the_last_good_state(tmp_path):
    x = torch.randn(50) + 3.0
    model = Exploding(explode_at=8)  # call 1 checks the parameters; step k is call k + 2
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 7 .*written to"):
        fit_svi(model, x, num_steps=50, batch_size=None, learning_rate=0.1, progress=False,
                checkpoint=tmp_path / "nan.pt", **DDP)
    saved = torch.load(tmp_path / "nan.pt", weights_only=False)
    assert saved["step"] == 7 and len(saved["losses"]) == 7
    # the caller's model holds the parameters after step 6: those of the checkpoint
    assert model.loc.item() == saved["state"]["model"]["loc_unconstrained"].item() > 0.5



@pytest.mark.parametrize("every_step", [False, True])
def test_distribution_checks_follow_validate_every_step_in_every_rank(tmp_path, every_step):
    """As in one process: checks on for each rank's first step, off later (they cost ~25 %
    of a small model's step), unless validate_every_step."""
    with pyro.validation_enabled(True):
        fit_svi(ValidationRecorder(tmp_path), torch.randn(40), num_steps=5, batch_size=None,
                progress=False, validate_every_step=every_step, **DDP)
    for rank in (0, 1):
        checks = (tmp_path / f"rank{rank}.txt").read_text().split()
        expected = ["1"] * 5 if every_step else ["1", "0", "0", "0", "0"]
        assert checks == expected, rank

def test_ddp_refuses_what_it_cannot_synchronise_before_starting(dataset):
    with pytest.raises(ValueError, match=r"site\(s\) \['loc'\] live in Pyro's global param"):
        fit_svi(GlobalMean(), torch.randn(20), progress=False, **DDP)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(dataset.x, dataset.u))
    with pytest.raises(TypeError, match="shards the data itself"):
        fit_svi(IVAE(2, 2, 6), loader, progress=False, **DDP)
    with pytest.raises(ValueError, match="strategy must be None or one of"):
        fit_svi(IVAE(2, 2, 6), dataset.x, dataset.u, strategy="horovod")
    with pytest.raises(ValueError, match="num_devices and num_nodes need a strategy"):
        fit_svi(IVAE(2, 2, 6), dataset.x, dataset.u, num_devices=2)
    with pytest.raises(ValueError, match="each process gets its own GPU"):
        fit_svi(IVAE(2, 2, 6), dataset.x, dataset.u, **dict(DDP, device="cpu:0"))


def test_forked_ranks_do_not_hang_on_the_callers_openmp_threads(tmp_path):
    """With OMP_NUM_THREADS=2, a caller that ran a parallel region before forking left its
    children waiting forever on OpenMP's pool in their first layer (each rank now uses one
    thread). OMP_NUM_THREADS is read when the library loads, hence a fresh interpreter."""
    script = tmp_path / "fork.py"
    script.write_text(textwrap.dedent("""
        import torch
        from pyrocrl import simulate
        from pyrocrl.inference import fit_svi
        from pyrocrl.models import IVAE
        ds = simulate.nonstationary_sources(num_latents=2, num_domains=6,
                                            samples_per_domain=100, seed=0)
        torch.nn.Linear(64, 64)(torch.randn(512, 64))  # the caller's own parallel work
        result = fit_svi(IVAE(2, 2, 6), ds.x, ds.u, num_steps=10, batch_size=64,
                         progress=False, device="cpu", strategy="ddp_fork", num_devices=2)
        print("finished", len(result.losses))
    """))
    env = dict(os.environ, OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=240, cwd=os.getcwd())
    assert done.returncode == 0 and "finished 10" in done.stdout, done.stdout + done.stderr


# ---- the way users launch it: a script, on one or several machines --------------------------

STEPS = 400
SCRIPT = textwrap.dedent('''
    import json, sys
    import pyro, torch
    from pyrocrl import diagnostics, simulate
    from pyrocrl.inference import fit_svi
    from pyrocrl.models import IVAE

    out, num_devices, num_nodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ds = simulate.nonstationary_sources(num_latents=3, num_domains=20, samples_per_domain=300,
                                        mixing_layers=1, seed=0)
    train, test = ds.split(0.8, seed=0)
    pyro.set_rng_seed(0)
    model = IVAE(3, 3, 20)
    result = fit_svi(model, train.x, train.u, num_steps=STEPS, batch_size=128,
                     learning_rate=1e-2, progress=False, device="cpu", strategy="ddp",
                     num_devices=num_devices, num_nodes=num_nodes)
    torch.save(model.state_dict(), f"{out}/rank{result.rank}.pt")  # every rank returns here
    mcc = float(diagnostics.mcc(test.z, model.encode(test.x, test.u)))
    with open(f"{out}/rank{result.rank}.json", "w") as f:
        json.dump({"losses": result.losses.tolist(), "mcc": mcc,
                   "world_size": result.world_size, "time_s": result.time_s}, f)
''')


def run_script(tmp_path, num_devices, num_nodes, env_per_process):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.replace("STEPS", str(STEPS)))
    processes = []
    for extra in env_per_process:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
        for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR"):
            if key not in extra:
                env.pop(key, None)
        processes.append(subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), str(num_devices), str(num_nodes)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output.decode()[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    return ranks, states


@pytest.fixture(scope="module")
def single_process_reference():
    """The run the scripts distribute, in this process: losses, held-out MCC before and after."""
    ds = simulate.nonstationary_sources(num_latents=3, num_domains=20, samples_per_domain=300,
                                        mixing_layers=1, seed=0)
    train, test = ds.split(0.8, seed=0)
    pyro.set_rng_seed(0)
    model = IVAE(3, 3, 20)
    init_mcc = float(diagnostics.mcc(test.z, model.encode(test.x, test.u)))
    result = fit_svi(model, train.x, train.u, num_steps=STEPS, batch_size=128,
                     learning_rate=1e-2, progress=False, device="cpu")
    return result.losses, init_mcc, float(diagnostics.mcc(test.z, model.encode(test.x, test.u)))


def assert_ranks_agree_and_recover(ranks, states, reference):
    assert [r["world_size"] for r in ranks] == [2, 2]
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == STEPS
    single_losses, init_mcc, single_mcc = reference
    ddp_losses = np.asarray(ranks[0]["losses"])
    assert ddp_losses[:50].mean() == pytest.approx(single_losses[:50].mean(), rel=0.02)
    assert ddp_losses[-100:].mean() == pytest.approx(single_losses[-100:].mean(), rel=0.05)
    # Easy linear mixing, 20 domains: both reach a high held-out MCC from a low start. Other
    # noise can land an iVAE fit in another local optimum (over seeds, single-process fits of
    # this budget reach 0.70 to 0.92), hence the margin.
    assert init_mcc < 0.6 and single_mcc > 0.85
    assert ranks[0]["mcc"] > max(0.8, single_mcc - 0.1)


@pytest.mark.slow
def test_script_with_strategy_ddp_two_processes_on_one_machine(tmp_path,
                                                              single_process_reference):
    """``python train.py``: Lightning re-runs the script for local rank 1."""
    ranks, states = run_script(tmp_path, num_devices=2, num_nodes=1, env_per_process=[{}])
    assert_ranks_agree_and_recover(ranks, states, single_process_reference)


@pytest.mark.slow
def test_script_on_two_machines_started_by_hand(tmp_path, single_process_reference):
    """Two "machines" of one process each, started as one would on a cluster without a
    scheduler: the same script on each, with the rendezvous in environment variables."""
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    ranks, states = run_script(tmp_path, num_devices=1, num_nodes=2, env_per_process=[
        dict(common, NODE_RANK="0"), dict(common, NODE_RANK="1")])
    assert_ranks_agree_and_recover(ranks, states, single_process_reference)
