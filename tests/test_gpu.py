"""Every model and both torch trainers train on CUDA with ``device="auto"`` (issue 6). Marked
``gpu``: skipped where no CUDA device is present (CI), run on a GPU machine with
``pytest -m gpu``. ``check_*`` hold the assertions so they can be exercised on the CPU too."""

import numpy as np
import pytest
import torch

from pyrocrl import simulate
from pyrocrl.inference import fit_next_token, fit_sae
from pyrocrl.models import DeepMarkovModel, NextTokenPredictor, TopKSAE
from tests.inference.test_jit import CASES, gaussian_sequences, run

ALL_SVI = CASES + [("DeepMarkovModel", lambda: DeepMarkovModel(3, 2, transition_dim=8,
                                                                rnn_dim=8, emission_dim=8),
                    gaussian_sequences, {})]


def check_svi_model(make_model, make_data, extra, device):
    model, result = run(make_model, make_data(), False, device=device, **extra)
    expected = torch.device(device if device != "auto" else
                            ("cuda" if torch.cuda.is_available() else "cpu")).type
    assert result.device.startswith(expected) and np.isfinite(result.losses).all()
    assert all(p.device.type == expected for p in model.parameters())


def check_torch_trainers(device):
    acts = simulate.sparse_dictionary(d_in=16, num_atoms=32, k=2, num_samples=2048, seed=0).x
    sae = TopKSAE(16, 64, 2)
    result = fit_sae(sae, acts, num_steps=20, batch_size=256, progress=False, device=device)
    assert np.isfinite(result.losses).all()
    assert next(sae.parameters()).device.type == result.device.split(":")[0]
    x = simulate.discrete_concepts(3, "chain", num_observed=6, num_samples=512, seed=0).x
    net = NextTokenPredictor(6, hidden=32)
    result = fit_next_token(net, x, num_steps=20, progress=False, device=device)
    assert np.isfinite(result.losses).all()
    assert next(net.parameters()).device.type == result.device.split(":")[0]


@pytest.mark.gpu
@pytest.mark.parametrize("name, make_model, make_data, extra", ALL_SVI,
                         ids=[c[0] for c in ALL_SVI])
def test_every_model_trains_on_cuda(name, make_model, make_data, extra):
    check_svi_model(make_model, make_data, extra, "auto")


@pytest.mark.gpu
def test_fit_sae_and_fit_next_token_train_on_cuda():
    check_torch_trainers("auto")


def test_the_checks_pass_on_the_cpu():
    """The GPU tests' own assertions, run here on the CPU for two models and both trainers,
    so a broken check is seen without a GPU."""
    for name, make_model, make_data, extra in ALL_SVI:
        if name in ("IVAE", "DeepMarkovModel"):
            check_svi_model(make_model, make_data, extra, "cpu")
    check_torch_trainers("cpu")
