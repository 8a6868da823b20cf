import networkx as nx
import numpy as np
import pyro
import pytest
import torch

from pyrocrl.experiments import fit_latent_causal
from pyrocrl.inference import fit_svi
from pyrocrl.models import LatentCausalVAE
from pyrocrl.simulate import latent_dag


def small(seed=0, **kwargs):
    return latent_dag(3, graph="chain", samples_per_env=200, obs_dim=6, seed=seed, **kwargs)


def test_sites_plate_and_encode_shapes():
    ds = small()
    model = LatentCausalVAE(6, 3, 4)
    trace = pyro.poutine.trace(model.model).get_trace(ds.x[:10], ds.u[:10])
    assert trace.nodes["z"]["value"].shape == (10, 3)
    assert trace.nodes["x"]["value"].shape == (10, 6)
    assert "data" in [f.name for f in trace.nodes["z"]["cond_indep_stack"]]
    assert "graph_penalty" in trace.nodes
    assert model.encode(ds.x, ds.u).shape == (len(ds), 3)


def test_perfect_intervention_cuts_the_targets_column_and_sets_its_mechanism():
    model = LatentCausalVAE(6, 3, 4, targets=[-1, 0, 1, 2])
    with torch.no_grad():
        model.weights.copy_(torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]))
        model.target_loc.copy_(torch.tensor([0.0, 3.0, -1.0, 2.0]))
    weights, bias, scale = model.env_parameters()
    assert torch.equal(weights[0], model.adjacency)  # observational: untouched
    assert torch.all(weights[2][:, 1] == 0) and torch.equal(weights[2][:, 2], weights[0][:, 2])
    assert bias[2, 1] == -1.0 and bias[2, 0] == model.bias[0]
    # the prior of environment 2 is the SEM with latent 1's parents cut
    z = torch.randn(5, 3)
    prior = model.prior(torch.full((5,), 2), z)
    w = weights[2]
    expected = torch.distributions.Normal(z @ w + bias[2], scale[2]).log_prob(z).sum(-1)
    assert torch.allclose(prior.log_prob(z), expected, atol=1e-5)  # DAG: log|det| = 0


def test_acyclicity_penalty_is_zero_exactly_on_dags():
    model = LatentCausalVAE(6, 3, 4)
    with torch.no_grad():
        model.weights.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
        assert abs(float(model.acyclicity_penalty())) < 1e-6
        model.weights[2, 0] = 0.5
        assert float(model.acyclicity_penalty()) > 0.1


def test_graph_is_always_a_dag_and_thresholded():
    model = LatentCausalVAE(6, 3, 4)
    with torch.no_grad():
        model.weights.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.9, 0.01, 0.0]]))
    graph = model.graph(threshold=0.05)
    assert nx.is_directed_acyclic_graph(nx.DiGraph(graph != 0))
    assert graph[2, 1] == 0  # below threshold (standardized)


def test_bad_input():
    with pytest.raises(ValueError, match="targets"):
        LatentCausalVAE(6, 3, 4, targets=[-1, 0, 1, 3])
    with pytest.raises(ValueError, match="one entry per environment"):
        LatentCausalVAE(6, 3, 4, targets=[-1, 0, 1])
    with pytest.raises(ValueError, match="num_envs = latent_dim \\+ 1"):
        LatentCausalVAE(6, 3, 3)
    with pytest.raises(ValueError, match="interventions"):
        LatentCausalVAE(6, 3, 4, interventions="hard")
    model = LatentCausalVAE(6, 3, 4)
    ds = small()
    with pytest.raises(ValueError, match=r"u must take values in \[0, num_domains=4\)"):
        fit_svi(model, ds.x, ds.u + 1, num_steps=1, progress=False)
    with pytest.raises(ValueError, match="u is required"):
        model.encode(ds.x)
    with pytest.raises(ValueError, match="obs_dim=6"):
        model.encode(ds.x[:, :5], ds.u)


