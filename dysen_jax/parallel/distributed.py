"""Multi-host start-up (`jax.distributed.initialize`) and which input streams each process reads.

One process per host (or per GPU) runs the same command. `initialize` must run before any JAX
computation; `python -m dysen_jax.train` calls it from `dysen_jax/cli.py` with these flags, each
with an environment fallback so launchers can set them instead:

    --coordinator_address HOST:PORT   DYSEN_COORDINATOR       process 0's address, same for all
    --num_processes N                 DYSEN_NUM_PROCESSES
    --process_id I                    DYSEN_PROCESS_ID        0 .. N-1
    --local_device_ids 0,1,...        DYSEN_LOCAL_DEVICE_IDS  this process's accelerators (optional)
    --cluster_detection MODE          DYSEN_CLUSTER_DETECTION see below

Without an explicit coordinator, the cluster is detected: SLURM with more than one task
(SLURM_JOB_ID, SLURM_NTASKS, ...) and Cloud TPU VMs (a pod's workers find each other through the
TPU metadata) call `jax.distributed.initialize()` with no arguments, which reads them (jax's own
cluster classes); anything else is one process and nothing is initialised. `--cluster_detection`
forces a choice: `none` (never initialise), `auto` (always let jax detect, e.g. Open MPI), or one
of jax's detection methods (`slurm`, `ompi`, `mpi4py`, `gce_tpu`, `gke_tpu`, `k8s`).

Data order does not depend on the number of processes: the global batch is `config.data.input_streams`
(S) blocks of B/S rows, stream s reading TFRecord files[s::S] with its own seeded shuffle
(`data/pipeline.py: make_dataset`); each process builds exactly the streams whose rows its devices
hold under the batch sharding (`local_input`), so 1 or P processes see the same global batches.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

ENV_COORDINATOR = "DYSEN_COORDINATOR"
ENV_NUM_PROCESSES = "DYSEN_NUM_PROCESSES"
ENV_PROCESS_ID = "DYSEN_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "DYSEN_LOCAL_DEVICE_IDS"
ENV_CLUSTER_DETECTION = "DYSEN_CLUSTER_DETECTION"

JAX_DETECTION_METHODS = ("slurm", "ompi", "mpi4py", "gce_tpu", "gke_tpu", "k8s")


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """What `initialize` was asked for, after the environment fallbacks."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    cluster_detection: str = ""  # "" = detect SLURM / Cloud TPU from the environment


def parse_device_ids(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """'0,1,2' (or a sequence of ints) -> (0, 1, 2); empty -> None (all local devices)."""
    if text is None:
        return None
    if not isinstance(text, str):
        return tuple(int(i) for i in text) or None
    try:
        ids = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(f"--local_device_ids / {ENV_LOCAL_DEVICE_IDS}={text!r}: expected comma-separated "
                         "integers, e.g. 0,1,2,3") from None
    return ids or None


def settings_from(coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None, local_device_ids: str | Sequence[int] | None = None,
                  cluster_detection: str | None = None,
                  environ: dict[str, str] | None = None) -> DistributedSettings:
    """Flags first, then the DYSEN_* environment variables; validated, with errors naming the fix."""
    env = os.environ if environ is None else environ

    def pick(value: Any, name: str) -> Any:
        return value if value not in (None, "") else (env.get(name) or None)

    def as_int(value: Any, flag: str, name: str) -> int | None:
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"--{flag} / {name}={value!r} must be an integer") from None

    settings = DistributedSettings(
        coordinator_address=pick(coordinator_address, ENV_COORDINATOR),
        num_processes=as_int(pick(num_processes, ENV_NUM_PROCESSES), "num_processes", ENV_NUM_PROCESSES),
        process_id=as_int(pick(process_id, ENV_PROCESS_ID), "process_id", ENV_PROCESS_ID),
        local_device_ids=parse_device_ids(pick(local_device_ids, ENV_LOCAL_DEVICE_IDS)),
        cluster_detection=(pick(cluster_detection, ENV_CLUSTER_DETECTION) or "").lower())
    modes = ("", "none", "auto", *JAX_DETECTION_METHODS)
    if settings.cluster_detection not in modes:
        raise ValueError(f"--cluster_detection / {ENV_CLUSTER_DETECTION}={settings.cluster_detection!r}: "
                         f"use one of {', '.join(repr(m) for m in modes)}")
    explicit = (settings.coordinator_address, settings.num_processes, settings.process_id)
    if any(v is not None for v in explicit) and settings.cluster_detection in ("", "none"):
        missing = [flag for flag, v in zip(("--coordinator_address", "--num_processes", "--process_id"), explicit)
                   if v is None]
        if missing and settings.num_processes != 1:
            raise ValueError(f"an explicit multi-process run needs --coordinator_address HOST:PORT, "
                             f"--num_processes N and --process_id I (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, "
                             f"{ENV_PROCESS_ID}); missing {', '.join(missing)}")
        if settings.num_processes is not None and settings.num_processes < 1:
            raise ValueError(f"--num_processes={settings.num_processes} must be at least 1")
        if settings.process_id is not None and settings.num_processes is not None and not (
                0 <= settings.process_id < settings.num_processes):
            raise ValueError(f"--process_id={settings.process_id} must be in 0..{settings.num_processes - 1} "
                             f"(--num_processes={settings.num_processes})")
        if settings.coordinator_address is not None and ":" not in settings.coordinator_address:
            raise ValueError(f"--coordinator_address={settings.coordinator_address!r} must be HOST:PORT, "
                             "e.g. 10.0.0.1:12355")
    return settings


