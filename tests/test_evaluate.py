"""python -m dysen_jax.evaluate: the held-out split, the summary table, and the CLI end to end on a smoke run."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dysen_jax import evaluate as ev
from dysen_jax import preprocess as preprocess_lib
from dysen_jax.models.init_compile import jit_init
from tests.helpers import tiny_test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_heldout_split_composition():
    items = ev.heldout_split(24, num_frames=8, resolution=16, max_actions=4, seed=3)
    assert len(items) == 24
    per_n = collections.Counter(it.num_actions for it in items)
    assert per_n == {1: 6, 2: 6, 3: 6, 4: 6}
    multi = [it for it in items if it.num_actions > 1]
    assert sum(it.reordered for it in multi) == len(multi) // 2
    assert {it.structure for it in multi} == {"sequential", "concurrent"}
    assert all(it.video.shape == (8, 16, 16, 3) and it.events for it in items)
    again = ev.heldout_split(24, num_frames=8, resolution=16, max_actions=4, seed=3)
    assert [it.caption for it in again] == [it.caption for it in items]
    # none of the training clips (dataset seed 0, the configs' default) is in the split
    from dysen_jax.data.shapes import make_example
    train_captions = {make_example(i, seed=0, num_frames=8, resolution=16).caption for i in range(64)}
    assert not train_captions & {it.caption for it in items}


def test_summary_and_tables_merge(tmp_path):
    runs = [{"workdir": "a", "seed": s, "metrics": {"trirec": v, "order_accuracy": 1.0, "by_actions": {
        "1": {"trirec": v, "timed_recall": v, "order_accuracy": 1.0}}, ev.BY_PREDICATE: {
        "jumping": {"recall": v, "gold": 4}, "growing": {"recall": 0.0, "gold": 2}}}} for s, v in ((0, 0.5), (1, 0.7))]
    summary = ev.summarize(runs)
    assert summary[ev.BY_PREDICATE]["jumping"] == {"recall": summary["trirec"], "gold": 4}
    assert summary["trirec"]["mean"] == pytest.approx(0.6)
    assert summary["trirec"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    result = {"runs": runs, "summary": summary, "ground_truth": {"trirec": 1.0}}
    prefix = str(tmp_path / "table")
    ev.write_table(result, "dysen", prefix)
    _, md_path, rows = ev.write_table({**result, "runs": runs[:1], "summary": ev.summarize(runs[:1])}, "w/o dysen", prefix)
    assert list(rows) == ["dysen", "w/o dysen"]
    text = open(md_path).read()
    assert "| dysen | 2 | 0.600 ± 0.141" in text and "| w/o dysen | 1 | 0.500 |" in text
    assert "| ground truth | - | 1.000" in text and "1 action" in text
    assert "| recall by action (gold triplets) | jumping (4) | growing (2) |" in text
    assert "| dysen | 0.600 ± 0.141 | 0.000 ± 0.000 |" in text


def test_bad_evaluate_settings():
    config = tiny_test_config()
    config.evaluate.plan = "oracle"
    with pytest.raises(ValueError, match="evaluate.plan"):
        ev.conditioning_plans(config, ev.heldout_split(1, 8, 16, 1))
    with pytest.raises(ValueError, match="captions_file"):
        ev.captions_split("", 4)


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A smoke run's workdir: its data and a checkpoint of random params of the model's shapes (the
    evaluation plumbing needs no training; this skips compiling the train step and the model init)."""
    import jax
    import numpy as np

    from dysen_jax.experiment import init_params, load_experiment
    from dysen_jax.training import checkpoint

    workdir = str(tmp_path_factory.mktemp("eval_run"))
    config = tiny_test_config()
    preprocess_lib.preprocess(config, os.path.join(workdir, "data"), show_progress=False)
    experiment = load_experiment(config, workdir)
    shapes = jax.eval_shape(lambda key: init_params(experiment, key), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    manager = checkpoint.checkpoint_manager(workdir)
    checkpoint.save(manager, 1, {"params": params, "ema_params": params}, force=True)
    manager.wait_until_finished()
    manager.close()
    return workdir


def test_heldout_loss_is_the_training_loss_and_sees_the_conditions(trained_workdir):
    """Equals eq. 1 computed by hand for one clip, and changes when the plan or the caption does."""
    import jax
    import jax.numpy as jnp

    from dysen_jax.diffusion.losses import q_sample
    from dysen_jax.dsg.build import plan_from_events
    from dysen_jax.experiment import init_params, load_experiment
    from dysen_jax.metrics import heldout_loss as hl
    from dysen_jax.sample import condition_arrays

    config = tiny_test_config()
    experiment = load_experiment(config, trained_workdir)
    # fresh params + noise (so the zero-init DSG/temporal branches are active and norms keep their scale)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: p + (0.05 * rng.standard_normal(p.shape)).astype(p.dtype),
                          jit_init(lambda key: init_params(experiment, key))(jax.random.PRNGKey(0)))
    items = ev.heldout_split(2, 8, 16, 2)
    videos = np.stack([it.video for it in items])
    prompts, plans = [it.caption for it in items], [plan_from_events(it.events) for it in items]
    got = hl.heldout_loss(experiment, params, videos[:1], prompts[:1], plans[:1], seed=5)
    t = jnp.asarray(hl.timestep_grid(experiment.schedule.num_timesteps))
    noise = hl.clip_noise(5, 0, experiment.input_shape, config.diffusion.frame_noise_share)
    x0 = jnp.repeat(jnp.asarray(videos[:1], jnp.float32) / 127.5 - 1, len(t), axis=0)
    tokens, dsg = condition_arrays(experiment, prompts[:1], plans[:1])
    tile = lambda a: jnp.repeat(a, len(t), axis=0)
    keep = jnp.ones((len(t),), bool)
    out = jax.jit(experiment.model.apply)({"params": params}, q_sample(experiment.schedule, x0, t, noise), t,
                                          tile(tokens), {k: tile(v) for k, v in dsg.items()}, use_text=keep, use_dsg=keep)
    a = experiment.schedule.sqrt_alphas_cumprod[t][:, None, None, None, None]
    s = experiment.schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None, None, None]
    assert got == pytest.approx(float(jnp.mean((out - (a * noise - s * x0)) ** 2)), rel=1e-5)
    assert hl.heldout_loss(experiment, params, videos[:1], prompts[:1], plans[1:], seed=5) != got
    assert hl.heldout_loss(experiment, params, videos[:1], prompts[1:], plans[:1], seed=5) != got
    assert hl.heldout_loss(experiment, params, videos[:1], prompts[:1], plans[:1], seed=6) != got
    null_dsg = hl.heldout_loss(experiment, params, videos[:1], prompts[:1], plans[:1], seed=5, use_dsg=False)
    assert null_dsg != got   # the DSG's null replaces the plan: the plan no longer matters
    assert hl.heldout_loss(experiment, params, videos[:1], prompts[:1], plans[1:], seed=5, use_dsg=False) == null_dsg


