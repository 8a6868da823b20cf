import json
import subprocess
import sys

from pyrocrl.cli import main


def test_demo_quick_writes_report_and_figures(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "held-out MCC" in printed and "IVAE" in printed and "VAE" in printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert [run["model"] for run in report["runs"]] == ["ivae", "vae"]
    for run in report["runs"]:
        assert 0.0 <= run["mcc"] <= 1.0 and run["steps"] == report["setting"]["steps"]
    for name in ("latents.png", "losses.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_module_entry_point_shows_help():
    out = subprocess.run([sys.executable, "-m", "pyrocrl", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "demo" in out
