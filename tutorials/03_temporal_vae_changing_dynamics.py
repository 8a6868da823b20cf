# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # 3. TemporalVAE on changing dynamics (TDRL's "change" setting)
#
# Seeds 001 and 003: a sequence model is a latent dynamical system
#
# $$z_t = f_u(z_{t-1}) + \sigma_u \odot \epsilon_t, \qquad x_t = g(z_t),$$
#
# here with a leaky-ReLU transition $f_u(z) = \mathrm{LeakyReLU}(B_u z)$ and noise scales
# $\sigma_u$ that both change with the domain $u$ of the sequence, and a 2-layer leaky-ReLU
# mixing $g$ into 6 dimensions (the setting of `tests/models/test_temporal_recovery.py`).
# `TemporalVAE` puts TDRL/LEAP's nonparametric prior on the latents:
#
# $$\log p(z_t \mid z_{t-1}, u) = \sum_i \log \mathcal N\big(r_i(z_{t,i}; z_{t-1}, u); 0, 1\big)
#   + \log \Big|\frac{\partial r_i}{\partial z_{t,i}}\Big|,$$
#
# a learned inverse transition $r$ that acts on each component of $z_t$ separately (its
# Jacobian in $z_t$ is diagonal). Because the conditional density changes with the history
# *and* the domain, a rotation of the latents can no longer be absorbed by the prior: the
# latents become identifiable up to permutation and component-wise maps. An IVAE that sees the
# same frames with their domain labels, but not their order, has only the domains to go on.
#
# We fit both on 800 sequences and score held-out sequences.

# %%
import os

import matplotlib.pyplot as plt
import torch

from pyrocrl import diagnostics, simulate
from pyrocrl.experiments import fit_and_score

smoke_test = "CI" in os.environ or "PYROCRL_SMOKE" in os.environ
num_steps = 20 if smoke_test else 2500
os.makedirs("tutorials/figures", exist_ok=True)

ds = simulate.nonstationary_temporal(num_latents=3, lag=1, num_domains=5,
                                     num_sequences=200 if smoke_test else 1000, seq_len=8,
                                     obs_dim=6, mixing_layers=2, setting="change", seed=2)
train, test = ds.split(0.8, seed=2)
print("x", tuple(ds.x.shape), "z", tuple(ds.z.shape), "domains", ds.info["num_domains"])

# %% [markdown]
# ## Is there enough variability? Check the true process first
#
# `sufficient_variability` evaluates seed 001's condition at sample points: the $2n$ vectors
# of first and second derivatives of $\log p(z_t \mid z_{t-1}, u)$ in each $z_{t,k}$, differenced
# against a reference domain, must span $2n$ dimensions. With $U = 5$ domains there are only
# $U - 1 = 4 < 2n = 6$ differences, so the *domain-only* condition cannot hold; TDRL's theory
# also draws variability from the history $z_{t-1}$, which the check below does not count. So
# the diagnostic is conservative here, and the fit is the real test.

# %%
points, context = diagnostics.lagged_points(test.z[:100], lag=1)
check = diagnostics.sufficient_variability(ds.info["process"], points, 5, context=context)
print("domain-only 2n condition:", check.verdict)

# %% [markdown]
# ## Fit TemporalVAE and the frame-wise IVAE baseline

# %%
runs = {name: fit_and_score(name, train, test, num_steps=num_steps, seed=2)
        for name in ("temporal_vae", "ivae")}
for name, run in runs.items():
    print(f"{name:<13} held-out MCC {float(run.mcc):.3f}  Spearman {float(run.mcc_spearman):.3f}"
          f"  affine R2 {float(run.affine_r2):.3f}  ({run.fit.time_s:.0f}s)")

# %% [markdown]
# ## Matched latents
#
# Each true latent against the learned latent that MCC's Hungarian matching pairs it with
# (the matching is the only use of ground truth, and only for scoring).

# %%
fig, axes = plt.subplots(2, 3, figsize=(9, 5.5))
z_true = test.z.reshape(-1, 3).numpy()
for row, (name, run) in enumerate(runs.items()):
    z_hat = run.z_est.reshape(-1, 3)
    score = diagnostics.mcc(z_true, z_hat)
    for k in range(3):
        j = score.permutation[k]
        ax = axes[row, k]
        ax.scatter(z_true[:2000, k], z_hat[:2000, j], s=2, alpha=0.4, color=f"C{row}")
        ax.set_title(f"{name}: z{k} (|r| = {score.per_dim[k]:.2f})", fontsize=9)
        ax.set_xlabel(f"true z{k}")
        ax.set_ylabel(f"learned z{j}")
fig.tight_layout()
fig.savefig("tutorials/figures/03_matched_latents.png", dpi=100)

# %% [markdown]
# ## The learned prior
#
# The fitted model's own transition density is available as
# `model.conditional_log_prob(z_t, u, context)`; the same diagnostic runs on it at the encoded
# latents. Its log-density per step on held-out sequences tells how much structure the prior
# has learned compared with the standard normal it starts from.

# %%
model = runs["temporal_vae"].model
z_hat = torch.as_tensor(runs["temporal_vae"].z_est, dtype=torch.float32)
pts, ctx = diagnostics.lagged_points(z_hat[:100], lag=1)
learned = diagnostics.sufficient_variability(model, pts, 5, context=ctx)
print("learned prior, domain-only 2n condition:", learned.verdict)
with torch.no_grad():
    u_rep = test.u[:100].repeat_interleave(z_hat.shape[1] - 1)
    per_step = model.conditional_log_prob(pts, u_rep, ctx).mean()
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(pts).sum(-1).mean()
print(f"mean log p(z_t | z_t-1, u): learned prior {float(per_step):.2f} nats vs N(0, I) "
      f"{float(standard):.2f}")

# %% [markdown]
# **Across seeds** (the slow test): from random starts TemporalVAE reaches 0.845 / 0.818 /
# 0.974 against IVAE's 0.720 / 0.690 / 0.723 on seeds 0 / 1 / 2. Much of that gap is
# optimization, not identifiability: started at the linear ICA of $(x, u)$
# (`fit_and_score(..., init="linear")`, `inference.initialize_linear`) TemporalVAE reaches
# 0.977 / 0.971 / 0.940 and the frame-wise IVAE (with `covariance="full"`) 0.964 / 0.964 /
# 0.922: in this setting the domains alone nearly identify the latents, and the dynamics add
# 0.01–0.02. `benchmarks/temporal.py` reports the larger 3-layer setting (TemporalVAE 0.85 from
# random starts, 0.92 from the linear start; TDRL's published 0.95).
