"""Sharding over (data, fsdp, tensor) meshes: same training as one device, logical axis rules, restore
onto another mesh, clear errors for bad mesh configs."""

from __future__ import annotations

import concurrent.futures
import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dysen_jax import preprocess as preprocess_lib
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.experiment import load_experiment
from dysen_jax.models.init_compile import CPU_INIT_COMPILE_OPTIONS
from dysen_jax.parallel.logical import (ShardingRules, leaf_spec, param_logical_axes, path_names, shard_shape,
                                        state_shardings)
from dysen_jax.parallel.mesh import batch_sharding, make_mesh, mesh_shape, replicated
from dysen_jax.train import state_layout, to_global_batch
from dysen_jax.training import checkpoint
from dysen_jax.training.state import make_optimizer
from dysen_jax.training.step import make_train_step
from tests.helpers import lean_test_config, tiny_test_config

# One xdist worker runs this module (`pytest -n 2 --dist loadgroup`), so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("sharding")

MESHES = ((8, 1, 1), (2, 4, 1), (2, 2, 2))
NUM_STEPS = 3
MIN_SHARD_SIZE = 256   # the smoke model's widths are 8/16: shard its convs and attention kernels too
# XLA:CPU compile time is most of this file's time: compile the steps with the cheap options of the inits too.
FAST_COMPILE = CPU_INIT_COMPILE_OPTIONS


def sharding_config():
    """The smoke denoiser without its temporal conv / attention blocks (their rules are checked on
    paper-size shapes below): 40% less to compile for each mesh."""
    return lean_test_config(**{"mesh.min_shard_size": MIN_SHARD_SIZE})


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def spec_axes(spec: P) -> set[str]:
    axes = set()
    for entry in spec:
        axes.update((entry,) if isinstance(entry, str) else entry or ())
    return axes


@pytest.fixture(scope="module")
def data_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("sharding"))
    preprocess_lib.preprocess(tiny_test_config(), os.path.join(workdir, "data"), show_progress=False)
    return workdir


def mesh_config(shape: tuple[int, int, int]):
    config = sharding_config()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = shape
    return config


@pytest.fixture(scope="module")
def runs(data_workdir):
    """(state, losses, shardings) after NUM_STEPS steps, per mesh shape and on one device.

    Every run starts from the same params (initialised once, then laid out on each mesh) and sees
    the same batches. The init and the meshes' train steps are traced one after the other and
    compiled concurrently (XLA compiles without the GIL): compiling is most of this test's time.
    """
    assert jax.device_count() == 8, "tests/conftest.py must give 8 host devices"
    shapes = ((1, 1, 1),) + MESHES
    experiment = load_experiment(mesh_config((1, 1, 1)), data_workdir)
    optimizer = make_optimizer(experiment.config.train)
    batches = make_dataset(experiment.data_dir, experiment.spec, experiment.config.train.batch_size, 0)
    batches = [b for _, b in zip(range(NUM_STEPS), batches.as_numpy_iterator())]
    train_step = make_train_step(experiment.model, experiment.schedule, optimizer, experiment.config)
    key = jax.random.PRNGKey(1)
    init, _, _ = state_layout(experiment, optimizer, make_mesh(experiment.config.mesh, jax.devices()[:1]))
    programs, layouts = {"init": jax.jit(init).lower(key)}, {}
    for shape in shapes:
        mesh_experiment = load_experiment(mesh_config(shape), data_workdir)
        mesh = make_mesh(mesh_experiment.config.mesh, jax.devices()[:1] if shape == (1, 1, 1) else jax.devices())
        _, abstract, shardings = state_layout(mesh_experiment, optimizer, mesh)
        data = batch_sharding(mesh)
        step = jax.jit(train_step, in_shardings=(shardings, data, replicated(mesh)),
                       out_shardings=(shardings, replicated(mesh)))
        programs[shape] = step.lower(abstract, jax.eval_shape(lambda: batches[0]), key)
        layouts[shape] = (shardings, data)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        compiled = dict(zip(programs, pool.map(lambda p: p.compile(FAST_COMPILE), programs.values())))
    initial = compiled["init"](key)
    out = {}
    for shape in shapes:
        shardings, data = layouts[shape]
        state = jax.device_put(initial, shardings)
        losses = []
        for batch in batches:
            state, metrics = compiled[shape](state, to_global_batch(batch, data), key)
            losses.append(float(metrics["loss"]))
        out[shape] = (state, losses, shardings)
    return out


