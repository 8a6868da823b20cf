"""End-to-end recipes shared by the CLI, the benchmarks and the recovery tests, so each
number is produced by one piece of code: simulate -> fit -> score on held-out data."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyro

from pyrocrl import diagnostics, models
from pyrocrl.inference import FitResult, fit_svi
from pyrocrl.simulate import Dataset

#: Training settings for the i.i.d. models on nonstationary sources (B1/B2, the demo and the
#: recovery tests), chosen on the training ELBO only.
IID_FIT = dict(batch_size=256, learning_rate=1e-3, log_every=200)


@dataclass
class Run:
    """One fitted model with its held-out scores."""

    name: str
    model: models.LatentVariableModel
    fit: FitResult
    mcc: float
    mcc_spearman: float
    affine_r2: float
    z_est: np.ndarray  # held-out posterior means

    def summary(self) -> dict:
        return {"model": self.name, "mcc": float(self.mcc),
                "mcc_spearman": float(self.mcc_spearman), "affine_r2": float(self.affine_r2),
                "fit_seconds": self.fit.time_s, "steps": self.fit.num_steps,
                "final_loss": float(np.mean(self.fit.losses[-100:])),
                "device": self.fit.device}


def build_iid_model(name: str, train: Dataset, **options) -> models.LatentVariableModel:
    """``"ivae"`` or ``"vae"`` sized for ``train`` (latent dimension = true dimension)."""
    obs_dim, latent_dim = train.x.shape[-1], train.z.shape[-1]
    if name == "ivae":
        return models.IVAE(obs_dim, latent_dim, int(train.info["num_domains"]), **options)
    if name == "vae":
        return models.VAE(obs_dim, latent_dim, **options)
    raise ValueError(f"model must be 'ivae' or 'vae', got {name!r}")


def fit_and_score(name: str, train: Dataset, test: Dataset, num_steps: int, seed: int = 0,
                  device: str = "auto", progress: bool = False, model_options=None,
                  **fit_options) -> Run:
    """Fit a fresh model on ``train`` (initialized from ``seed``) and score its posterior
    means on the held-out ``test`` split. No ground truth is used for any choice."""
    pyro.set_rng_seed(seed)
    model = build_iid_model(name, train, **(model_options or {}))
    options = {**IID_FIT, **fit_options}
    t0 = time.perf_counter()
    result = fit_svi(model, train.x, train.u, num_steps=num_steps, seed=seed, device=device,
                     progress=progress, **options)
    result.time_s = time.perf_counter() - t0
    z_est = model.encode(test.x, test.u).cpu().numpy()
    return Run(
        name=name, model=model, fit=result,
        mcc=diagnostics.mcc(test.z, z_est),
        mcc_spearman=diagnostics.mcc(test.z, z_est, method="spearman"),
        affine_r2=diagnostics.affine_r2(test.z, z_est),
        z_est=z_est,
    )