def test_disentangle_is_exact_on_a_linear_encoder():
    """If the encoder returns a linear map of the observations (here: of the true latents,
    as the mixing is linear), `disentangle` undoes that map: the latents come back matched
    to their targets and the graph is the true one."""
    ds = latent_dag(3, graph="chain", samples_per_env=20_000, obs_dim=3, mixing="linear",
                    seed=4)
    model = LatentCausalVAE(3, 3, 4, targets=ds.info["targets"])
    encoder = torch.nn.Linear(3 + 4, 6)  # input (x, one_hot(u)) -> (loc, raw scale)
    with torch.no_grad():
        encoder.weight.zero_()
        encoder.weight[:3, :3] = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
        encoder.bias.zero_()
        encoder.bias[3:] = -7.0
    model.encoder = encoder
    model.disentangle(ds.x, ds.u)
    z_est = model.encode(ds.x, ds.u)
    corr = [abs(np.corrcoef(ds.z[:, j], z_est[:, j])[0, 1]) for j in range(3)]
    assert min(corr) > 0.999
    assert (model.graph() != 0).astype(int).tolist() == (ds.graph != 0).astype(int).tolist()


def test_disentangle_equals_linear_causal_disentanglement_of_the_encodings():
    """With any encoder (here an untrained nonlinear one), the latents after `disentangle`
    are the estimator's latents of the encodings it was given, reordered by the known
    targets: the model adds no error of its own to the estimator's."""
    from pyrocrl.models import linear_causal_disentanglement

    ds = latent_dag(3, graph="chain", samples_per_env=2000, obs_dim=6, seed=1)
    torch.manual_seed(0)
    model = LatentCausalVAE(6, 3, 4, targets=ds.info["targets"])
    before = model.encode(ds.x, ds.u).double().numpy()
    estimate = model.disentangle(ds.x, ds.u)
    after = model.encode(ds.x, ds.u).double().numpy()
    direct = linear_causal_disentanglement(before, ds.u.numpy(), num_latents=3,
                                           observational=0).transform(before)
    corr = np.abs(np.corrcoef(after.T, direct.T)[:3, 3:])
    assert np.allclose(np.sort(corr, axis=1)[:, -1], 1.0, atol=1e-4)  # each one a column
    # our latent j is the estimator's latent intervened on in the environment targeting j
    order = {int(ds.info["targets"][e]): int(t)
             for e, t in zip(estimate.environments, estimate.targets) if t >= 0}
    assert np.argmax(corr, axis=1).tolist() == [order[j] for j in range(3)]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_latents_and_graph_with_linear_mixing(seed):
    """Issue 4's slow-tier check at small scale: 4 latents, one perfect intervention each,
    linear mixing to 8 features, the default recipe (3000 ELBO steps, then 6 disentangle
    rounds). Asserted: MCC (latents matched by their known targets) >= 0.85 and SHD <= 1 on
    each seed. Measured: SHD 0, 0, 1 here (seed 2 had SHD 2 with 3 rounds); over seeds 0-9,
    SHD <= 1 on 8 (benchmarks/NOTES.md)."""
    ds = latent_dag(4, samples_per_env=4000, obs_dim=8, mixing="linear", seed=seed)
    train, test = ds.split(0.8, seed=seed)
    row = fit_latent_causal(train, test, num_steps=3000, seed=seed)
    assert row["mcc_by_target"] >= 0.85 and row["shd"] <= 1, row["stages"]


def test_fit_latent_causal_linear_and_contrastive_starts_run_and_check_init():
    ds = latent_dag(3, samples_per_env=200, obs_dim=4, mixing="linear", seed=0)
    train, test = ds.split(0.8, seed=0)
    row = fit_latent_causal(train, test, num_steps=20, seed=0, rounds=1, init="linear",
                            init_steps=50)
    assert 0.0 <= row["mcc"] <= 1.0 and "elbo" in row["stages"]
    # the contrastive start is scored as a stage of its own, before the ELBO
    row = fit_latent_causal(train, test, num_steps=20, seed=0, rounds=0, init="contrastive",
                            init_steps=50, reclassify_steps=0)
    assert list(row["stages"]) == ["contrastive", "elbo"]
    assert row["mcc"] == row["stages"]["elbo"]["mcc"]  # no rounds: the ELBO stage is final
    # restarts ranked on held-out cross-entropy: the scores and the kept one are recorded
    row = fit_latent_causal(train, test, num_steps=20, seed=0, rounds=0, init="contrastive",
                            init_steps=30, init_restarts=2, init_select="validation",
                            reclassify_steps=0)
    start = row["stages"]["contrastive"]
    scores = start["restart_validation_loss"]
    assert len(scores) == 2 and start["chosen_restart"] == [int(np.argmin(scores))]
    with pytest.raises(ValueError, match=r"fit_latent_causal: init must be one of \('random', "
                                         r"'linear', 'contrastive'\), got 'oracle'"):
        fit_latent_causal(train, test, num_steps=5, init="oracle")
    with pytest.raises(ValueError, match="init_select must be 'agreement' or 'validation', "
                                         "got 'loss'"):
        fit_latent_causal(train, test, num_steps=5, init="contrastive", init_select="loss")


