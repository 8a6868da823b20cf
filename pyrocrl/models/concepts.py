r"""Discrete concepts (seed 004): the exact latent-concept model and the next-token predictor
whose features Theorem 3.1 is about.

:class:`DiscreteConceptModel` is the generative process of
:func:`pyrocrl.simulate.discrete_concepts` as a learnable Pyro model,

.. math::

    c &\sim \mathrm{Categorical}(\pi), \qquad
        \log \pi_c = \textstyle\sum_i \log p\big(z_i(c) \mid z_{\mathrm{pa}(i)}(c)\big),\\
    x_j \mid c &\sim \mathrm{Bernoulli}\big(\sigma(\eta_{c j})\big), \quad j = 1..D,

where :math:`c` indexes the :math:`2^n` joint configurations of the binary concepts
:math:`z`, the prior factorises along a DAG with logit CPD tables, and :math:`\eta` (one
logit per configuration and observed variable) is the — possibly non-invertible —
observation map. ``z`` is summed out exactly (``TraceEnum_ELBO``), so the posterior
:math:`p(c \mid x)` is exact, also given only a subset of the observed variables (the
context of a next-token prediction).

:class:`NextTokenPredictor` is G.1's network: (masked input, mask) → embedding → MLP with
BatchNorm and ReLU → a linear head that predicts the masked variable. Theorem 3.1 says its
features satisfy :math:`f(x) \approx A \log p(z \mid x) + b`.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO
from torch import nn
from torch.nn import functional as F

from pyrocrl._checks import check_positive_int
from pyrocrl.models.base import LatentVariableModel

__all__ = ["DiscreteConceptModel", "NextTokenPredictor", "random_mask"]


def _configurations(num_concepts: int) -> torch.Tensor:
    shifts = torch.arange(num_concepts - 1, -1, -1)
    return ((torch.arange(2**num_concepts)[:, None] >> shifts) & 1).float()


def check_binary(name: str, x, num_observed: int) -> None:
    """Raise naming ``name`` unless ``x`` is a finite 0/1 float tensor ``(N, num_observed)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != num_observed or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, num_observed={num_observed}), "
                         f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of 0/1 values, got {x.dtype}")
    bad = (x != 0) & (x != 1)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} must be binary (0/1); entry ({row}, {col}) is "
                         f"{float(x[row, col])}")


