"""python -m dysen_jax.sample: per-clip DSG spans, long videos from the smoke model (random params of
init_params' shapes, no training), negative prompts, the resumable --prompts FILE mode and clear errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dysen_jax import preprocess as preprocess_lib
from dysen_jax.data.video_io import read_video
from dysen_jax.dsg.tensorize import frame_steps
from dysen_jax.experiment import init_params, load_experiment
from dysen_jax.planner.base import get_planner
from dysen_jax.sample import (_ConditionedDenoiser, check_prompt, clip_dsg, generate, load_params, read_prompts,
                              sample_prompts_file, video_frames)
from tests.helpers import tiny_test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 8  # the smoke config's clip length (data.num_frames)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """(workdir with smoke data and no checkpoint, experiment, random params of the model's shapes)."""
    workdir = str(tmp_path_factory.mktemp("sample_run"))
    config = tiny_test_config()
    preprocess_lib.preprocess(config, os.path.join(workdir, "data"), show_progress=False)
    experiment = load_experiment(config, workdir)
    shapes = jax.eval_shape(lambda key: init_params(experiment, key), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype), shapes)
    return workdir, experiment, params


def _with_sample(experiment, **values):
    """The experiment with config.sample keys replaced (the CLI flags do the same)."""
    config = experiment.config.copy_and_resolve_references()
    for key, value in values.items():
        config.sample[key] = value
    return dataclasses.replace(experiment, config=config)


def test_clip_dsg_gives_each_clip_the_scene_graphs_of_its_time_span():
    plan = get_planner("rules").plan("the red circle moves right, then the blue square jumps, "
                                     "then the green triangle moves left")
    merged = plan.dsg.merged()
    assert len(merged) == 3 and merged.duration == 6
    one, steps = clip_dsg(plan.dsg, 0, 1, N)
    assert one == merged and np.array_equal(steps, frame_steps(merged, N))
    whole = frame_steps(merged, 3 * N)
    for clip in range(3):
        span, local = clip_dsg(plan.dsg, clip, 3, N)
        assert span.graphs[0].t == 0 and len(span) == 1           # 3 clips of a 3-action plan: one action each
        for f in range(N):
            assert span.graphs[local[f]].triplets == merged.graphs[whole[clip * N + f]].triplets
    span, local = clip_dsg(plan.dsg, 1, 2, N)                     # 2 clips: times [3, 6) -> SG 2 (from t=3) and 3
    assert [g.t for g in span.graphs] == [0, 1] and span.duration == 3 and list(local) == [0, 0, 0, 1, 1, 1, 1, 1]


def test_three_clip_long_video_length_and_first_clip_equals_the_single_clip(smoke):
    _, experiment, params = smoke
    prompt = "the red circle jumps"  # one scene graph: every clip's DSG arrays equal the single clip's
    single, plan = generate(_with_sample(experiment, num_frames=N), params, prompt, seed=7)
    long, _ = generate(_with_sample(experiment, num_frames=3 * N), params, prompt, seed=7, plan=plan)
    assert single.shape == (N, 16, 16, 3) and long.shape == (3 * N, 16, 16, 3)
    np.testing.assert_array_equal(long[:N], single)
    assert not np.array_equal(long[N:2 * N], long[:N])


@dataclasses.dataclass(frozen=True)
class _RecordingModel:
    """Stands in for the denoiser: returns x + mean token id (tokens it saw) + 100·use_text."""

    def apply(self, variables, x, t, tokens, dsg, *, use_text, use_dsg, deterministic):
        shift = tokens.mean(axis=1) + 100.0 * use_text + 1000.0 * use_dsg
        return x + shift.reshape((-1,) + (1,) * (x.ndim - 1))


