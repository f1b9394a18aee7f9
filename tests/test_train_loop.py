"""Train-loop quality of life: gradient accumulation, non-finite guard, separate text/DSG dropout,
trainable-param masks, stage start from a previous checkpoint, SIGKILL/SIGTERM exact resume, MFU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dysen_jax import preprocess as preprocess_lib
from dysen_jax import train as train_lib
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.experiment import load_experiment
from dysen_jax.parallel.mesh import make_mesh
from dysen_jax.sample import load_params
from dysen_jax.training import checkpoint
from dysen_jax.training.flops import compiled_flops, mfu
from dysen_jax.training.monitor import NonFiniteGuard
from dysen_jax.training.state import make_optimizer
from dysen_jax.training.step import draw_randomness, make_train_step, split_micro_batches
from tests.helpers import WITHOUT_TEMPORAL_LAYERS, lean_test_config, tiny_test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("loop_data"))
    preprocess_lib.preprocess(tiny_test_config(), out, show_progress=False)
    return out


def _config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
    """The lean smoke config (no temporal layers: these tests are about the loop) on `data_dir`."""
    config = lean_test_config(**overrides)
    config.data.data_dir = data_dir
    config.train.warmup_steps = 0  # the first step already moves the params
    return config


def _one_step(config, data_dir, batch_override=None):
    """(state before, state after, metrics) of one jitted step on device 0."""
    experiment = load_experiment(config, "unused")
    mesh = make_mesh(config.mesh, jax.devices()[:1])
    optimizer = make_optimizer(config.train, train_lib.frozen_params(config))
    state, _ = train_lib.initial_state(experiment, optimizer, mesh)
    before = jax.tree.map(np.asarray, state)
    batch = next(make_dataset(data_dir, experiment.spec, config.train.batch_size, 0).as_numpy_iterator())
    if batch_override:
        batch = {**batch, **batch_override}
    step = jax.jit(make_train_step(experiment.model, experiment.schedule, optimizer, experiment.config))
    after, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()}, jax.random.PRNGKey(3))
    return before, jax.tree.map(np.asarray, after), jax.device_get(metrics)


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_gradient_accumulation_equals_one_big_batch(data_dir):
    before, whole, whole_metrics = _one_step(_config(data_dir), data_dir)
    assert _max_diff(whole.params, before.params) > 1e-4
    _, accumulated, acc_metrics = _one_step(_config(data_dir, **{"train.grad_accum_steps": 4}), data_dir)
    np.testing.assert_allclose(acc_metrics["loss"], whole_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(acc_metrics["grad_norm"], whole_metrics["grad_norm"], rtol=1e-4)
    assert _max_diff(accumulated.params, whole.params) <= 1e-5


def test_micro_batches_are_strided_and_uneven_split_is_a_clear_error():
    x = jnp.arange(8)
    np.testing.assert_array_equal(split_micro_batches(x, 2), [[0, 2, 4, 6], [1, 3, 5, 7]])
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        split_micro_batches(x, 3)


def test_non_finite_step_is_skipped_and_counted(data_dir):
    config = _config(data_dir)
    batch = next(make_dataset(data_dir, load_experiment(config, "unused").spec, 8, 0).as_numpy_iterator())
    poisoned = batch["video"].copy()
    poisoned[0, 0, 0, 0, 0] = np.nan
    before, after, metrics = _one_step(config, data_dir, {"video": poisoned})
    assert metrics["finite"] == 0.0 and not np.isfinite(metrics["loss"])
    assert int(after.step) == int(before.step) + 1  # the data moves on, so resume stays exact
    assert _max_diff(after.params, before.params) == 0.0
    assert _max_diff(after.opt_state, before.opt_state) == 0.0


def test_non_finite_guard_stops_after_k_in_a_row(tmp_path):
    manager = checkpoint.checkpoint_manager(str(tmp_path), keep=1)
    guard = NonFiniteGuard(max_in_a_row=2)
    state = {"w": jnp.ones(3)}
    guard.check({"finite": 0.0}, 1, manager, state)
    guard.check({"finite": 1.0}, 2, manager, state)  # a good step resets the run
    guard.check({"finite": 0.0}, 3, manager, state)
    with pytest.raises(FloatingPointError, match="2 train steps in a row"):
        guard.check({"finite": 0.0}, 4, manager, state)
    assert guard.skipped == 3 and manager.latest_step() == 4  # the state was saved before stopping


def test_text_and_dsg_dropout_are_separate_and_independent():
    cfg = ml_collections.ConfigDict({"text_drop_prob": 1.0, "dsg_drop_prob": 0.0})
    draws = draw_randomness(jax.random.PRNGKey(0), jnp.zeros((64, 2)), 1000, cfg)
    assert not draws["keep_text"].any() and draws["keep_dsg"].all()
    cfg = ml_collections.ConfigDict({"text_drop_prob": 0.5, "dsg_drop_prob": 0.5})
    draws = jax.device_get(draw_randomness(jax.random.PRNGKey(1), jnp.zeros((4000, 2)), 1000, cfg))
    both_dropped = np.mean(~draws["keep_text"] & ~draws["keep_dsg"])
    assert 0.45 < np.mean(~draws["keep_text"]) < 0.55 and 0.2 < both_dropped < 0.3  # independent: 0.25


def test_trainable_regex_freezes_everything_else(data_dir):
    # (the RGTrm's path into the UNet is zero-initialised, so at step 0 only the UNet gets gradients)
    config = _config(data_dir, **{"train.trainable": "unet/"})
    before, after, _ = _one_step(config, data_dir)
    flat_before = jax.tree_util.tree_flatten_with_path(before.params)[0]
    flat_after = jax.tree.leaves(after.params)
    changed = {jax.tree_util.keystr(p).split("'")[1] for (p, b), a in zip(flat_before, flat_after)
               if not np.array_equal(b, a)}
    assert changed == {"unet"}
    with pytest.raises(ValueError, match="matches no parameter"):
        _one_step(_config(data_dir, **{"train.trainable": "no_such_layer"}), data_dir)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        make_optimizer(_config(data_dir, **{"train.trainable": "("}).train)


def test_next_stage_starts_from_previous_checkpoint(data_dir, tmp_path):
    first = train_lib.train(_config(data_dir), str(tmp_path / "stage2"), show_progress=False)
    config = _config(data_dir, **{"init_from.checkpoint": str(tmp_path / "stage2"), "train.num_steps": 1})
    experiment = load_experiment(config, "unused")
    mesh = make_mesh(config.mesh, jax.devices()[:1])
    state, _ = train_lib.initial_state(experiment, make_optimizer(config.train), mesh)
    assert _max_diff(state.params, first["state"].ema_params) == 0.0
    assert _max_diff(state.ema_params, first["state"].ema_params) == 0.0
    assert int(state.step) == 0  # a new stage: fresh step count and optimizer
    with pytest.raises(FileNotFoundError, match="init_from.checkpoint"):
        checkpoint.restore_matching_params(str(tmp_path / "nothing"), state.params)

    # A stage that adds layers (temporal attention at every level): they start fresh, the rest loaded;
    # sampling the previous stage with the new config, or the reverse, is refused, not silently wrong.
    grown = _config(data_dir, **{"init_from.checkpoint": str(tmp_path / "stage2"), "model.temporal_attention": True,
                                 "model.temporal_attention_levels": (True, True)})
    state, _ = train_lib.initial_state(load_experiment(grown, "unused"), make_optimizer(grown.train), mesh)
    fresh = state.params["unet"]["down_blocks_0"]["temp_attentions_0"]["proj_out"]["kernel"]
    assert not np.asarray(fresh).any()   # zero-init, as the layer's fresh init
    assert _max_diff(state.params["unet"]["mid_block"]["resnets_1"],
                     first["state"].ema_params["unet"]["mid_block"]["resnets_1"]) == 0.0
    with pytest.raises(ValueError, match="lacks .* params of this config's model.*temp_attentions"):
        load_params(load_experiment(grown, "unused"), str(tmp_path / "stage2"))
    shrunk = _config(data_dir, **{"model.pooled_conditions": False})  # drops the pooled text / DSG paths
    with pytest.raises(ValueError, match="has .* params this config's model lacks.*pooled_"):
        load_params(load_experiment(shrunk, "unused"), str(tmp_path / "stage2"))


def test_step_flops_and_mfu():
    compiled = jax.jit(lambda a, b: a @ b).lower(jnp.ones((64, 32)), jnp.ones((32, 16))).compile()
    assert compiled_flops(compiled) == pytest.approx(2 * 64 * 32 * 16, rel=0.05)
    assert mfu(1e9, 2.0, 4e9) == 0.5 and mfu(0.0, 2.0, 4e9) == 0.0


def _train_cli(workdir: str, data_dir: str, num_steps: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "dysen_jax.train", "--config=configs/tiny.py:smoke", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", f"--config.train.num_steps={num_steps}",
            "--config.train.checkpoint_every=10", "--config.train.keep_checkpoints=50",
            "--config.train.sample_at_end=False", "--config.train.log_every=1",
            "--config.train.warmup_steps=0",  # as _config, with its lean model:
            *(f"--config.{key}={value}" for key, value in WITHOUT_TEMPORAL_LAYERS.items())]
    return subprocess.Popen(args, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for_checkpoint(workdir: str, proc: subprocess.Popen, newer_than: int = 0, timeout: float = 600) -> int:
    """Newest checkpoint step in `workdir` once one newer than `newer_than` exists."""
    directory = os.path.join(workdir, "checkpoints")
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(d) for d in (os.listdir(directory) if os.path.isdir(directory) else []) if d.isdigit()]
        if steps and max(steps) > newer_than:
            return max(steps)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint after step {newer_than} appeared")


def test_sigkill_resume_is_bitwise_exact_and_sigterm_saves(data_dir, tmp_path):
    """Run 1 is SIGKILLed after its first checkpoint; run 2 resumes, is SIGTERMed later and saves that
    step; the saved params equal the uninterrupted run's at the same step, bit for bit."""
    num_steps = 60
    workdir = str(tmp_path / "interrupted")
    proc = _train_cli(workdir, data_dir, num_steps)
    killed_at = _wait_for_checkpoint(workdir, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.checkpoint_manager(workdir).latest_step()  # it may have saved one more
    resumed = _train_cli(workdir, data_dir, num_steps)
    _wait_for_checkpoint(workdir, resumed, newer_than=killed_at)  # it resumed and trained on
    resumed.send_signal(signal.SIGTERM)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert f"resumed from step {killed_at}" in out
    assert "SIGTERM: saved the checkpoint of step" in out
    manager = checkpoint.checkpoint_manager(workdir)
    saved = manager.latest_step()
    assert killed_at < saved <= num_steps
    restored = manager.restore(saved)
    # The same run uninterrupted (same num_steps: the LR schedule depends on it), saved at step `saved`.
    straight_dir = str(tmp_path / "straight")
    train_lib.train(_config(data_dir, **{"train.num_steps": num_steps, "train.checkpoint_every": saved,
                                         "train.keep_checkpoints": num_steps}), straight_dir, show_progress=False)
    reference = checkpoint.checkpoint_manager(straight_dir).restore(saved)
    assert _max_diff(restored["params"], reference["params"]) == 0.0
    assert _max_diff(restored["ema_params"], reference["ema_params"]) == 0.0
    assert _max_diff(restored["opt_state"], reference["opt_state"]) == 0.0
