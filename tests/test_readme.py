"""The README's Python examples run as written (slow tier: they train for real)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.split()
    assert 0.0 <= float(printed[0]) <= 1.0, "the quick start prints its held-out MCC"
    assert set(namespace["idata"].groups()) >= {"posterior", "log_likelihood"}
    assert namespace["fit"].losses[-100:].mean() < namespace["fit"].losses[:100].mean()