def test_restrict_graph_holds_the_sem_to_the_given_edges():
    model = LatentCausalVAE(6, 3, 4)
    with torch.no_grad():
        model.weights.copy_(torch.tensor([[0.0, 0.8, 0.5], [0.0, 0.0, 0.7], [0.3, 0.0, 0.0]]))
    support = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])  # the chain 0 -> 1 -> 2
    model.restrict_graph(support)
    np.testing.assert_array_equal(model.adjacency.detach().numpy() != 0, support != 0)
    np.testing.assert_array_equal(model.graph(threshold=0.0) != 0, support != 0)
    # ELBO steps cannot grow an edge outside the support, and the mask is saved with the model
    ds = latent_dag(3, samples_per_env=100, obs_dim=6, seed=0)
    fit_svi(model, ds.x, ds.u, num_steps=20, batch_size=64, learning_rate=1e-2, seed=0,
            progress=False)
    assert (model.adjacency.detach().numpy()[support == 0] == 0).all()
    assert (model.adjacency.detach().numpy()[support != 0] != 0).all()
    restored = LatentCausalVAE(6, 3, 4)
    restored.load_state_dict(model.state_dict())
    torch.testing.assert_close(restored.adjacency, model.adjacency)
    with pytest.raises(ValueError, match=r"graph must be \(latent_dim, latent_dim\) = \(3, 3\)"):
        model.restrict_graph(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="graph must be a DAG but has the cycle"):
        model.restrict_graph(np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]]))
    with pytest.raises(ValueError, match="self-loops"):
        model.restrict_graph(np.eye(3))


def test_fit_latent_causal_keeps_the_start_graph():
    """keep_start_graph (the default after the contrastive start): the final graph's edges
    are a subset of the start's; the default is the same fit as keep_start_graph=True."""
    train, test = small().split(0.8, seed=0)
    options = dict(num_steps=30, seed=0, rounds=0, init="contrastive", init_steps=400,
                   reclassify_steps=0)
    row = fit_latent_causal(train, test, **options)
    start = np.array(row["stages"]["contrastive"]["graph"]) != 0
    final = np.array(row["stages"]["elbo"]["graph"]) != 0
    assert start.any() and not (final & ~start).any()
    explicit = fit_latent_causal(train, test, keep_start_graph=True, **options)
    assert explicit["stages"]["elbo"]["graph"] == row["stages"]["elbo"]["graph"]
    assert explicit["mcc"] == row["mcc"]
    with pytest.raises(ValueError, match="keep_start_graph=True needs init='contrastive'"):
        fit_latent_causal(train, test, num_steps=5, keep_start_graph=True)