@pytest.mark.parametrize("shape", MESHES)
def test_sharded_training_equals_one_device(runs, shape):
    single, single_losses, _ = runs[(1, 1, 1)]
    state, losses, _ = runs[shape]
    np.testing.assert_allclose(losses, single_losses, rtol=1e-5, atol=1e-6)
    assert max_diff(state.params, single.params) <= 1e-5
    assert max_diff(state.ema_params, single.ema_params) <= 1e-5
    assert max_diff(state.opt_state, single.opt_state) <= 1e-5


def test_params_and_optimizer_state_are_split_over_fsdp_and_tensor(runs):
    state, _, shardings = runs[(2, 2, 2)]
    param_specs = [s.spec for s in jax.tree.leaves(shardings.params)]
    assert any("fsdp" in spec_axes(s) for s in param_specs)
    assert any("tensor" in spec_axes(s) for s in param_specs)
    assert any({"fsdp", "tensor"} <= spec_axes(s) for s in param_specs)   # 2-D splits (Megatron + ZeRO-3)
    assert any(spec_axes(s) == set() for s in param_specs)                # small arrays stay replicated
    # The arrays really live split: a device holds 1/4 of a kernel split over fsdp and tensor.
    split = [(x, s.spec) for x, s in zip(jax.tree.leaves(state.params), jax.tree.leaves(shardings.params))
             if spec_axes(s.spec) == {"fsdp", "tensor"}]
    for array, spec in split:
        shard = array.addressable_shards[0].data
        assert shard.shape == shard_shape(array.shape, spec, {"data": 2, "fsdp": 2, "tensor": 2})
        assert shard.size * 4 == array.size
    # Optimizer state follows its param: Adam's mu/nu are laid out as the params, EMA too.
    by_path = {path_names(p): s.spec for p, s in jax.tree_util.tree_leaves_with_path(shardings.params)}
    moments = 0
    for path, sharding in jax.tree_util.tree_leaves_with_path(shardings.opt_state):
        names = path_names(path)
        for start in range(len(names)):
            if names[start:] in by_path:
                assert sharding.spec == by_path[names[start:]], names
                moments += 1
                break
    assert moments == 2 * len(by_path)
    assert jax.tree.map(lambda s: s.spec, shardings.ema_params) == jax.tree.map(lambda s: s.spec, shardings.params)


def test_logical_axes_from_path_and_shape():
    # Megatron pairs: q/k/v, GEGLU-in, conv1 split their output; out-proj, ff-out, conv2 their input.
    assert param_logical_axes(("unet", "attn1", "to_q", "kernel"), (320, 320)) == ("embed", "heads")
    assert param_logical_axes(("unet", "attn1", "to_out_0", "kernel"), (320, 320)) == ("heads", "embed")
    assert param_logical_axes(("ff", "net_0", "proj", "kernel"), (320, 2560)) == ("embed", "mlp")
    assert param_logical_axes(("ff", "net_2", "kernel"), (1280, 320)) == ("mlp", "embed")
    assert param_logical_axes(("resnets_0", "conv1", "kernel"), (3, 3, 64, 128)) == (
        "conv_window", "conv_window", "embed", "mlp")
    assert param_logical_axes(("temp_convs_0", "conv4", "kernel"), (3, 64, 64)) == ("conv_window", "mlp", "embed")
    # RGTrm under nn.scan: [L, ...] stacked DenseGeneral kernels.
    assert param_logical_axes(("rgtrm", "layers", "query", "kernel"), (12, 768, 8, 96)) == (
        "layers", "embed", "heads", "kv")
    assert param_logical_axes(("rgtrm", "layers", "out", "kernel"), (12, 8, 96, 768)) == (
        "layers", "heads", "kv", "embed")
    assert param_logical_axes(("text_encoder", "word_embed", "embedding"), (49408, 768)) == ("vocab", "embed")
    # The same names inside the optimizer state give the same axes.
    assert param_logical_axes(("opt_state", "0", "mu", "rgtrm", "layers", "query", "kernel"),
                              (12, 768, 8, 96))[0] == "layers"


