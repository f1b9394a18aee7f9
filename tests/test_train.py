"""Training: sharded == unsharded, exact resume, and the whole preprocess -> train -> sample path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from dysen_jax import preprocess as preprocess_lib
from dysen_jax import train as train_lib
from tests.helpers import run_train_steps, tiny_test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    preprocess_lib.preprocess(tiny_test_config(), os.path.join(workdir, "data"), show_progress=False)
    return workdir


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_sharded_train_step_equals_unsharded(data_workdir):
    assert jax.device_count() == 8, "tests/conftest.py must give 8 host devices"
    single, single_losses, _ = run_train_steps(tiny_test_config(), data_workdir, jax.devices()[:1], (1, 1, 1))
    # min_shard_size: the smoke model's arrays are all below the default threshold.
    sharded, sharded_losses, shardings = run_train_steps(tiny_test_config(**{"mesh.min_shard_size": 256}),
                                                         data_workdir, jax.devices(), (4, 2, 1))
    # FSDP really splits some parameters over the 2-way fsdp axis.
    specs = [s.spec for s in jax.tree.leaves(shardings.params)]
    assert any("fsdp" in tuple(spec) for spec in specs)
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5, atol=1e-6)
    assert _max_diff(sharded.params, single.params) <= 1e-5


def test_resume_after_interruption_matches_uninterrupted_run(data_workdir, tmp_path):
    config = tiny_test_config()
    config.data.data_dir = os.path.join(data_workdir, "data")
    straight = train_lib.train(config, str(tmp_path / "straight"), show_progress=False)
    # Interrupted run: trains to step 4, then loses its last checkpoint, as if killed after step 2.
    resumed_dir = str(tmp_path / "resumed")
    train_lib.train(config, resumed_dir, show_progress=False)
    shutil.rmtree(os.path.join(resumed_dir, "checkpoints", "4"))
    resumed = train_lib.train(config, resumed_dir, show_progress=False)
    assert resumed["start_step"] == 2 and resumed["final_step"] == 4
    assert _max_diff(resumed["state"].params, straight["state"].params) == 0.0
    assert _max_diff(resumed["state"].ema_params, straight["state"].ema_params) == 0.0


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # conftest's 8 host devices and compilation cache, shared with the other tests
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


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
