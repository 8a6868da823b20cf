r"""A latent causal DAG observed through a nonlinear mixing, with single-node interventions
(seed 002, §3: interventions reveal the latent causal graph).

Generative story, for environment :math:`e \in \{0, 1, \dots, n\}` (0 observational, ``e``
intervening on latent ``e - 1``):

.. math::

    z_j &= f_j(z_{\mathrm{pa}(j)}) + s_j \varepsilon_j \quad (j \ne t_e), \qquad
    f_j(z_{\mathrm{pa}(j)}) = \sum_{i \in \mathrm{pa}(j)} W_{ij}\, \phi(z_i),\\
    z_{t_e} &= \tilde b_{t_e} + \tilde s_{t_e} \varepsilon_{t_e}
        \quad\text{(perfect: parents cut)}, \qquad
    z_{t_e} = \sum_{i} \kappa_{t_e} W_{i t_e} \phi(z_i) + \tilde b_{t_e}
        + \tilde s_{t_e} \varepsilon_{t_e} \quad\text{(soft)},\\
    x &= g(z) \quad (+\ \text{optional Gaussian noise}),

with :math:`\phi` the identity (``sem="linear"``) or :math:`\tanh` (``"nonlinear"``),
:math:`\varepsilon` standard Gaussian or Laplace noise, random signed weights
:math:`|W_{ij}| \sim U(\texttt{weight\_range})`, noise scales :math:`s_j \sim U(0.5, 1)`,
intervened means :math:`\tilde b \sim \pm U(1, 2)`, scales :math:`\tilde s \sim U(1.2, 2)`
(variance and mean both change), soft factors :math:`\kappa \sim U(0.1, 0.4)`, and
:math:`g` an injective mixing from :data:`pyrocrl.simulate.MIXINGS`.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyrocrl.simulate._random import seeded
from pyrocrl.simulate.dataset import Dataset
from pyrocrl.simulate.graphs import random_dag
from pyrocrl.simulate.mixing import mix

__all__ = ["LatentSEM", "latent_dag"]

_NOISES = {"gaussian": lambda scale: dist.Normal(0.0, scale),
           "laplace": lambda scale: dist.Laplace(0.0, scale / np.sqrt(2.0))}


class LatentSEM:
    """The ground-truth SEM with its interventions; ``model(env)`` samples it with Pyro.

    Attributes (tensors): ``weights`` ``(n, n)``, ``scale`` ``(n,)``; per environment
    ``targets`` (``-1`` observational), ``target_loc``, ``target_scale``, ``soft_factor``.
    """

    def __init__(self, weights, scale, targets, target_loc, target_scale, soft_factor,
                 sem="linear", noise="gaussian", interventions="perfect"):
        self.weights = torch.as_tensor(weights, dtype=torch.float32)
        self.scale = torch.as_tensor(scale, dtype=torch.float32)
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.target_loc = torch.as_tensor(target_loc, dtype=torch.float32)
        self.target_scale = torch.as_tensor(target_scale, dtype=torch.float32)
        self.soft_factor = torch.as_tensor(soft_factor, dtype=torch.float32)
        self.sem, self.noise, self.interventions = sem, noise, interventions
        self.order = list(nx.topological_sort(nx.DiGraph(self.weights.numpy() != 0)))
        self.order += [j for j in range(len(self.scale)) if j not in self.order]

    def phi(self, z):
        return z if self.sem == "linear" else torch.tanh(z)

    def model(self, env: torch.Tensor) -> torch.Tensor:
        """Sample ``z`` ``(N, n)`` for environments ``env`` ``(N,)``: one site per latent."""
        n = len(self.scale)
        z = torch.zeros(len(env), n)
        target = self.targets[env]
        with pyro.plate("data", len(env)):
            for j in self.order:
                hit = target == j
                drive = self.phi(z) @ self.weights[:, j]
                if self.interventions == "soft":
                    drive = torch.where(hit, self.soft_factor[j] * drive, drive)
                elif self.interventions == "perfect":
                    drive = torch.where(hit, torch.zeros_like(drive), drive)
                loc = drive + torch.where(hit, self.target_loc[j], torch.tensor(0.0))
                scale = torch.where(hit, self.target_scale[j], self.scale[j])
                eps = pyro.sample(f"z_{j}", _NOISES[self.noise](torch.ones_like(scale)))
                z[:, j] = loc + scale * eps
        return z


def latent_dag(num_latents: int = 5, graph="er", expected_degree: float = 1.0,
               sem: str = "linear", noise: str = "gaussian", interventions="perfect",
               samples_per_env: int = 2000, obs_dim: int = 10, mixing: str = "leaky_mlp",
               mixing_layers: int = 3, seed: int = 0,
               weight_range: tuple[float, float] = (0.5, 1.5),
               observation_noise: float = 0.0, standardize: bool = True) -> Dataset:
    """Simulate a latent causal DAG with one single-node intervention per latent.

    Args:
        num_latents: n.
        graph: ``"er"`` (``expected_degree`` edges per node), ``"chain"``, ``"er<k>"``,
            ``"full"``, ``"empty"`` or an ``(n, n)`` DAG adjacency (its nonzeros are the
            edges; the weights are drawn).
        expected_degree: expected edges per node for ``"er"``.
        sem: ``"linear"`` or ``"nonlinear"`` (parents enter through tanh).
        noise: ``"gaussian"`` or ``"laplace"`` exogenous noise.
        interventions: ``"perfect"``, ``"soft"`` or ``None`` (observational data only).
        samples_per_env: samples in each environment.
        obs_dim: D >= n.
        mixing: a name in :data:`pyrocrl.simulate.MIXINGS`; ``mixing_layers`` its depth.
        seed: fixes the graph, weights, interventions, mixing and samples.
        weight_range: range of the absolute edge weights (signs are random).
        observation_noise, standardize: as in :func:`nonstationary_sources`.

    Returns:
        :class:`Dataset` with ``x`` ``(N, D)``, ``z`` ``(N, n)``, ``u`` the environment
        ``(N,)`` (0 observational, ``k`` intervening on latent ``k - 1``), ``graph`` the
        true weighted adjacency, and ``info["targets"]`` (intervened latent per environment,
        ``-1`` for observational), ``info["process"]`` (:class:`LatentSEM`),
        ``info["mixing"]``, ``info["num_envs"]``.
    """
    for name, value in (("num_latents", num_latents), ("samples_per_env", samples_per_env),
                        ("obs_dim", obs_dim)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"latent_dag: {name} must be a positive int, got {value!r}")
    if obs_dim < num_latents:
        raise ValueError(f"latent_dag: obs_dim={obs_dim} must be >= num_latents={num_latents}")
    if sem not in ("linear", "nonlinear"):
        raise ValueError(f"latent_dag: sem must be 'linear' or 'nonlinear', got {sem!r}")
    if noise not in _NOISES:
        raise ValueError(f"latent_dag: noise must be one of {sorted(_NOISES)}, got {noise!r}")
    if interventions not in ("perfect", "soft", None):
        raise ValueError(f"latent_dag: interventions must be 'perfect', 'soft' or None, got "
                         f"{interventions!r}")
    low, high = weight_range
    if not 0 < low <= high:
        raise ValueError(f"latent_dag: weight_range must satisfy 0 < low <= high, got "
                         f"{weight_range}")
    n = num_latents
    with seeded(seed) as rng:
        dag = random_dag(n, graph, edges_per_node=expected_degree, rng=rng)
        signed = rng.uniform(low, high, (n, n)) * rng.choice([-1.0, 1.0], (n, n))
        weights = np.where(dag != 0, signed, 0.0)
        scale = rng.uniform(0.5, 1.0, n)
        target_loc = rng.uniform(1.0, 2.0, n) * rng.choice([-1.0, 1.0], n)
        target_scale = rng.uniform(1.2, 2.0, n)
        soft_factor = rng.uniform(0.1, 0.4, n)
        targets = np.arange(-1, n) if interventions is not None else np.array([-1])
        process = LatentSEM(weights, scale, targets, target_loc, target_scale, soft_factor,
                            sem, noise, interventions)
        env = torch.arange(len(targets)).repeat_interleave(samples_per_env)
        z = process.model(env)
        x, g = mix(z, mixing, obs_dim, seed, standardize, observation_noise,
                   num_layers=mixing_layers)
    info = dict(seed=seed, process=process, mixing=g, targets=targets, num_envs=len(targets),
                sem=sem, noise=noise, interventions=interventions, mixing_layers=mixing_layers,
                samples_per_env=samples_per_env)
    return Dataset(x=x, z=z, u=env, graph=weights, info=info)
