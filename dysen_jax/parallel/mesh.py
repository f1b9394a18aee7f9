"""Device mesh from config, and the batch / replicated shardings the train step uses.

Axes are ("data", "fsdp", "tensor"), ordered by how much they communicate: "data" splits the batch
only (gradients are all-reduced once per step), "fsdp" splits the batch *and* the parameters /
optimizer state (ZeRO-3: weights are all-gathered per layer), "tensor" splits the weights'
hidden dimensions (Megatron: activations are reduced inside every layer). The devices are laid
out so that "tensor", then "fsdp", fall within a host / ICI neighbourhood. The batch is split over
data x fsdp; which parameter dimension goes where is `parallel/logical.py`'s job.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
FSDP_AXIS = "fsdp"


def configured_sizes(mesh_cfg: Any) -> dict[str, int]:
    """The config's axis sizes (a config without `tensor` means tensor=1)."""
    defaults = {"data": -1, "fsdp": 1, "tensor": 1}
    sizes = {}
    for axis in MESH_AXES:
        value = mesh_cfg.get(axis, defaults[axis]) if hasattr(mesh_cfg, "get") else mesh_cfg[axis]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"config.mesh.{axis} must be an int (a size, or -1 for the remaining devices), "
                             f"got {value!r}")
        sizes[axis] = int(value)
    return sizes


def mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, ...]:
    """Resolves the config's axis sizes (-1 = the remaining devices) against `num_devices`."""
    named = configured_sizes(mesh_cfg)
    sizes = [named[a] for a in MESH_AXES]
    unknown = [i for i, s in enumerate(sizes) if s == -1]
    if len(unknown) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {named}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"config.mesh: axis sizes must be positive or -1, got {named}")
    known = math.prod(s for s in sizes if s != -1)
    if unknown:
        if num_devices % known:
            raise ValueError(f"config.mesh: {num_devices} devices are not divisible by the fixed axes "
                             f"{named}")
        sizes[unknown[0]] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"config.mesh {dict(zip(MESH_AXES, sizes))} uses {math.prod(sizes)} devices but "
                         f"{num_devices} are available: set one axis to -1")
    return tuple(sizes)


def device_grid(shape: Sequence[int], devices: Sequence[Any]) -> np.ndarray:
    """`devices` arranged as `shape` (data, fsdp, tensor) with the inner axes on the fastest links.

    Several TPU slices: the slices go along "data" (the only axis that crosses the slow network).
    Otherwise `mesh_utils.create_device_mesh` maps the axes onto the TPU torus / sorts GPUs by id;
    a device set it cannot lay out (a subset of a TPU slice, CPU devices) is reshaped in order,
    which already keeps "tensor" and "fsdp" inside a process since devices are numbered host-major.
    """
    devices = list(devices)
    slices = {getattr(d, "slice_index", 0) for d in devices}
    if len(slices) > 1 and shape[0] % len(slices) == 0:
        ici = (shape[0] // len(slices), *shape[1:])
        dcn = (len(slices),) + (1,) * (len(shape) - 1)
        return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, allow_split_physical_axes=True)
    try:
        return mesh_utils.create_device_mesh(tuple(shape), devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError, KeyError):
        return np.asarray(devices).reshape(shape)


def make_mesh(mesh_cfg: Any, devices: list | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    return Mesh(device_grid(shape, devices), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp, replicated over tensor."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def num_batch_shards(mesh: Mesh) -> int:
    """How many ways the batch is split (data x fsdp)."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)