def test_temporal_use_removes_the_temporal_layers_and_plays_clips_backwards(trained_workdir):
    """benchmarks/temporal_use.py: per-timestep losses average to heldout_loss; removing the temporal
    layers is the identity on a fresh model (they are zero-init) and not on a perturbed one; a clip that
    reads the same backwards keeps its loss when reversed, another does not."""
    import jax

    from benchmarks.temporal_use import temporal_use
    from dysen_jax.dsg.build import plan_from_events
    from dysen_jax.experiment import init_params, load_experiment
    from dysen_jax.metrics import heldout_loss as hl
    from dysen_jax.models.unet3d import without_temporal_layers

    experiment = load_experiment(tiny_test_config(), trained_workdir)
    fresh = jit_init(lambda key: init_params(experiment, key))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    perturbed = jax.tree.map(lambda p: p + (0.05 * rng.standard_normal(p.shape)).astype(p.dtype), fresh)
    items = ev.heldout_split(2, 8, 16, 2)

    at_init = temporal_use(experiment, fresh, items, seed=3)
    assert at_init["loss_no_temporal"] == at_init["loss"] and len(at_init["loss"]) == hl.NUM_TIMESTEPS
    trained = temporal_use(experiment, perturbed, items, seed=3)
    assert trained["loss_no_temporal"] != trained["loss"] and trained["loss_reversed"] != trained["loss"]
    videos = np.stack([it.video for it in items])
    prompts, plans = [it.caption for it in items], [plan_from_events(it.events) for it in items]
    assert trained["loss_mean"] == pytest.approx(hl.heldout_loss(experiment, perturbed, videos, prompts, plans, 3),
                                                 abs=1e-5)
    removed = jax.tree_util.tree_flatten_with_path(without_temporal_layers(perturbed))[0]
    zeroed = {jax.tree_util.keystr(path) for path, leaf in removed if not np.any(np.asarray(leaf))}
    assert any("temp_convs_0" in p for p in zeroed) and any("temp_attentions_0" in p for p in zeroed)
    assert not any("resnets_" in p for p in zeroed)

    palindrome = np.concatenate([videos[:1, :4], videos[:1, :4][:, ::-1]], axis=1)
    loss = lambda clip, reverse: hl.heldout_loss_per_timestep(experiment, perturbed, clip, prompts[:1], plans[:1],
                                                              3, reverse_frames=reverse)
    np.testing.assert_array_equal(loss(palindrome, True), loss(palindrome, False))
    assert not np.array_equal(loss(videos[:1], True), loss(videos[:1], False))


