"""Logical axis rules: which mesh axis each parameter dimension is split over (maxdiffusion style).

Every array of the train state gets one *logical* name per dimension from its path and shape
(`param_logical_axes`); `config.mesh.rules` maps logical names to mesh axes. The default rules are
Megatron + FSDP: the output dimension of column-parallel layers (attention q/k/v, the first MLP /
GEGLU projection, the first conv of a pair) and the input dimension of row-parallel layers
(attention out, the second MLP projection, the second conv) are "heads"/"mlp" -> "tensor"; the
other large dimension, the model width, is "embed" -> "fsdp"; embedding tables split their
vocabulary over "tensor". Scanned layer stacks ([L, ...] under `nn.scan`) keep "layers"
unsplit; conv windows, norms and biases of row-parallel layers are replicated.

Safety nets, so that any mesh works: a dimension whose size is not divisible by its mesh axis
is replicated (never an error), a mesh axis is used at most once per array, arrays smaller than
`min_shard_size` elements are replicated, and a large array whose rules leave "fsdp" unused
(e.g. its "embed" dimension does not divide) is split over "fsdp" along its largest divisible
free dimension. Optimizer state follows its parameter for free: Adam's moments sit under the
same module / param names with the same shape, and optax's scalars (counts) replicate.

Activations are not annotated: the batch enters sharded over ("data", "fsdp") and XLA's sharding
propagation places the rest from the batch and the weights.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dysen_jax.models.rgtrm import SCANNED_LAYERS
from dysen_jax.parallel.mesh import FSDP_AXIS, MESH_AXES

MeshAxes = str | tuple[str, ...] | None

# Logical dimension names param_logical_axes hands out.
LOGICAL_AXES = ("layers", "embed", "mlp", "heads", "kv", "vocab", "conv_window", "frames", "norm")

DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("layers", None),        # scanned layer stack [L, ...]
    ("embed", "fsdp"),       # model width: input of column-parallel, output of row-parallel layers
    ("mlp", "tensor"),       # hidden width of MLPs / convs (output of column-, input of row-parallel)
    ("heads", "tensor"),     # attention heads (q/k/v output, out-projection input)
    ("kv", None),            # per-head width
    ("vocab", "tensor"),     # embedding table rows
    ("conv_window", None),   # conv taps (kh, kw / frames)
    ("frames", None),        # per-frame affine table rows
    ("norm", None),          # norm scales/biases, biases of row-parallel layers, small odds and ends
)
DEFAULT_MIN_SHARD_SIZE = 2 ** 14  # elements (64 KiB in fp32): smaller arrays are replicated

# Module names (the path component above `kernel` / `bias`), diffusers / transformers / ours.
HEAD_SPLIT = {"query", "key", "value"}          # DenseGeneral [in, heads, head_dim]
HEAD_MERGE = {"out"}                             # DenseGeneral [heads, head_dim, out]
QKV_DENSE = {"to_q", "to_k", "to_v", "q_proj", "k_proj", "v_proj"}  # Dense [in, heads * head_dim]
OUT_DENSE = {"to_out_0", "out_proj"}             # Dense [heads * head_dim, out]
# The pooled-condition projections (unet3d.pooled_conditions) are added to the output of
# time_embedding.linear_2, so they take its row-parallel layout: split column-parallel, the two addends
# of the timestep embedding had their width on different mesh axes, and on a (2, 2, 2) mesh XLA then
# computed wrong gradients for them and the time embedding (up to 50% off; the one-device float32
# gradients match float64 to 1e-7; the loss itself was right). tests/test_sharding.py guards it.
ROW_PARALLEL = {"to_out_0", "out", "out_proj", "fc2", "net_2", "proj_out", "linear_2", "conv_out", "pooled_text",
                "pooled_dsg"}
_NUMBERED_CONV = re.compile(r"^conv(\d+)$")     # conv1/conv2 (ResNet), conv1..conv4 (temporal): pairs


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """Logical -> mesh axis rules and the size under which arrays replicate (config.mesh)."""

    rules: tuple[tuple[str, MeshAxes], ...] = DEFAULT_RULES
    min_shard_size: int = DEFAULT_MIN_SHARD_SIZE

    def __post_init__(self):
        table = {}
        for pair in self.rules:
            if len(pair) != 2:
                raise ValueError(f"config.mesh.rules: each rule is a (logical name, mesh axis or None) pair, "
                                 f"got {pair!r}")
            name, axes = pair
            if name not in LOGICAL_AXES:
                raise ValueError(f"config.mesh.rules: unknown logical axis {name!r}; known: {', '.join(LOGICAL_AXES)}")
            for axis in _as_tuple(axes):
                if axis not in MESH_AXES:
                    raise ValueError(f"config.mesh.rules: {name!r} -> {axes!r} names no mesh axis; use None or "
                                     f"any of {', '.join(MESH_AXES)}")
            table.setdefault(name, _as_tuple(axes))  # first rule for a name wins (as in flax's logical rules)
        if int(self.min_shard_size) < 0:
            raise ValueError(f"config.mesh.min_shard_size must be >= 0, got {self.min_shard_size}")
        object.__setattr__(self, "_table", table)

    @classmethod
    def from_config(cls, mesh_cfg: Any) -> "ShardingRules":
        """From config.mesh (`rules`, `min_shard_size`; either may be absent: the defaults)."""
        get = mesh_cfg.get if hasattr(mesh_cfg, "get") else (lambda k, d: d)
        rules = get("rules", DEFAULT_RULES)
        return cls(tuple((str(n), _normalise(a)) for n, a in rules),
                   int(get("min_shard_size", DEFAULT_MIN_SHARD_SIZE)))

    def mesh_axes(self, logical: str | None) -> tuple[str, ...]:
        """Mesh axes of a logical name (none when it has no rule: replicated)."""
        return self._table.get(logical, ()) if logical else ()


def _normalise(axes: Any) -> MeshAxes:
    if axes is None or isinstance(axes, str):
        return axes
    return tuple(str(a) for a in axes)


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
    """A pytree key path as plain strings (dict keys, attribute names, sequence indices)."""
    names = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                names.append(str(getattr(key, attr)))
                break
        else:
            names.append(str(key))
    return tuple(names)


def _row_parallel(module: str) -> bool:
    numbered = _NUMBERED_CONV.match(module)
    if numbered:
        return int(numbered.group(1)) % 2 == 0
    return module in ROW_PARALLEL


def param_logical_axes(names: Sequence[str], shape: Sequence[int]) -> tuple[str, ...]:
    """One logical name per dimension of the array at path `names` (see the module docstring)."""
    shape = tuple(shape)
    if SCANNED_LAYERS in names and len(shape) >= 1:
        return ("layers",) + _unstacked_axes(names, shape[1:])
    return _unstacked_axes(names, shape)


def _unstacked_axes(names: Sequence[str], shape: tuple[int, ...]) -> tuple[str, ...]:
    ndim = len(shape)
    leaf = names[-1] if names else ""
    module = names[-2] if len(names) >= 2 else ""
    row = _row_parallel(module)
    if ndim == 0:
        return ()
    if leaf == "embedding" and ndim == 2:
        return ("vocab", "embed")
    if leaf == "kernel" and ndim >= 2:
        if module in HEAD_SPLIT and ndim == 3:
            return ("embed", "heads", "kv")
        if module in HEAD_MERGE and ndim == 3:
            return ("heads", "kv", "embed")
        if module in QKV_DENSE and ndim == 2:
            return ("embed", "heads")
        if module in OUT_DENSE and ndim == 2:
            return ("heads", "embed")
        in_out = ("mlp", "embed") if row else ("embed", "mlp")
        return ("conv_window",) * (ndim - 2) + in_out  # Dense [in, out]; conv [taps..., in, out]
    if leaf == "bias":
        if module in HEAD_SPLIT and ndim == 2:
            return ("heads", "kv")
        if ndim == 1:
            return ("norm",) if row else ("mlp",)
    if module == "frame_affine" and ndim == 2:
        return ("frames", "norm")
    return ("norm",) * ndim


def logical_to_spec(logical: Sequence[str], shape: Sequence[int], mesh_sizes: Mapping[str, int],
                    rules: ShardingRules) -> P:
    """PartitionSpec for `shape` under `rules`: non-dividing dims and re-used mesh axes replicate."""
    used: set[str] = set()
    spec: list[MeshAxes] = []
    for name, size in zip(logical, shape):
        axes = tuple(a for a in rules.mesh_axes(name) if mesh_sizes.get(a, 1) > 1 and a not in used)
        split = math.prod(mesh_sizes[a] for a in axes)
        if not axes or size % split:
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    fsdp = mesh_sizes.get(FSDP_AXIS, 1)
    if fsdp > 1 and FSDP_AXIS not in used:  # keep ZeRO-3's memory saving when the rules' dim did not divide
        free = [d for d, s in enumerate(spec) if s is None and shape[d] % fsdp == 0]
        if free:
            spec[max(free, key=lambda d: shape[d])] = FSDP_AXIS
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def leaf_spec(names: Sequence[str], shape: Sequence[int], mesh_sizes: Mapping[str, int],
              rules: ShardingRules) -> P:
    """PartitionSpec of one train-state array (params, EMA, optimizer moments, counters)."""
    if math.prod(shape) < rules.min_shard_size or not shape:
        return P()
    return logical_to_spec(param_logical_axes(names, shape), shape, mesh_sizes, rules)


def state_specs(tree: Any, mesh_sizes: Mapping[str, int], rules: ShardingRules = ShardingRules()) -> Any:
    """PartitionSpec per leaf of `tree` (arrays or ShapeDtypeStructs) for a mesh of `mesh_sizes`
    ({axis: size}; no devices needed, so it also sizes meshes this machine does not have)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: leaf_spec(path_names(path), tuple(x.shape), mesh_sizes, rules), tree)


def state_shardings(tree: Any, mesh: Mesh, rules: ShardingRules = ShardingRules()) -> Any:
    """NamedSharding per leaf of the train state (params, EMA params, optimizer state, step)."""
    specs = state_specs(tree, dict(mesh.shape), rules)
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, P))


def shard_shape(shape: Sequence[int], spec: P, mesh_sizes: Mapping[str, int]) -> tuple[int, ...]:
    """The per-device block of an array of `shape` laid out as `spec`."""
    out = list(shape)
    for dim, axes in enumerate(spec):
        out[dim] //= math.prod(mesh_sizes[a] for a in _as_tuple(axes))
    return tuple(out)
