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
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.experiment import load_experiment
from dysen_jax.parallel.mesh import batch_sharding, fsdp_shardings, make_mesh, replicated
from dysen_jax.training.state import make_optimizer
from dysen_jax.training.step import make_train_step
from tests.helpers import tiny_test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    preprocess_lib.preprocess(tiny_test_config(), os.path.join(workdir, "data"), show_progress=False)
    return workdir


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _run_steps(config, workdir, devices, mesh_shape, num_steps=2):
    config.mesh.data, config.mesh.fsdp = mesh_shape
    experiment = load_experiment(config, workdir)
    mesh = make_mesh(config.mesh, devices)
    optimizer = make_optimizer(config.train)
    state, shardings = train_lib.initial_state(experiment, optimizer, mesh)
    step = jax.jit(make_train_step(experiment.model, experiment.schedule, optimizer, experiment.config),
                   in_shardings=(shardings, batch_sharding(mesh), replicated(mesh)),
                   out_shardings=(shardings, replicated(mesh)))
    batches = make_dataset(experiment.data_dir, experiment.spec, config.train.batch_size, 0).as_numpy_iterator()
    key = jax.random.PRNGKey(1)
    losses = []
    for _ in range(num_steps):
        state, metrics = step(state, train_lib.to_global_batch(next(batches), batch_sharding(mesh)), key)
        losses.append(float(metrics["loss"]))
    return state, losses, shardings


def test_sharded_train_step_equals_unsharded(data_workdir):
    assert jax.device_count() == 8, "tests/conftest.py must give 8 host devices"
    single, single_losses, _ = _run_steps(tiny_test_config(), data_workdir, jax.devices()[:1], (1, 1))
    sharded, sharded_losses, shardings = _run_steps(tiny_test_config(), data_workdir, jax.devices(), (4, 2))
    # FSDP really splits some parameters over the 2-way fsdp axis.
    specs = [s.spec for s in jax.tree.leaves(shardings.params)]
    assert any("fsdp" in tuple(spec) for spec in specs)
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5, atol=1e-6)
    assert _max_diff(sharded.params, single.params) <= 1e-5


def test_resume_after_interruption_matches_uninterrupted_run(data_workdir, tmp_path):
    config = tiny_test_config(**{"train.num_steps": 4, "train.checkpoint_every": 2, "train.keep_checkpoints": 3})
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


def test_loss_decreases_on_repeated_batch(data_workdir):
    config = tiny_test_config(**{"train.learning_rate": 3e-3, "diffusion.cond_drop_prob": 0.0})
    _, losses, _ = _run_steps(config, data_workdir, jax.devices()[:1], (1, 1), num_steps=1)
    config.train.num_steps = 40
    _, losses, _ = _run_steps(config, data_workdir, jax.devices()[:1], (1, 1), num_steps=40)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_end_to_end_preprocess_train_sample_cli(tmp_path):
    overrides = ["--config.data.num_train=16", "--config.data.num_shards=2", "--config.data.resolution=16",
                 "--config.model.channels=(8,16)", "--config.model.attention_levels=(False,True)",
                 "--config.model.text_width=16", "--config.model.rgtrm_width=16",
                 "--config.train.batch_size=8", "--config.train.num_steps=3", "--config.train.log_every=1",
                 "--config.sample.steps=2"]
    workdir = str(tmp_path / "run")
    data_dir = os.path.join(workdir, "data")
    done = _cli("dysen_jax.preprocess", "--config=configs/tiny.py", f"--output_dir={data_dir}", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
    assert manifest["counts"]["written"] + manifest["counts"]["failed"] == 16
    assert manifest["counts"]["written"] >= 14
    done = _cli("dysen_jax.train", "--config=configs/tiny.py", f"--workdir={workdir}", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 3: loss" in done.stdout
    assert os.path.exists(os.path.join(workdir, "samples", "step_3.mp4"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))
    out = str(tmp_path / "clip.gif")
    done = _cli("dysen_jax.sample", "--config=configs/tiny.py", f"--workdir={workdir}", *overrides,
                "--prompt=the green square moves left, then the red circle jumps", f"--output={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    from dysen_jax.data.video_io import read_video
    from dysen_jax.dsg.schema import Plan

    assert read_video(out).shape == (8, 64, 64, 3)  # 16 px frames upscaled 4x for viewing
    plan = Plan.loads(open(str(tmp_path / "clip.dsg.json")).read())
    assert [e.agent for e in plan.events][:1] == ["green square"]
    assert os.path.getsize(str(tmp_path / "clip.dsg.png")) > 1000
    # A bad output extension and a missing checkpoint are clear errors, not tracebacks.
    bad = _cli("dysen_jax.sample", "--config=configs/tiny.py", f"--workdir={workdir}", "--output=x.avi")
    assert bad.returncode != 0 and ".mp4 or .gif" in bad.stderr
    empty = _cli("dysen_jax.sample", "--config=configs/tiny.py", f"--workdir={tmp_path / 'none'}", *overrides)
    assert empty.returncode != 0 and "preprocess" in empty.stderr
