"""Training: the whole preprocess -> train -> sample path through the CLIs (sharding: test_sharding.py;
exact resume: test_train_loop.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # conftest's 8 host devices and compilation cache, shared with the other tests
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


# The smoke config's programs (init, train step, sampler) are compiled once on one xdist worker
# (`--dist loadgroup`) for this test and notebooks/train_tiny.ipynb: the other reads the XLA cache.
@pytest.mark.xdist_group("smoke_programs")
def test_end_to_end_preprocess_train_sample_cli(tmp_path):
    config = "--config=configs/tiny.py:smoke"
    workdir = str(tmp_path / "run")
    data_dir = os.path.join(workdir, "data")
    done = _cli("dysen_jax.preprocess", config, f"--output_dir={data_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
    assert manifest["counts"]["written"] + manifest["counts"]["failed"] == 16
    assert manifest["counts"]["written"] >= 14
    done = _cli("dysen_jax.train", config, f"--workdir={workdir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 4: loss" in done.stdout
    assert os.path.exists(os.path.join(workdir, "samples", "step_4.mp4"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))
    out = str(tmp_path / "clip.gif")
    done = _cli("dysen_jax.sample", config, f"--workdir={workdir}",
                "--prompt=the green square moves left, then the red circle jumps", f"--output={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    from dysen_jax.data.video_io import read_video
    from dysen_jax.dsg.schema import Plan

    assert read_video(out).shape == (8, 64, 64, 3)  # 16 px frames upscaled 4x for viewing
    plan = Plan.loads(open(str(tmp_path / "clip.dsg.json")).read())
    assert [e.agent for e in plan.events][:1] == ["green square"]
    assert os.path.getsize(str(tmp_path / "clip.dsg.png")) > 1000
    # A bad output extension and a missing checkpoint are clear errors, not tracebacks.
    bad = _cli("dysen_jax.sample", config, f"--workdir={workdir}", "--output=x.avi")
    assert bad.returncode != 0 and ".mp4 or .gif" in bad.stderr
    empty = _cli("dysen_jax.sample", config, f"--workdir={tmp_path / 'none'}")
    assert empty.returncode != 0 and "preprocess" in empty.stderr
