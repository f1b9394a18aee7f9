"""Multi-host: 2 processes x 4 CPU devices (launch/local_multiprocess.sh, gloo) train to the same params as
1 process x 8 devices; only process 0 logs; per-process input streams; distributed settings and errors."""

from __future__ import annotations

import glob
import os
import runpy
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dysen_jax import preprocess as preprocess_lib
from dysen_jax import train as train_lib
from dysen_jax.data.pipeline import make_dataset
from dysen_jax.data.records import manifest_spec_and_vocab, read_manifest
from dysen_jax.parallel import distributed
from dysen_jax.parallel.mesh import batch_sharding, make_mesh
from tests.helpers import tiny_test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 4  # with warmup 0: the schedule of test_train_loop's lean runs, so the 1-process run can share their program

# The lean smoke config (tests/helpers.py: without the temporal layers, which change nothing in how the
# processes split the work) with 2 input streams (2 processes each build one), as a config file for the CLI.
CONFIG_FILE = '''
from tests.helpers import lean_test_config


def get_config():
    c = lean_test_config()
    c.data.input_streams = 2
    c.data.data_dir = {data_dir!r}
    c.train.num_steps = {num_steps}
    c.train.warmup_steps = 0
    c.train.checkpoint_every = {num_steps}
    return c
'''


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    preprocess_lib.preprocess(tiny_test_config(), out, show_progress=False)
    return out


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)  # keeps conftest's JAX_COMPILATION_CACHE_DIR, so reruns hit the XLA cache
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        env.pop(name, None)
    return env


def _restore_params(workdir: str) -> dict:
    """The step-NUM_STEPS checkpoint's params as numpy on one device, whatever mesh and processes saved it."""
    path = os.path.join(workdir, "checkpoints", str(NUM_STEPS), "default")
    assert os.path.isdir(path), f"no checkpoint of step {NUM_STEPS} in {workdir}"
    checkpointer = ocp.StandardCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return jax.device_get(checkpointer.restore(path, abstract)["params"])


def test_two_processes_train_like_one(data_dir, tmp_path):
    config_file = tmp_path / "multihost_config.py"
    config_file.write_text(CONFIG_FILE.format(data_dir=data_dir, num_steps=NUM_STEPS))
    multi_dir, single_dir = str(tmp_path / "two_processes"), str(tmp_path / "one_process")
    multi = subprocess.run(["bash", "launch/local_multiprocess.sh", "-n", "2", "-d", "4", "--", sys.executable, "-m",
                            "dysen_jax.train", f"--config={config_file}", f"--workdir={multi_dir}"],
                           cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, (multi.stdout + multi.stderr)[-4000:]
    assert "8 devices, 2 process(es)" in multi.stdout
    # The same config in this process, on its 8 devices (tests/conftest.py): one process, the same mesh.
    assert jax.device_count() == 8 and jax.process_count() == 1
    train_lib.train(runpy.run_path(str(config_file))["get_config"](), single_dir, show_progress=False)
    # Only process 0 logs and writes TensorBoard events.
    assert "[p0] " in multi.stdout and f"step {NUM_STEPS}: loss" in multi.stdout
    assert not [line for line in multi.stdout.splitlines() if line.startswith("[p1]") and "loss" in line]
    assert len(glob.glob(os.path.join(multi_dir, "tb", "events.out.tfevents*"))) == 1
    # Same global batches and the same all-reduced gradients: the same params.
    multi_params, single_params = _restore_params(multi_dir), _restore_params(single_dir)
    leaves = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), multi_params, single_params))
    assert len(leaves) == len(jax.tree.leaves(single_params)) > 10
    assert max(leaves) <= 1e-5  # gloo sums across processes in another order: round-off (test_sharding's bound)


def test_local_launcher_fails_when_one_process_fails():
    failing = ("import os, sys, time; i = int(os.environ['DYSEN_PROCESS_ID']); "
               "print('n', os.environ['DYSEN_NUM_PROCESSES'], os.environ['DYSEN_COORDINATOR'].startswith('127.0.0.1:')); "
               "sys.exit(3) if i == 1 else time.sleep(60)")
    done = subprocess.run(["bash", "launch/local_multiprocess.sh", "-n", "2", "--", sys.executable, "-c", failing],
                          cwd=REPO, capture_output=True, text=True, timeout=50)
    assert done.returncode == 3
    assert "[p0] n 2 True" in done.stdout and "[p1] n 2 True" in done.stdout
    assert "process 1 exited with status 3" in done.stderr