def test_specs_fall_back_to_replication_never_error():
    rules = ShardingRules()
    sizes = {"data": 2, "fsdp": 8, "tensor": 2}
    assert leaf_spec(("attn1", "to_q", "kernel"), (1280, 1280), sizes, rules) == P("fsdp", "tensor")
    assert leaf_spec(("rgtrm", "layers", "query", "kernel"), (12, 768, 8, 96), sizes, rules) == P(
        None, "fsdp", "tensor")
    # 12 heads over tensor=8 do not divide: that dim replicates, fsdp stays.
    assert leaf_spec(("query", "kernel"), (768, 12, 64), {"data": 1, "fsdp": 8, "tensor": 8}, rules) == P("fsdp")
    # "embed" = 4 does not divide fsdp=8: fsdp moves to the largest free dim that divides (ZeRO-3 memory kept).
    assert leaf_spec(("conv_out", "kernel"), (3, 3, 1280, 4), {"data": 1, "fsdp": 8, "tensor": 1}, rules) == P(
        None, None, "fsdp")
    # Nothing divides: replicated. Tiny arrays and scalars: replicated.
    assert leaf_spec(("conv_in", "kernel"), (3, 3, 3, 999), {"data": 1, "fsdp": 8, "tensor": 2}, rules) == P()
    assert leaf_spec(("norm1", "scale"), (1280,), sizes, rules) == P()
    assert leaf_spec(("count",), (), sizes, rules) == P()
    # A mesh axis is used once per array; custom rules are honoured.
    both = ShardingRules(rules=(("embed", "fsdp"), ("mlp", "fsdp")))
    assert leaf_spec(("fc1", "kernel"), (1024, 4096), sizes, both) == P("fsdp")
    wide = ShardingRules(rules=(("embed", ("fsdp", "tensor")),), min_shard_size=0)
    assert leaf_spec(("fc1", "kernel"), (1024, 4096), sizes, wide) == P(("fsdp", "tensor"))


def test_restore_onto_a_different_mesh(runs, data_workdir, tmp_path):
    state, _, _ = runs[(2, 4, 1)]
    manager = checkpoint.checkpoint_manager(str(tmp_path))
    checkpoint.save(manager, NUM_STEPS, state)
    manager.wait_until_finished()
    optimizer = make_optimizer(sharding_config().train)
    for shape, devices in (((2, 2, 2), jax.devices()), ((1, 1, 1), jax.devices()[:1])):
        config = mesh_config(shape)
        experiment = load_experiment(config, data_workdir)
        mesh = make_mesh(config.mesh, devices)
        _, abstract, shardings = state_layout(experiment, optimizer, mesh)
        restored, step = checkpoint.restore_latest(manager, checkpoint.abstract_like(abstract, shardings))
        assert step == NUM_STEPS
        assert max_diff(restored, state) == 0.0
        layouts = [(x.sharding.mesh.shape, x.sharding.spec) for x in jax.tree.leaves(restored.params)]
        assert all(dict(m) == dict(mesh.shape) for m, _ in layouts)
        assert (shape == (1, 1, 1)) != any("tensor" in spec_axes(s) for _, s in layouts)
    manager.close()