class DiscreteConceptModel(LatentVariableModel):
    r"""Binary concepts on a DAG, observed through a learned map; exact posteriors.

    Args:
        num_concepts: n (the model enumerates all :math:`2^n` configurations; n <= 12).
        num_observed: D.
        graph: ``(n, n)`` DAG adjacency (``graph[i, j] != 0``: ``z_i -> z_j``) of the prior;
            ``None`` uses the complete DAG in index order, which can express any joint
            distribution of the concepts.
        flip_floor: smallest probability of an observed bit disagreeing with its
            configuration in :meth:`from_dataset` (keeps :math:`\log p(z \mid x)` finite for
            a deterministic map).

    Sites: ``"z"`` (the configuration index, enumerated) and ``"x"`` in plate ``"data"``.
    ``model(x, observed=None, num_data=None)``: ``observed`` is an optional ``(N, D)``
    0/1 mask; unobserved variables drop out of the likelihood (a next-token context).
    Fit with ``fit_svi(model, x, elbo="traceenum")`` (maximum likelihood: the guide is
    empty because ``z`` is summed out).
    """

    def __init__(self, num_concepts: int, num_observed: int, graph=None):
        super().__init__(num_observed, num_concepts)
        if num_concepts > 12:
            raise ValueError(f"DiscreteConceptModel: num_concepts={num_concepts} means "
                             f"2**{num_concepts} configurations to enumerate; at most 12")
        if graph is None:
            graph = np.triu(np.ones((num_concepts, num_concepts)), k=1)
        graph = np.asarray(graph, dtype=float)
        if graph.shape != (num_concepts, num_concepts):
            raise ValueError(f"DiscreteConceptModel: graph must be ({num_concepts}, "
                             f"{num_concepts}), got {graph.shape}")
        import networkx as nx

        if not nx.is_directed_acyclic_graph(nx.DiGraph(graph != 0)):
            raise ValueError("DiscreteConceptModel: graph must be a DAG (it has a cycle)")
        self.graph = graph
        self.parents = [list(np.flatnonzero(graph[:, i])) for i in range(num_concepts)]
        self.cpd_logits = nn.ParameterList(
            [nn.Parameter(0.1 * torch.randn((2,) * len(p))) for p in self.parents])
        self.observation_logits = nn.Parameter(torch.randn(2**num_concepts, num_observed))
        self.register_buffer("configurations", _configurations(num_concepts), persistent=False)

    @property
    def num_concepts(self) -> int:
        return self.latent_dim

    @property
    def num_observed(self) -> int:
        return self.obs_dim

    @classmethod
    def from_dataset(cls, ds, flip_floor: float = 1e-4) -> DiscreteConceptModel:
        """The true process of ``simulate.discrete_concepts`` as a model (exact posteriors
        under the generator's own parameters). ``flip_floor`` bounds the bit-flip
        probability away from 0."""
        info = ds.info
        if "observation_map" not in info or "cpds" not in info:
            raise ValueError("DiscreteConceptModel.from_dataset: ds must come from "
                             "simulate.discrete_concepts (info lacks cpds/observation_map)")
        obs_map = torch.as_tensor(np.asarray(info["observation_map"]), dtype=torch.float32)
        num_configs, num_observed = obs_map.shape
        model = cls(int(np.log2(num_configs)), num_observed, graph=ds.graph)
        flip = torch.tensor(max(float(info["flip_prob"]), flip_floor))
        with torch.no_grad():
            for param, table in zip(model.cpd_logits, info["cpds"]):
                param.copy_(torch.logit(torch.as_tensor(table, dtype=torch.float32)))
            model.observation_logits.copy_((2 * obs_map - 1) * torch.logit(1 - flip))
        return model

    # -- the generative program ------------------------------------------------------------
    def log_prior(self) -> torch.Tensor:
        """:math:`\\log p(c)` for every configuration, ``(2**n,)``."""
        z = self.configurations
        total = torch.zeros(z.shape[0], device=z.device)
        for i, (logits, pa) in enumerate(zip(self.cpd_logits, self.parents)):
            eta = logits[tuple(z[:, p].long() for p in pa)] if pa else logits.expand(z.shape[0])
            total = total + torch.where(z[:, i] > 0, F.logsigmoid(eta), F.logsigmoid(-eta))
        return total

    def check_data(self, x, observed=None) -> None:
        check_binary(f"{type(self).__name__}: x", x, self.num_observed)
        if observed is not None:
            check_binary(f"{type(self).__name__}: observed", observed, self.num_observed)
            if observed.shape[0] != x.shape[0]:
                raise ValueError(f"{type(self).__name__}: observed has {observed.shape[0]} rows,"
                                 f" x has {x.shape[0]}")

    def model(self, x, observed=None, num_data=None):
        prior = dist.Categorical(logits=self.log_prior())
        with self.data_plate(x.shape[0], num_data, x.device):
            c = pyro.sample("z", prior, infer={"enumerate": "parallel"})
            likelihood = dist.Bernoulli(logits=self.observation_logits[c])
            if observed is not None:
                likelihood = likelihood.mask(observed.bool())
            pyro.sample("x", likelihood.to_event(1), obs=x)

    def guide(self, x, observed=None, num_data=None):
        """Empty: ``z`` is enumerated in the model, so the ELBO is the exact likelihood."""

    # -- exact inference -------------------------------------------------------------------
    @torch.no_grad()
    def log_posterior(self, x, observed=None) -> torch.Tensor:
        """:math:`\\log p(c \\mid x_{\\text{observed}})` for every configuration, ``(N, 2**n)``
        (configuration ``c``'s concepts are ``c``'s bits, concept 0 most significant), from
        Pyro's exact enumeration (``TraceEnum_ELBO.compute_marginals``)."""
        self.check_data(x, observed)
        device = self.device
        x = x.to(device)
        observed = None if observed is None else observed.to(device)
        marginals = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(
            self.model, self.guide, x, observed)
        return torch.log_softmax(marginals["z"].logits, -1).expand(x.shape[0], -1)

    @torch.no_grad()
    def log_likelihood(self, x, observed=None) -> torch.Tensor:
        """:math:`\\log p(x_{\\text{observed}})` per data point, ``(N,)``, exact."""
        self.check_data(x, observed)
        logits = self.observation_logits.to(x.device)
        per_bit = -F.binary_cross_entropy_with_logits(
            logits[:, None, :].expand(-1, x.shape[0], -1), x.expand(logits.shape[0], -1, -1),
            reduction="none")  # (2**n, N, D)
        if observed is not None:
            per_bit = per_bit * observed
        joint = per_bit.sum(-1) + self.log_prior()[:, None]
        return torch.logsumexp(joint, 0)

    def concept_posterior(self, x, observed=None) -> torch.Tensor:
        """:math:`P(z_i = 1 \\mid x_{\\text{observed}})`, ``(N, n)``."""
        return self.log_posterior(x, observed).exp() @ self.configurations

    def encode(self, x, observed=None) -> torch.Tensor:
        """Posterior mean of the concepts, ``(N, n)`` (= :meth:`concept_posterior`)."""
        return self.concept_posterior(x, observed).to(x.device)