def test_input_streams_compose_the_global_batch(data_dir):
    spec, _ = manifest_spec_and_vocab(read_manifest(data_dir))

    def first_batches(n=2, **kwargs):
        it = make_dataset(data_dir, spec, seed=0, shuffle_buffer=16, **kwargs).as_numpy_iterator()
        return [next(it) for _ in range(n)]

    whole = first_batches(batch_size=8, num_streams=2)
    halves = [first_batches(batch_size=4, num_streams=2, process_index=p, process_count=2) for p in range(2)]
    for step in range(2):
        for key in whole[step]:
            np.testing.assert_array_equal(whole[step][key],
                                          np.concatenate([halves[0][step][key], halves[1][step][key]]))
    # Resume: starting at step 1 gives the uninterrupted run's second batch, stream by stream.
    resumed = first_batches(n=1, batch_size=8, num_streams=2, start_step=1)[0]
    np.testing.assert_array_equal(resumed["video"], whole[1]["video"])
    with pytest.raises(ValueError, match="input_streams=3 must be a multiple of the 2 processes"):
        make_dataset(data_dir, spec, 4, 0, num_streams=3, process_count=2)
    with pytest.raises(ValueError, match="num_shards >= data.input_streams"):
        make_dataset(data_dir, spec, 3, 0, num_streams=3)


def test_local_input_follows_the_batch_sharding():
    sharding = batch_sharding(make_mesh({"data": -1, "fsdp": 1}))  # one process holds every row
    assert distributed.local_input(sharding, 8, 2) == ([0, 1], 8)
    assert distributed.local_input(sharding, 8, 1) == ([0], 8)
    with pytest.raises(ValueError, match="batch_size=8 must be divisible by config.data.input_streams=3"):
        distributed.local_input(sharding, 8, 3)


def test_distributed_settings_from_flags_and_environment():
    env = {"DYSEN_COORDINATOR": "10.0.0.1:1234", "DYSEN_NUM_PROCESSES": "4", "DYSEN_PROCESS_ID": "2",
           "DYSEN_LOCAL_DEVICE_IDS": "0,1"}
    settings = distributed.settings_from(environ=env)
    assert distributed.plan_initialization(settings, env) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2, "local_device_ids": [0, 1]}
    # Flags win over the environment; one process or "none" initialises nothing.
    assert distributed.settings_from(process_id=3, environ=env).process_id == 3
    assert distributed.plan_initialization(distributed.settings_from(num_processes=1, environ={}), {}) is None
    assert distributed.plan_initialization(distributed.settings_from(cluster_detection="none", environ=env), env) is None
    assert distributed.plan_initialization(distributed.settings_from(environ={}), {}) is None
    # SLURM with several tasks: jax reads the rest from SLURM's variables.
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
    assert distributed.plan_initialization(distributed.settings_from(environ=slurm), slurm) == {"local_device_ids": None}
    assert distributed.plan_initialization(distributed.settings_from(cluster_detection="auto", environ={}), {}) == {
        "local_device_ids": None, "cluster_detection_method": None}
    with pytest.raises(ValueError, match="missing --coordinator_address"):
        distributed.settings_from(num_processes=2, process_id=0, environ={})
    with pytest.raises(ValueError, match="must be in 0..1"):
        distributed.settings_from(coordinator_address="h:1", num_processes=2, process_id=2, environ={})
    with pytest.raises(ValueError, match="HOST:PORT"):
        distributed.settings_from(coordinator_address="h", num_processes=2, process_id=0, environ={})
    with pytest.raises(ValueError, match="cluster_detection"):
        distributed.settings_from(cluster_detection="magic", environ={})
    with pytest.raises(ValueError, match="comma-separated integers"):
        distributed.settings_from(local_device_ids="a,b", environ={})


def test_launch_scripts_parse():
    for script in ("local_multiprocess.sh", "tpu_pod.sh", "slurm.sbatch"):
        done = subprocess.run(["bash", "-n", os.path.join(REPO, "launch", script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script}: {done.stderr}"
        assert "Example" in open(os.path.join(REPO, "launch", script)).read()