def test_small_replicated_arrays_are_saved_whole_and_large_ones_replica_parallel(tmp_path, monkeypatch):
    """orbax splits a replicated array into one slice per replica, each cut by a jax op; the manager
    keeps that for arrays of >= MIN_REPLICA_SLICE_BYTES per slice only, so a small model's thousands
    of leaves on 8 devices cost no per-slice ops. Both kinds round-trip exactly."""
    cuts = []
    real_slice = jax.lax.slice_in_dim
    monkeypatch.setattr(jax.lax, "slice_in_dim", lambda x, *a, **k: cuts.append(x.shape) or real_slice(x, *a, **k))
    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    big_rows = 8 * checkpoint.MIN_REPLICA_SLICE_BYTES // 4 // 256  # float32, 256 columns: 1 MiB per replica
    tree = {"small": {f"w{i}": np.full((16, 8), i, np.float32) for i in range(20)},
            "big": np.arange(big_rows * 256, dtype=np.float32).reshape(big_rows, 256)}
    state = jax.device_put(tree, replicated(mesh))
    manager = checkpoint.checkpoint_manager(str(tmp_path))
    checkpoint.save(manager, 1, state)
    manager.wait_until_finished()
    assert cuts and all(shape == (big_rows, 256) for shape in cuts)  # only the big array was sliced
    restored, step = checkpoint.restore_latest(manager, checkpoint.abstract_like(
        state, jax.tree.map(lambda _: replicated(mesh), state)))
    assert step == 1 and max_diff(restored, tree) == 0.0
    manager.close()


def test_mesh_shapes_and_bad_configs_give_clear_errors():
    config = tiny_test_config()
    mesh = config.mesh
    mesh.data, mesh.fsdp, mesh.tensor = -1, 2, 2
    assert mesh_shape(mesh, 8) == (2, 2, 2)
    one = make_mesh(mesh.to_dict() | {"fsdp": 1, "tensor": 1}, jax.devices()[:1])
    assert dict(one.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert mesh_shape({"data": -1, "fsdp": 4}, 8) == (2, 4, 1)   # configs without `tensor`: tensor=1
    with pytest.raises(ValueError, match="not divisible"):
        mesh_shape(mesh.to_dict() | {"tensor": 3}, 8)
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        mesh_shape(mesh.to_dict() | {"tensor": -1}, 8)
    with pytest.raises(ValueError, match="set one axis to -1"):
        mesh_shape({"data": 2, "fsdp": 2, "tensor": 1}, 8)
    with pytest.raises(ValueError, match="positive or -1"):
        mesh_shape(mesh.to_dict() | {"tensor": 0}, 8)
    with pytest.raises(ValueError, match="config.mesh.tensor must be an int"):
        mesh_shape(mesh.to_dict() | {"tensor": "2"}, 8)
    with pytest.raises(ValueError, match="config.mesh.rules.*names no mesh axis"):
        ShardingRules(rules=(("embed", "model"),))
    with pytest.raises(ValueError, match="config.mesh.rules.*unknown logical axis"):
        ShardingRules(rules=(("hidden", "tensor"),))
    with pytest.raises(ValueError, match="config.mesh.min_shard_size"):
        ShardingRules(min_shard_size=-1)
    # From the config: the rules and the threshold reach the shardings.
    config.mesh.min_shard_size = 10 ** 9
    rules = ShardingRules.from_config(config.mesh)
    tree = {"fc1": {"kernel": jax.ShapeDtypeStruct((64, 256), np.float32)}}
    mesh8 = make_mesh(mesh, jax.devices())
    assert state_shardings(tree, mesh8, rules)["fc1"]["kernel"].spec == P()
    assert state_shardings(tree, mesh8)["fc1"]["kernel"].spec == P("fsdp", "tensor")