def random_mask(num_samples: int, num_observed: int, num_masked: int = 1,
                generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``(N, D)`` float mask with exactly ``num_masked`` ones per row (uniform positions)."""
    if not 1 <= num_masked < num_observed:
        raise ValueError(f"num_masked must lie in [1, num_observed={num_observed}), "
                         f"got {num_masked}")
    scores = torch.rand(num_samples, num_observed, generator=generator, device=device)
    idx = scores.topk(num_masked, dim=1).indices
    return torch.zeros(num_samples, num_observed, device=device).scatter_(1, idx, 1.0)


class NextTokenPredictor(nn.Module):
    """Masked next-token predictor of seed 004, Appendix G.1.

    ``[x * (1 - mask), mask]`` → linear embedding → ``num_layers`` × (Linear, BatchNorm1d,
    ReLU) with ``hidden`` units → linear head with one logit per observed variable; the
    loss (:func:`pyrocrl.inference.fit_next_token`) is the cross-entropy of the masked
    variables. :meth:`features` returns the last hidden layer, the representation
    :math:`f(x)` of Theorem 3.1.
    """

    def __init__(self, num_observed: int, hidden: int = 256, num_layers: int = 3):
        super().__init__()
        for name, value in (("num_observed", num_observed), ("hidden", hidden),
                            ("num_layers", num_layers)):
            check_positive_int("NextTokenPredictor", name, value)
        if num_observed < 2:
            raise ValueError("NextTokenPredictor: num_observed must be >= 2 (one is masked)")
        self.num_observed = num_observed
        self.embedding = nn.Linear(2 * num_observed, hidden)
        layers = []
        for _ in range(num_layers):
            layers += [nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, num_observed)

    def check_input(self, x, mask=None) -> None:
        check_binary("NextTokenPredictor: x", x, self.num_observed)
        if mask is not None:
            check_binary("NextTokenPredictor: mask", mask, self.num_observed)
            if mask.shape[0] != x.shape[0]:
                raise ValueError(f"NextTokenPredictor: mask has {mask.shape[0]} rows, x has "
                                 f"{x.shape[0]}")

    def hidden(self, x, mask):
        return self.body(self.embedding(torch.cat([x * (1 - mask), mask], -1)))

    def forward(self, x, mask):
        """Logits ``(N, D)`` of every variable given the unmasked ones."""
        return self.head(self.hidden(x, mask))

    @torch.no_grad()
    def features(self, x, mask=None) -> torch.Tensor:
        """:math:`f(x)`, ``(N, hidden)``, in eval mode; ``mask=None`` masks nothing."""
        self.check_input(x, mask)
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            mask = torch.zeros_like(x) if mask is None else mask
            out = self.hidden(x.to(device), mask.to(device))
        finally:
            self.train(was_training)
        return out.to(x.device)