def test_negative_prompt_replaces_the_null_text_in_unconditional_branches():
    tokens, negative = jnp.array([[4, 4]]), jnp.array([[9, 9]])
    x, t = jnp.zeros((3, 1)), jnp.zeros((3,), jnp.int32)
    use_text, use_dsg = jnp.array([True, True, False]), jnp.array([True, False, False])  # branches (y,G) (y,0) (0,0)
    fn = _ConditionedDenoiser(_RecordingModel())
    plain = np.asarray(fn({}, tokens, None, {}, x, t, use_text, use_dsg))[:, 0]
    with_negative = np.asarray(fn({}, tokens, negative, {}, x, t, use_text, use_dsg))[:, 0]
    np.testing.assert_array_equal(plain, [1104, 104, 4])         # null text: use_text False in branch (0,0)
    np.testing.assert_array_equal(with_negative, [1104, 104, 109])  # negative prompt tokens, as text


def test_prompts_file_numbered_outputs_failures_and_resume(smoke, tmp_path):
    _, experiment, params = smoke
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the red circle jumps\n\n???\nthe blue square moves left\n")
    out = str(tmp_path / "out" / "clip.gif")
    counts = sample_prompts_file(experiment, params, str(prompts), out, seed=3)
    assert counts == {"prompts": 3, "skipped": 0, "written": 2, "failed": 1}
    for line in (1, 4):
        stem = str(tmp_path / "out" / f"clip_{line:04d}")
        assert read_video(stem + ".gif").shape == (N, 64, 64, 3)
        assert json.load(open(stem + ".dsg.json"))["events"] and os.path.getsize(stem + ".dsg.png") > 1000
    failures = [json.loads(x) for x in open(str(tmp_path / "out" / "clip.failures.jsonl"))]
    assert [(f["line"], f["stage"]) for f in failures] == [(3, "plan")] and "no words" in failures[0]["error"]
    again = sample_prompts_file(experiment, params, str(prompts), out, seed=3)
    assert again == {"prompts": 3, "skipped": 2, "written": 0, "failed": 1}


def test_clear_errors(smoke, tmp_path):
    workdir, experiment, _ = smoke
    for frames in (12, 4):
        with pytest.raises(ValueError, match="multiple of 8"):
            video_frames(_with_sample(experiment, num_frames=frames))
    assert video_frames(_with_sample(experiment, num_frames=0)) == (N, 1)
    assert video_frames(_with_sample(experiment, num_frames=4 * N)) == (4 * N, 4)
    with pytest.raises(ValueError, match="prompt is empty"):
        check_prompt("   ")
    with pytest.raises(FileNotFoundError, match="--prompts"):
        read_prompts(str(tmp_path / "missing.txt"))
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no prompt"):
        read_prompts(str(tmp_path / "blank.txt"))
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        load_params(experiment, workdir)
    with pytest.raises(ValueError, match=r"sample\.sampler"):
        generate(_with_sample(experiment, sampler="euler"), {}, "the red circle jumps")


def test_cli_rejects_a_frame_count_that_is_not_whole_clips(smoke):
    workdir, _, _ = smoke
    done = subprocess.run([sys.executable, "-m", "dysen_jax.sample", "--config=configs/tiny.py:smoke",
                           f"--workdir={workdir}", "--prompt=the red circle jumps", "--num_frames=12"],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "multiple of 8" in done.stderr and "Traceback" not in done.stderr


def test_frame_noise_share_flag_reaches_the_sampler(smoke):
    import types

    from dysen_jax.cli import SAMPLING_FLAGS
    from dysen_jax.sample import apply_sampling_flags, sampler_settings

    _, experiment, _ = smoke
    experiment = _with_sample(experiment)
    trained = float(experiment.config.diffusion.frame_noise_share)
    assert sampler_settings(experiment).frame_noise_share == trained   # the config default -1: the trained prior
    given = types.SimpleNamespace(**{name: None for name in SAMPLING_FLAGS})
    given.frame_noise_share = 0.9
    apply_sampling_flags(experiment.config, given)
    assert experiment.config.sample.frame_noise_share == 0.9 != trained
    assert sampler_settings(experiment).frame_noise_share == 0.9
