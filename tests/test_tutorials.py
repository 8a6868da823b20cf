"""Every tutorial runs end to end in its smoke mode, and none is left out."""

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tutorials"
TUTORIALS = [
    "01_identifiability_ivae_vs_vae.py",
    "02_sufficient_variability.py",
    "03_temporal_vae_changing_dynamics.py",
    "04_kalman_vs_dmm.py",
    "05_pendulum_from_pixels.py",
    "11_factor_analysis_anchors.py",
    "12_interventions_identify_a_latent_graph.py",
    "21_discrete_concepts_and_saes.py",
]


def test_every_tutorial_is_covered():
    assert sorted(p.name for p in ROOT.glob("[0-9]*.py")) == sorted(TUTORIALS)


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_runs_in_smoke_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("PYROCRL_SMOKE", "1")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / name), run_name="__main__")
    assert any((tmp_path / "tutorials" / "figures").glob("*.png"))
