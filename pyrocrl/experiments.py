"""End-to-end recipes shared by the CLI, the benchmarks and the recovery tests, so each
number is produced by one piece of code: simulate -> fit -> score on held-out data."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyro
import torch

from pyrocrl import diagnostics, models
from pyrocrl._checks import check_positive_int
from pyrocrl.inference import (
    FitResult,
    fit_restarts,
    fit_svi,
    initialize_contrastive,
    initialize_linear,
)
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
                "device": self.fit.device,
                **{key: self.fit.metrics[key] for key in
                   ("restart_validation_loss", "chosen_restart", "start_validation_loss",
                    "chosen_start", "dropped_starts") if key in self.fit.metrics}}


#: Training settings for IFlow's exact likelihood (the step size decays to a tenth over the
#: run). B1: 64 starts side by side x 20000 steps with these reach 1.000 on each of seeds
#: 0-5 and 0.974 on seed 6 (``model_options={"num_starts": 64}``); 5 starts one after
#: another 0.938 on seeds 0-4.
IFLOW_FIT = dict(batch_size=1024, learning_rate=1e-2, learning_rate_decay=0.1, log_every=200)

#: Training settings for the sequence models (B3-B5 and the temporal recovery tests), chosen
#: on the training ELBO only.
TEMPORAL_FIT = dict(batch_size=64, learning_rate=2e-3, log_every=200)

#: Models :func:`fit_and_score` can build; the i.i.d. ones see sequences as single frames.
IID_MODELS = ("ivae", "vae", "iflow")
SEQUENCE_MODELS = ("temporal_vae", "dmm")


def build_model(name: str, train: Dataset, **options) -> models.LatentVariableModel:
    """A fresh model ``name`` sized for ``train``: ``"ivae"``, ``"vae"``, ``"iflow"``,
    ``"temporal_vae"`` or ``"dmm"``. The latent dimension defaults to the true one and the
    lag and number of domains to ``train.info``'s; ``latent_dim=``/``lag=`` in ``options``
    override them."""
    obs_dim = train.x.shape[-1]
    latent_dim = options.pop("latent_dim", train.z.shape[-1])
    lag = options.pop("lag", int(train.info.get("lag", 1)))
    num_domains = int(train.info.get("num_domains", 1))
    if name == "ivae":
        return models.IVAE(obs_dim, latent_dim, num_domains, **options)
    if name == "vae":
        return models.VAE(obs_dim, latent_dim, **options)
    if name == "iflow":
        return models.IFlow(obs_dim, latent_dim, num_domains, **options)
    if name == "temporal_vae":
        return models.TemporalVAE(obs_dim, latent_dim, lag=lag, num_domains=num_domains,
                                  **options)
    if name == "dmm":
        return models.DeepMarkovModel(obs_dim, latent_dim, **options)
    raise ValueError(f"model must be one of {IID_MODELS + SEQUENCE_MODELS}, got {name!r}")


def _model_inputs(name: str, ds: Dataset):
    """``(x, u)`` as model ``name`` sees ``ds``: sequences are cut into frames (each frame
    keeps its sequence's domain) for the i.i.d. models."""
    if name in IID_MODELS and ds.x.ndim == 3:
        seq_len = ds.x.shape[1]
        u = None if ds.u is None else ds.u.repeat_interleave(seq_len)
        return ds.x.reshape(-1, ds.x.shape[-1]), u
    return ds.x, ds.u


INITS = ("random", "linear", "contrastive")


def _check_init(init, caller: str) -> None:
    if init not in INITS:
        raise ValueError(f"{caller}: init must be one of {INITS}, got {init!r}")


def _initialize(model, init: str, x, u, init_steps: int, seed: int, device, batch_size: int,
                restarts: int = 1, sparsity: float = 0.0, validation=None, **contrastive):
    """Start ``model`` as ``init`` says (``"random"``: leave it), counted in the fit time;
    returns the initializer's :class:`~pyrocrl.inference.FitResult` (``None`` for random).
    ``validation``: held-out ``(x, u)`` on which contrastive restarts are ranked;
    ``contrastive``: further options of
    :func:`~pyrocrl.inference.initialize_contrastive`."""
    if init == "linear":
        return initialize_linear(model, x, u, num_steps=init_steps, seed=seed, device=device,
                                 batch_size=batch_size)
    if init == "contrastive":
        return initialize_contrastive(model, x, u, num_steps=init_steps, seed=seed,
                                      device=device, restarts=restarts, sparsity=sparsity,
                                      validation=validation, **contrastive)
    return None


def fit_and_score(name: str, train: Dataset, test: Dataset, num_steps: int, seed: int = 0,
                  device: str = "auto", progress: bool = False, model_options=None,
                  init: str = "random", init_steps: int = 3000, restarts: int = 1,
                  **fit_options) -> Run:
    """Fit a fresh model ``name`` (see :func:`build_model`) on ``train`` (initialized from
    ``seed``) and score its posterior means on the held-out ``test`` split (every frame of
    every sequence). No ground truth is used for any choice.

    ``init="linear"`` starts the model at the linear ICA solution of ``(x, u)``
    (:func:`~pyrocrl.inference.initialize_linear`, ``init_steps`` regression steps, counted in
    the fit time) instead of at random; ``init="contrastive"`` starts it at the environment
    classifier of :func:`~pyrocrl.inference.initialize_contrastive` (``init_steps``
    classification steps; a poor start for IVAE, whose factorized prior makes it
    time-contrastive learning — see there). ``fit_options`` go to
    :func:`~pyrocrl.inference.fit_svi`; a ``validation`` given as a :class:`Dataset` split is
    passed as the model sees it (frames for the i.i.d. models, like ``train``).

    ``restarts > 1`` fits that many fresh models (each with its own start) on 90 % of
    ``train`` and keeps the one with the best loss on the other 10 %
    (:func:`~pyrocrl.inference.fit_restarts`); the time of all restarts is counted.
    ``model_options={"num_starts": K}`` (``"iflow"``) trains K starts side by side in one
    model on 90 % of ``train`` and keeps the one with the best likelihood on the other 10 %
    (:meth:`~pyrocrl.models.IFlow.select_start`; ``init`` must be ``"random"``); a start that
    diverged in training is dropped (``fit.metrics["dropped_starts"]``) and never kept."""
    _check_init(init, "fit_and_score")
    check_positive_int("fit_and_score", "restarts", restarts)
    pyro.set_rng_seed(seed)
    defaults = (TEMPORAL_FIT if name in SEQUENCE_MODELS else
                IFLOW_FIT if name == "iflow" else IID_FIT)
    options = {**defaults, **fit_options}
    if isinstance(options.get("validation"), Dataset):
        options["validation"] = _model_inputs(name, options["validation"])
    num_starts = (model_options or {}).get("num_starts", 1)
    if num_starts > 1 and (restarts > 1 or init != "random"):
        raise ValueError(f"fit_and_score: model_options num_starts={num_starts} trains random "
                         f"starts side by side; it takes neither restarts={restarts} nor "
                         f"init={init!r}")
    if (restarts > 1 or num_starts > 1) and options.get("validation") is not None:
        raise ValueError("fit_and_score: restarts > 1 or num_starts > 1 holds out its own "
                         "validation split; do not pass validation")
    t0 = time.perf_counter()
    if restarts > 1 or num_starts > 1:
        fit_part, held_out = train.split(0.9, seed=seed)
        fit_inputs, held_out_inputs = _model_inputs(name, fit_part), _model_inputs(name, held_out)
    if restarts > 1:
        def build():  # fit_restarts seeds torch with seed + r: each start its own init
            fresh = build_model(name, train, **dict(model_options or {}))
            _initialize(fresh, init, *fit_inputs, init_steps, torch.initial_seed(), device,
                        options["batch_size"])
            return fresh

        model, result = fit_restarts(build, *fit_inputs, validation=held_out_inputs,
                                     restarts=restarts, num_steps=num_steps, seed=seed,
                                     device=device, progress=progress, **options)
    elif num_starts > 1:  # IFlow's starts side by side, the best on held_out kept
        model = build_model(name, train, **dict(model_options))
        result = fit_svi(model, *fit_inputs, num_steps=num_steps, seed=seed, device=device,
                         progress=progress, **options)
        result.metrics["dropped_starts"] = model.dropped_starts  # diverged in training
        scores = model.select_start(*held_out_inputs)
        result.metrics["start_validation_loss"] = (-scores).tolist()
        result.metrics["chosen_start"] = [int(scores.argmax())]
    else:
        model = build_model(name, train, **dict(model_options or {}))
        _initialize(model, init, *_model_inputs(name, train), init_steps, seed, device,
                    options["batch_size"])
        result = fit_svi(model, *_model_inputs(name, train), num_steps=num_steps, seed=seed,
                         device=device, progress=progress, **options)
    result.time_s = time.perf_counter() - t0
    z_est = model.encode(*_model_inputs(name, test)).cpu().numpy().reshape(test.z.shape)
    return Run(
        name=name, model=model, fit=result,
        mcc=diagnostics.mcc(test.z, z_est),
        mcc_spearman=diagnostics.mcc(test.z, z_est, method="spearman"),
        affine_r2=diagnostics.affine_r2(test.z, z_est),
        z_est=z_est,
    )


#: Next-token training for the discrete-concept experiments (seed 004, G.1: Adam, lr 1e-3).
CONCEPT_FIT = dict(num_steps=1500, batch_size=256, learning_rate=1e-3)


def concept_experiment(ds: Dataset, seed: int = 0, device: str = "auto", num_pairs: int = 2000,
                       keep_predictor: bool = False, **fit_options) -> dict:
    """Seed 004's check of Theorem 3.1 / Corollary 4.3 on one simulated data set.

    Splits ``ds`` 50/50, trains a :class:`~pyrocrl.models.NextTokenPredictor` on the first
    half and scores features of the held-out half (nothing masked): linear-probe accuracy per
    concept; the Bayes accuracy of the exact posterior (the ceiling no probe can beat);
    held-out R² of features -> exact log p(z | x) (ridge 1e-3), beside two nulls: an untrained
    network of the same architecture and the raw observations; and the alignment of probe
    weights with counterfactual concept directions (Corollary 4.3). No ground truth is used
    to choose anything.
    """
    from pyrocrl.inference import fit_next_token
    from pyrocrl.simulate import counterfactual_pairs

    train, test = ds.split(0.5, seed=seed)
    num_observed = ds.x.shape[1]
    pyro.set_rng_seed(seed)
    untrained = models.NextTokenPredictor(num_observed)
    predictor = models.NextTokenPredictor(num_observed)
    untrained.load_state_dict(predictor.state_dict())
    options = {**CONCEPT_FIT, **fit_options}
    result = fit_next_token(predictor, train.x, seed=seed, device=device, progress=False,
                            **options)
    truth = models.DiscreteConceptModel.from_dataset(ds)
    log_post = truth.log_posterior(test.x)
    bayes = ((truth.encode(test.x) > 0.5).float() == test.z).float().mean(0)
    features = predictor.features(test.x)
    x_a, x_b, concept = counterfactual_pairs(ds, num_pairs, seed=seed + 1000)
    alignment = diagnostics.concept_alignment(predictor.features(x_a), predictor.features(x_b),
                                              concept)
    probe = diagnostics.probe_accuracy(features, test.z)
    row = {
        "seed": seed, "num_concepts": ds.z.shape[1], "num_observed": num_observed,
        "distinct_fraction": ds.info["distinct_fraction"],
        "probe_accuracy": float(probe), "probe_per_concept": list(map(float, probe.per_concept)),
        "bayes_accuracy": float(bayes.mean()),
        "untrained_probe_accuracy": float(diagnostics.probe_accuracy(untrained.features(test.x),
                                                                     test.z)),
        "posterior_r2": float(diagnostics.posterior_linearity(features, log_post, alpha=1e-3)),
        "untrained_posterior_r2": float(diagnostics.posterior_linearity(
            untrained.features(test.x), log_post, alpha=1e-3)),
        "raw_x_posterior_r2": float(diagnostics.posterior_linearity(test.x, log_post,
                                                                    alpha=1e-3)),
        "alignment_diagonal": float(alignment.diagonal_mean),
        "alignment_off_diagonal": float(alignment.off_diagonal_mean_abs)
        if ds.z.shape[1] > 1 else 0.0,
        "masked_accuracy": result.metrics["accuracy"][-1],
        "fit_seconds": result.time_s, "device": result.device,
    }
    if keep_predictor:
        row["predictor"] = predictor
        row["test"] = test
    return row


#: The four SAEs compared in B11 and the concepts tutorial (seed 004, H.3), sized by
#: ``d_in`` and ``d_sae``. Coefficients are ours (the seed's values were lost in the text);
#: the L1 penalties are chosen for activations scaled to E||x||^2 = d_in.
def build_saes(d_in: int, d_sae: int, k: int = 8) -> dict:
    return {
        "top_k": models.TopKSAE(d_in, d_sae, k),
        "batch_top_k": models.BatchTopKSAE(d_in, d_sae, k),
        "l1_annealing": models.L1AnnealingSAE(d_in, d_sae, sparsity_coefficient=1.0),
        "structured": models.StructuredSAE(d_in, d_sae, rank=4, low_rank_coefficient=1.0,
                                           sparsity_coefficient=1.0),
    }


def scale_activations(train, *others):
    """Scale every set by the one factor that makes E||x||^2 = d_in on ``train``."""
    factor = (train.shape[1] / train.pow(2).sum(1).mean()).sqrt()
    return (train * factor, *(o * factor for o in others))


def compare_saes(train_acts, test_acts, targets, transform: str = "exp", k: int = 8,
                 d_sae: int | None = None, seed: int = 0, true_atoms=None, device="auto",
                 **fit_options) -> dict:
    """Train :func:`build_saes` on ``train_acts`` and score their codes of ``test_acts``
    against ``targets`` (probe logits or true codes, ``(N_test, n)``) with
    :func:`~pyrocrl.diagnostics.sae_concept_correlation`; with ``true_atoms``, also the
    fraction of atoms recovered (|cos| >= 0.9). Returns one dict of numbers per SAE."""
    from pyrocrl.inference import fit_sae

    d_in = train_acts.shape[1]
    d_sae = d_sae or 2 * d_in
    rows = {}
    # Offset the init seed: a simulator seeded like the SAE would hand it the true dictionary.
    pyro.set_rng_seed(seed + 1000)
    for name, sae in build_saes(d_in, d_sae, k).items():
        fit = fit_sae(sae, train_acts, seed=seed, device=device, progress=False,
                      **fit_options)
        with torch.no_grad():
            test = test_acts.to(fit.device)
            codes = sae.encode(test).cpu()
            mse = float((sae(test).cpu() - test_acts).pow(2).mean()
                        / test_acts.var(0).sum() * test_acts.shape[1])
        score = diagnostics.sae_concept_correlation(codes, targets, transform=transform)
        num_samples = fit.num_steps * min(fit_options.get("batch_size", 1024), len(train_acts))
        rows[name] = {
            "mean_pcc": float(score), "coverage": float(score.coverage),
            "per_concept": [float(v) for v in score.per_concept],
            "fraction_of_variance_unexplained": mse, "l0": fit.metrics["l0"][-1],
            "dead_fraction": fit.metrics["dead_fraction"][-1],
            "samples_per_second": num_samples / fit.time_s, "fit_seconds": fit.time_s,
            "device": fit.device,
        }
        if true_atoms is not None:
            rows[name]["atoms_recovered"] = float(diagnostics.dictionary_recovery(
                true_atoms, sae.atoms.detach().cpu()))
    return rows


#: LatentCausalVAE training (B7, the latent-DAG tutorial and the slow tests).
LATENT_DAG_FIT = dict(batch_size=256, learning_rate=1e-3, log_every=200)


def fit_latent_causal(train: Dataset, test: Dataset, num_steps: int, seed: int = 0,
                      rounds: int = 6, finetune_steps: int = 2000, device: str = "auto",
                      progress: bool = False, init: str = "random", init_steps: int = 3000,
                      init_restarts: int = 1, init_sparsity: float = 0.0,
                      init_select: str = "agreement", init_linear_steps: int = 0,
                      init_linear_restarts: int | None = None, keep_start_graph: bool | None = None,
                      reclassify_steps: int | None = None, reclassify_rounds: int = 1,
                      **model_options) -> dict:
    """Fit a :class:`~pyrocrl.models.LatentCausalVAE` with the data set's known targets:
    ELBO training for ``num_steps``, then ``rounds`` times :meth:`disentangle` on the
    training data, with ``finetune_steps`` of ELBO training between rounds (each ELBO pass
    sharpens the latents the next round disentangles; on B7's linear mixing, seeds 0-19, MCC
    by target rose from 0.952 after 3 rounds to 0.972 after 6, the median SHD fell from 1.5
    to 1 and the exact graph went from 6 to 9 of 20 seeds, so 6 is the default;
    ``benchmarks/NOTES.md``). Scores the held-out posterior means
    after every stage — MCC, MCC with latents matched by the known targets (no permutation
    search), affine R², each latent's
    :func:`~pyrocrl.diagnostics.intervention_leakage` — and the learned graph (SHD, F1)
    against the truth. Nothing is
    chosen with ground truth: the returned model is the last stage's. ``init="linear"``
    starts the networks at the linear ICA solution of ``(x, u)`` (see :func:`fit_and_score`);
    ``init="contrastive"`` starts the networks *and the SEM prior* at the environment
    classifier of :func:`~pyrocrl.inference.initialize_contrastive` (``init_steps``
    classification steps, an L1 penalty ``init_sparsity`` on the SEM's weights; of
    ``init_restarts``, the one that agrees best with the others, or with
    ``init_select="validation"`` the one with the lowest cross-entropy on 10 % of ``train``
    held out from the classification; ``init_linear_steps`` > 0 adds the linear first stage
    with ``init_linear_restarts`` affine classifiers, default ``init_restarts``), and that
    start is scored too (stage ``"contrastive"``, with each restart's agreement, final
    cross-entropy, held-out cross-entropy where measured, the linear stage's cross-entropies
    and kept restarts where run, the restarts dropped for diverging, and the kept restart).
    ``keep_start_graph`` (default: ``True`` for ``init="contrastive"``, which it needs) then
    holds the SEM's support at the start's graph for the rest of the fit
    (:meth:`~pyrocrl.models.LatentCausalVAE.restrict_graph`): on B7 through the 3-layer
    mixing, seeds 0-9, it raised MCC on every seed and cut the median SHD from 6 to 2.5.
    ``reclassify_steps`` > 0 (with ``init="contrastive"``) then starts the classifier again,
    from the ELBO stage's encodings of ``train`` (label-free): a fresh model, restricted to
    the ELBO stage's graph where ``keep_start_graph``, is started by
    :func:`~pyrocrl.inference.initialize_contrastive` with ``start_at`` those encodings (its
    ``start_steps``, ``prior_steps`` and ``regression_steps`` at most ``init_steps``: 3000,
    2000 and 3000 from ``init_steps`` = 3000 on) and ``reclassify_steps`` classification
    steps (stage ``"reclassified"``), then trained for ``finetune_steps`` ELBO steps (stage
    ``"reclassified_elbo"``) before any rounds; the returned model is that one. The default,
    ``None``, is ``min(2500, init_steps)`` after the contrastive start and 0 otherwise. On B7
    through the 3-layer mixing (``reclassify_steps=2500``, seeds 0-19) MCC by target rose by
    0.026 ± 0.037 (on 16 of 20 seeds; 0.025 on seeds 0-9, where it was chosen, and 0.026 on
    fresh seeds 10-19) and the median SHD fell from 3 to 2, at about 1.35x the fit time
    (seeds 0-9); on the linear mixing (seeds 0-9) by 0.016 ± 0.041 (7 of 10), the SHD lower
    on one seed and higher on none (README, ``benchmarks/NOTES.md``). ``reclassify_rounds``
    repeats the second classification and its ELBO steps, each round starting from the
    previous round's encodings and graph (stages ``"reclassified2"``,
    ``"reclassified2_elbo"``, ...). A second round raised MCC by target on all of seeds 0-9
    (+0.011 ± 0.008) but not on fresh seeds 10-19 (−0.011 ± 0.029, 5 up, 5
    down; the worst starts lost most), so the default is one. ``reclassify_steps``
    (resolved) and ``reclassify_rounds`` are in the result.
    """
    _check_init(init, "fit_latent_causal")
    if keep_start_graph is None:
        keep_start_graph = init == "contrastive"
    if keep_start_graph and init != "contrastive":
        raise ValueError(f"fit_latent_causal: keep_start_graph=True needs init='contrastive' "
                         f"(the start whose SEM prior gives the graph), got init={init!r}")
    if reclassify_steps is None:
        reclassify_steps = min(2500, init_steps) if init == "contrastive" else 0
    if not (isinstance(reclassify_steps, int) and reclassify_steps >= 0):
        raise ValueError(f"fit_latent_causal: reclassify_steps must be an int >= 0, got "
                         f"{reclassify_steps!r}")
    check_positive_int("fit_latent_causal", "reclassify_rounds", reclassify_rounds)
    if reclassify_rounds > 1 and not reclassify_steps:
        raise ValueError(f"fit_latent_causal: reclassify_rounds={reclassify_rounds} needs "
                         f"reclassify_steps > 0 (the second classification it repeats)")
    if reclassify_steps and init != "contrastive":
        raise ValueError(f"fit_latent_causal: reclassify_steps > 0 needs init='contrastive', "
                         f"got init={init!r}")
    if init_select not in ("agreement", "validation"):
        raise ValueError(f"fit_latent_causal: init_select must be 'agreement' or 'validation', "
                         f"got {init_select!r}")
    n, num_envs = train.z.shape[1], int(train.info["num_envs"])
    pyro.set_rng_seed(seed)

    def new_model():  # the first model and each second classification's fresh one
        return models.LatentCausalVAE(train.x.shape[1], n, num_envs,
                                      targets=train.info["targets"], **model_options)

    model = new_model()
    options = dict(device=device, progress=progress, **LATENT_DAG_FIT)
    t0 = time.perf_counter()
    fit_part, validation = train, None
    if init == "contrastive" and init_restarts > 1 and init_select == "validation":
        fit_part, held_out = train.split(0.9, seed=seed)
        validation = (held_out.x, held_out.u)
    linear_stage = dict(linear_steps=init_linear_steps,
                        linear_restarts=init_linear_restarts) if init_linear_steps else {}
    start = _initialize(model, init, fit_part.x, fit_part.u, init_steps, seed, device,
                        options["batch_size"], init_restarts, init_sparsity, validation,
                        **linear_stage)
    stages = {}

    def score(stage):
        z_est = model.encode(test.x, test.u).cpu().numpy()
        graph = model.graph()
        matched = diagnostics.mcc(test.z, z_est)
        metrics = diagnostics.edge_metrics(train.graph, graph)
        stages[stage] = {"mcc": float(matched),
                         # latent j is the one intervened on in environment j: no matching
                         "mcc_by_target": float(np.abs(np.diag(matched.correlation)).mean()),
                         "affine_r2": float(diagnostics.affine_r2(test.z, z_est)),
                         # per latent: |corr| with true non-descendants where intervened on
                         "leakage": diagnostics.intervention_leakage(
                             test.z, z_est, test.u, train.info["targets"],
                             train.graph).tolist(),
                         "shd": float(diagnostics.shd(train.graph, graph)),
                         "f1": float(metrics.f1), "graph": graph.tolist()}

    if init == "contrastive":
        score("contrastive")
        stages["contrastive"].update({key: start.metrics[key] for key in (
            "restart_agreement", "restart_loss", "restart_validation_loss",
            "chosen_restart", "linear_loss", "linear_kept", "dropped_restarts")
            if key in start.metrics})
        if keep_start_graph:
            model.restrict_graph(model.graph())
    fit = fit_svi(model, train.x, train.u, num_steps=num_steps, seed=seed, **options)
    score("elbo")
    for turn in range(1, (reclassify_rounds if reclassify_steps else 0) + 1):
        latents, graph = model.encode(train.x, train.u), model.graph()
        model = new_model()
        if keep_start_graph:
            model.restrict_graph(graph)
        initialize_contrastive(model, train.x, train.u, num_steps=reclassify_steps,
                               seed=seed + 1000 * turn, device=device, start_at=latents,
                               start_steps=min(3000, init_steps),
                               prior_steps=min(2000, init_steps),
                               regression_steps=min(3000, init_steps))
        stage = "reclassified" if turn == 1 else f"reclassified{turn}"
        score(stage)
        fit = fit_svi(model, train.x, train.u, num_steps=finetune_steps,
                      seed=seed + 1000 * turn, **options)
        score(f"{stage}_elbo")
    for r in range(1, rounds + 1):
        if r > 1:
            fit_svi(model, train.x, train.u, num_steps=finetune_steps, seed=seed + r, **options)
        model.disentangle(train.x, train.u)
        score(f"round{r}")
    final = stages[f"round{rounds}"] if rounds else stages[list(stages)[-1]]
    return {"seed": seed, **{k: v for k, v in final.items() if k != "graph"},
            "reclassify_steps": reclassify_steps, "reclassify_rounds": reclassify_rounds,
            "stages": stages,
            "fit_seconds": time.perf_counter() - t0, "device": fit.device, "model": model}


def fit_factor_analysis(train: Dataset, test: Dataset, anchors=None, seed: int = 0,
                        num_steps: int = 300) -> tuple:
    """MAP factor analysis by SVI (full batch, Adam 0.05; B8 and tutorial 11): returns the
    model and the held-out factor estimates."""
    pyro.set_rng_seed(seed)  # the initial loadings
    fa = models.FactorAnalysis(train.x.shape[1], train.z.shape[1], anchors=anchors)
    fit_svi(fa, train.x, num_steps=num_steps, batch_size=None, learning_rate=0.05, seed=seed,
            progress=False)
    return fa, fa.encode(test.x).cpu().numpy()
