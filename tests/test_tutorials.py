"""Every tutorial script runs to completion (they assert their own results)."""
import pathlib
import subprocess
import sys

import pytest

TUTORIALS = sorted((pathlib.Path(__file__).parents[1] / "tutorials").glob("*.py"))


# 04 cross-compiles the bundled model as tests/test_arm_int8.py and test_arm_deploy.py do: slow only
SLOW = {"04_deploy_to_a_board", "05_vta_deploy"}


@pytest.mark.parametrize("script", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW else p
                                    for p in TUTORIALS], ids=lambda p: p.stem)
def test_tutorial_runs(script):
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
