"""Figures shared by the CLI, tutorials and benchmarks (matplotlib, no state)."""

from __future__ import annotations

import numpy as np

from pyrocrl.diagnostics import mcc


def matched_latents(axes, z_true, z_est, title: str = "", max_points: int = 2000):
    """Scatter each true latent against the estimated latent matched to it (Hungarian on
    |Pearson|), one axis per true dimension, with the correlation in the corner."""
    z_true, z_est = np.asarray(z_true), np.asarray(z_est)
    score = mcc(z_true, z_est)
    keep = np.random.default_rng(0).permutation(len(z_true))[:max_points]
    for i, ax in enumerate(np.ravel(axes)[: z_true.shape[1]]):
        j = score.permutation[i]
        ax.scatter(z_true[keep, i], score.signs[i] * z_est[keep, j], s=2, alpha=0.4)
        ax.text(0.03, 0.9, f"|r| = {score.per_dim[i]:.2f}", transform=ax.transAxes, fontsize=8)
        ax.set_xlabel(f"true z{i}", fontsize=8)
        ax.set_ylabel(f"{'-' if score.signs[i] < 0 else ''}learned z{j}", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        np.ravel(axes)[0].set_title(f"{title}: MCC {float(score):.3f}", fontsize=9, loc="left")
    return score


def loss_curves(ax, histories: dict, smooth: int = 50):
    """Running-mean training loss per model."""
    for name, losses in histories.items():
        losses = np.asarray(losses)
        k = max(1, min(smooth, len(losses) // 5))
        ax.plot(np.convolve(losses, np.ones(k) / k, mode="valid"), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("negative ELBO per data point")
    ax.legend()