def _slurm_multi_task(env: dict[str, str]) -> bool:
    """A SLURM step with more than one task (jax's SlurmCluster needs all of these)."""
    needed = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    return all(v in env for v in needed) and int(env["SLURM_NTASKS"]) > 1


def _on_cloud_tpu_vm() -> bool:
    try:
        from jax._src.clusters.cloud_tpu_cluster import running_in_cloud_tpu_vm
    except ImportError:  # jax moved it: no automatic TPU detection, --cluster_detection=auto still works
        return False
    return bool(running_in_cloud_tpu_vm)


def plan_initialization(settings: DistributedSettings, environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The keyword arguments for `jax.distributed.initialize`, or None when this is a single process."""
    env = os.environ if environ is None else environ
    ids = list(settings.local_device_ids) if settings.local_device_ids else None
    mode = settings.cluster_detection
    if mode == "none":
        return None
    if mode == "auto" or mode in JAX_DETECTION_METHODS:
        kwargs: dict[str, Any] = {"local_device_ids": ids,
                                  "cluster_detection_method": None if mode == "auto" else mode}
        for name in ("coordinator_address", "num_processes", "process_id"):
            if getattr(settings, name) is not None:
                kwargs[name] = getattr(settings, name)
        return kwargs
    if settings.coordinator_address is not None or settings.num_processes is not None:
        if settings.num_processes == 1:
            return None
        return {"coordinator_address": settings.coordinator_address, "num_processes": settings.num_processes,
                "process_id": settings.process_id, "local_device_ids": ids}
    if _slurm_multi_task(env) or _on_cloud_tpu_vm():
        return {"local_device_ids": ids}
    return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: str | Sequence[int] | None = None,
               cluster_detection: str | None = None) -> bool:
    """Joins this process to the multi-process run described by the arguments / environment / cluster.

    Returns True when `jax.distributed` was initialised (now or before), False for a single process.
    Must run before any JAX computation (jax refuses once a backend exists).
    """
    import jax

    if jax.distributed.is_initialized():
        return True
    kwargs = plan_initialization(settings_from(coordinator_address, num_processes, process_id,
                                               local_device_ids, cluster_detection))
    if kwargs is None:
        return False
    # Multi-process CPU runs (tests, local_multiprocess.sh) all-reduce through gloo; set it explicitly
    # in case a jax build defaults to none (no effect on GPU/TPU, which use NCCL / ICI).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v is not None})
    return True


def local_input(batch_sharding: Any, global_batch_size: int, num_streams: int) -> tuple[list[int], int]:
    """(the input streams this process must build, its rows per batch) for a batch sharding.

    The global batch is `num_streams` blocks of B/S rows, block s from stream s. This process's
    rows are those its addressable devices hold (`make_array_from_process_local_data` takes them in
    ascending row order); each stream block must lie wholly inside them or wholly outside, so the
    process builds whole streams, in ascending order, and its local batch is their concatenation.
    """
    import jax

    if num_streams < 1:
        raise ValueError(f"config.data.input_streams={num_streams} must be at least 1")
    if global_batch_size % num_streams:
        raise ValueError(f"config.train.batch_size={global_batch_size} must be divisible by "
                         f"config.data.input_streams={num_streams}")
    rows_per_stream = global_batch_size // num_streams
    local_rows: set[int] = set()
    for device, index in batch_sharding.devices_indices_map((global_batch_size,)).items():
        if device.process_index == jax.process_index():
            local_rows.update(range(*index[0].indices(global_batch_size)))
    streams = []
    for s in range(num_streams):
        block = set(range(s * rows_per_stream, (s + 1) * rows_per_stream))
        held = block & local_rows
        if held and held != block:
            raise ValueError(
                f"input stream {s} (batch rows {s * rows_per_stream}..{(s + 1) * rows_per_stream - 1}) is split "
                f"over processes: with {jax.process_count()} processes set config.data.input_streams to a "
                f"multiple of {jax.process_count()} that divides config.train.batch_size={global_batch_size}")
        if held:
            streams.append(s)
    if not streams:
        raise ValueError(f"process {jax.process_index()} holds no batch rows: the batch sharding must cover "
                         "every process's devices (config.mesh)")
    return streams, len(streams) * rows_per_stream