def test_fit_latent_causal_reclassify_starts_a_second_classifier_from_the_encodings():
    """reclassify_steps: after the ELBO stage a fresh model is started from the encodings,
    inside the ELBO stage's graph, and trained on; its stages are scored and it is returned.
    After the contrastive start it is on by default, min(2500, init_steps) steps."""
    train, test = small().split(0.8, seed=0)
    options = dict(num_steps=30, seed=0, rounds=0, init="contrastive", init_steps=200,
                   finetune_steps=20)
    row = fit_latent_causal(train, test, **options)
    assert row["reclassify_steps"] == 200
    assert list(row["stages"]) == ["contrastive", "elbo", "reclassified", "reclassified_elbo"]
    assert row["mcc"] == row["stages"]["reclassified_elbo"]["mcc"]
    elbo = np.array(row["stages"]["elbo"]["graph"]) != 0
    final = np.array(row["stages"]["reclassified_elbo"]["graph"]) != 0
    assert not (final & ~elbo).any()  # the support stays inside the ELBO stage's graph
    assert np.array_equal(row["model"].graph() != 0, final)
    explicit = fit_latent_causal(train, test, reclassify_steps=200, **options)
    assert explicit["mcc"] == row["mcc"] and explicit["shd"] == row["shd"]
    # a second round starts from the first's encodings: the first round's stages are the
    # same fit, bit for bit, and the support only shrinks
    twice = fit_latent_causal(train, test, reclassify_steps=200, reclassify_rounds=2,
                              **options)
    assert list(twice["stages"])[4:] == ["reclassified2", "reclassified2_elbo"]
    np.testing.assert_equal(twice["stages"]["reclassified_elbo"],  # NaN == NaN here
                            row["stages"]["reclassified_elbo"])
    assert twice["mcc"] == twice["stages"]["reclassified2_elbo"]["mcc"]
    assert not ((np.array(twice["stages"]["reclassified2_elbo"]["graph"]) != 0) & ~final).any()
    with pytest.raises(ValueError, match="reclassify_rounds must be a positive int"):
        fit_latent_causal(train, test, num_steps=5, init="contrastive", reclassify_rounds=0)
    with pytest.raises(ValueError, match="reclassify_rounds=2 needs reclassify_steps > 0"):
        fit_latent_causal(train, test, num_steps=5, init="contrastive", reclassify_steps=0,
                          reclassify_rounds=2)
    assert fit_latent_causal(train, test, num_steps=5, rounds=1)["reclassify_steps"] == 0
    with pytest.raises(ValueError, match="reclassify_steps > 0 needs init='contrastive'"):
        fit_latent_causal(train, test, num_steps=5, reclassify_steps=5)
    with pytest.raises(ValueError, match="reclassify_steps must be an int >= 0"):
        fit_latent_causal(train, test, num_steps=5, init="contrastive", reclassify_steps=-1)


def test_leakage_penalty_is_small_for_the_true_latents_and_large_for_mixed_ones():
    """leakage_penalty on the true latents of a chain 0 -> 1 -> 2 under the true graph is at
    the sampling-noise level; mixing latent 2 into latent 0 (a latent that moves where its
    non-ancestor is intervened on) raises it a hundredfold. Zero before restrict_graph."""
    ds = latent_dag(3, graph="chain", samples_per_env=4000, obs_dim=6, seed=0)
    model = LatentCausalVAE(6, 3, 4, targets=ds.info["targets"], leakage=1.0)
    z, u = torch.as_tensor(ds.z, dtype=torch.float32), ds.u
    assert model.leakage_penalty(z, u).item() == 0.0  # no graph restricted yet
    model.restrict_graph(ds.graph)
    # environment intervening on 1: latent 0 (not a descendant) must not move; on 2: 0 and 1
    targets = ds.info["targets"]
    expected = {-1: [0, 0, 0], 0: [0, 0, 0], 1: [1, 0, 0], 2: [1, 1, 0]}
    assert model.invariant.tolist() == [expected[int(t)] for t in targets]
    clean = model.leakage_penalty(z, u).item()
    leaky = z.clone()
    leaky[:, 0] += 0.5 * z[:, 2]
    assert clean < 0.02 and model.leakage_penalty(leaky, u).item() > 100 * clean
    observational = u == targets.tolist().index(-1)  # a batch without the reference: zero
    assert model.leakage_penalty(leaky[~observational], u[~observational]).item() == 0.0
    # a state dict saved before `invariant` existed loads strictly, with the same pairs
    for restricted in (True, False):
        old = LatentCausalVAE(6, 3, 4, targets=targets)
        if restricted:
            old.restrict_graph(ds.graph)
        state = old.state_dict()
        del state["invariant"]
        fresh = LatentCausalVAE(6, 3, 4, targets=targets, leakage=1.0)
        fresh.load_state_dict(state)
        assert torch.equal(fresh.invariant, old.invariant)
        assert fresh.invariant.any() == restricted
    with pytest.raises(ValueError, match="leakage must be >= 0"):
        LatentCausalVAE(6, 3, 4, leakage=-1.0)
    with pytest.raises(ValueError, match="targets has no -1"):
        LatentCausalVAE(6, 3, 3, targets=[0, 1, 2], leakage=1.0)
    with pytest.raises(ValueError, match="needs an observational environment"):
        LatentCausalVAE(6, 3, 3, targets=[0, 1, 2]).leakage_penalty(z, u.clamp_max(2))