def test_evaluate_cli_end_to_end(trained_workdir, tmp_path):
    prefix = str(tmp_path / "eval" / "table")
    done = subprocess.run([sys.executable, "-m", "dysen_jax.evaluate", "--config=configs/tiny.py:smoke",
                           f"--workdir={trained_workdir}", "--seeds=0,1", "--label=smoke", f"--table={prefix}"],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| smoke | 2 |" in done.stdout and "| ground truth |" in done.stdout
    table = json.load(open(prefix + ".json"))["rows"]["smoke"]
    assert [r["seed"] for r in table["runs"]] == [0, 1] and table["num_items"] == 2
    assert table["plans"] == {"planner": 2, "gold": 0}
    for key in ("trirec", "timed_recall", "order_accuracy", "exact"):
        assert 0.0 <= table["summary"][key]["mean"] <= 1.0 and table["summary"][key]["n"] == 2
    assert set(table["summary"]["by_actions"]) == {"1", "2"}
    by_predicate = table["summary"]["by_predicate"]
    assert by_predicate and all(0.0 <= v["recall"]["mean"] <= 1.0 for v in by_predicate.values())
    assert all(v["recall"] == 1.0 for v in table["ground_truth"]["by_predicate"].values())
    assert table["ground_truth"]["trirec"] == 1.0 and table["ground_truth"]["exact"] == 1.0
    losses = [r["metrics"]["heldout_loss"] for r in table["runs"]]
    assert losses[0] > 0 and losses[0] == losses[1]   # once per workdir: the sampling seed does not enter
    assert "trirec" in open(prefix + ".md").read()


def test_object_colours_of_ground_truth_are_perfect_and_wrong_colours_are_caught():
    from benchmarks.object_colours import colour_scores
    from dysen_jax.data import shapes

    items = ev.heldout_split(12, num_frames=8, resolution=32, max_actions=3, seed=5)
    real = np.stack([it.video for it in items])
    scores = colour_scores(real, items)
    assert scores["object_recall"] == 1.0 and scores["object_precision"] == 1.0
    assert scores["objects_per_clip"] == scores["gold_objects_per_clip"]
    blank = np.broadcast_to(np.asarray(shapes.BACKGROUND, np.uint8), real.shape).copy()
    assert colour_scores(blank, items)["object_recall"] == 0.0
    # every clip shown with another clip's video: objects of other colours appear, the told ones go missing
    shifted = colour_scores(np.roll(real, 1, axis=0), items)
    assert shifted["object_recall"] < 0.7 and shifted["object_precision"] < 0.7
    # the real motion is small per frame; frames drawn from different clips make objects jump about
    assert 0.0 < scores["frame_jump"] < 0.08
    mixed = np.stack([real[(np.arange(len(real)) + f) % len(real), f] for f in range(real.shape[1])], axis=1)
    assert colour_scores(mixed, items)["frame_jump"] > 2 * scores["frame_jump"]
