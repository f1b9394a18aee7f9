"""Packaging promises: cheap imports, configs load, entry points answer --help."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_does_not_pull_tensorflow_or_torch():
    code = ("import sys, dysen_jax, dysen_jax.dsg.tensorize, dysen_jax.planner.rules, dysen_jax.models.denoiser, "
            "dysen_jax.data.shapes; bad = [m for m in ('tensorflow', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("module", ["preprocess", "train", "sample", "plan"])
def test_entry_points_answer_help(module):
    done = subprocess.run([sys.executable, "-m", f"dysen_jax.{module}", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("--config" in done.stdout) or ("--prompt" in done.stdout)


def test_tiny_config_variants():
    from configs import tiny

    assert tiny.get_config().model.channels == (16, 32, 64)
    assert tiny.get_config("smoke").data.resolution == 16
    with pytest.raises(ValueError, match="variant"):
        tiny.get_config("huge")
