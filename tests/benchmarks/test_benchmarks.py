"""Every benchmark script runs in its cheap mode, and none is left out."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.stem for p in ROOT.glob("*.py") if not p.stem.startswith("_"))
COVERED = ["concepts", "contrastive_optimum", "factor_analysis", "ivae", "ivae_optimum", "kalman",
           "latent_dag", "margin", "overhead", "sae", "temporal", "temporal_optimum", "throughput"]


def test_every_benchmark_is_covered():
    assert SCRIPTS == sorted(COVERED), "add new benchmark scripts to COVERED"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", COVERED)
def test_benchmark_quick_mode(name, tmp_path):
    load(name).main(["--quick", "--out", str(tmp_path)])
    result = json.loads((tmp_path / f"{name}_quick.json").read_text())
    assert result["machine"]["cores"] >= 1 and result["benchmark"] == f"{name}_quick"


def test_latent_dag_contrastive_variant_writes_its_own_file(tmp_path):
    load("latent_dag").main(["--quick", "--init", "contrastive", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "latent_dag_contrastive_quick.json").read_text())
    assert result["setting"]["init"] == "contrastive" and result["setting"]["rounds"] == 0
    assert "mcc_by_target_contrastive_only" in result["B7"]["1_layer"]


def test_latent_dag_sparsity_and_mixings_name_their_file(tmp_path):
    load("latent_dag").main(["--quick", "--init", "contrastive", "--init-sparsity", "0.003",
                             "--mixings", "1", "--out", str(tmp_path)])
    result = json.loads(
        (tmp_path / "latent_dag_contrastive_l1_0.003_mixing1_quick.json").read_text())
    assert result["setting"]["init_sparsity"] == 0.003 and result["setting"]["mixings"] == [1]
    assert "median_shd_contrastive_only" in result["B7"]["1_layer"]
    load("latent_dag").main(["--quick", "--init", "contrastive", "--init-select", "validation",
                             "--mixings", "1", "--out", str(tmp_path)])
    result = json.loads(
        (tmp_path / "latent_dag_contrastive_validation_mixing1_quick.json").read_text())
    assert result["setting"]["init_select"] == "validation"
    assert "restart_validation_loss" in result["runs"][0]["stages"]["contrastive"]
    load("latent_dag").main(["--quick", "--init", "contrastive", "--init-linear",
                             "--mixings", "1", "--out", str(tmp_path)])
    result = json.loads(
        (tmp_path / "latent_dag_contrastive_linear_stage_mixing1_quick.json").read_text())
    assert result["setting"]["init_linear_steps"] == 10
    start = result["runs"][0]["stages"]["contrastive"]
    assert len(start["linear_loss"]) == 4 and len(start["linear_kept"]) == 2
    load("latent_dag").main(["--quick", "--init", "contrastive", "--keep-start-graph",
                             "--reclassify", "5", "--reclassify-rounds", "2", "--mixings", "1",
                             "--out", str(tmp_path)])
    result = json.loads((tmp_path / "latent_dag_contrastive_start_graph_reclassify5x2_mixing1_"
                                     "quick.json").read_text())
    assert result["setting"]["reclassify_steps"] == 5
    assert result["setting"]["reclassify_rounds"] == 2
    assert "reclassified2_elbo" in result["runs"][0]["stages"]
    with pytest.raises(SystemExit):  # rounds of the second start need the second start
        load("latent_dag").main(["--quick", "--init", "contrastive", "--reclassify-rounds",
                                 "2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):  # the second start belongs to the contrastive recipe
        load("latent_dag").main(["--quick", "--reclassify", "5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):  # the linear stage belongs to the contrastive start
        load("latent_dag").main(["--quick", "--init-linear", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):  # the L1 term belongs to the contrastive start
        load("latent_dag").main(["--quick", "--init-sparsity", "0.1", "--out", str(tmp_path)])


def test_ivae_iflow_variant_runs_its_restarts(tmp_path):
    load("ivae").main(["--quick", "--variants", "iflow", "--mixing-layers", "3",
                       "--out", str(tmp_path)])
    result = json.loads((tmp_path / "ivae_iflow_quick.json").read_text())
    (run,) = [r for r in result["runs"] if r["seed"] == 0]
    assert run["model"] == "iflow" and run["variant"] == "iflow"
    assert len(run["restart_validation_loss"]) == 2  # quick mode: 2 restarts
    assert "iflow" in result["summary"]["3_layer"]
