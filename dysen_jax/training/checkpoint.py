"""Orbax checkpoints of the train state: keep-N, async, restored onto any mesh."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


# Replica-parallel saving (orbax's default off GPU) splits every replicated array into one slice per
# replica, each cut by its own dispatched (and first compiled) jax op: on 8 devices that is ~17 000 ops for
# the smoke train state's 2139 leaves (benchmarks/checkpoint_save.py: 28 s first save, 10.5 s later ones;
# 3.8 s / 4.5 s with this). Arrays whose slices would be under this size are saved whole by one replica;
# large ones keep the parallel write.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def use_replica_parallel_only_for_large_arrays() -> None:
    """Registers orbax's jax.Array handler with MIN_REPLICA_SLICE_BYTES (idempotent, process-wide)."""
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(handler, "_min_slice_bytes_for_replica_parallel", None) == MIN_REPLICA_SLICE_BYTES:
        return
    store = getattr(handler, "_array_metadata_store", None)  # keep the default handler's metadata store
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
                                                  array_metadata_store=store),
        override=True)


def checkpoint_manager(workdir: str, keep: int = 2) -> ocp.CheckpointManager:
    """Manager over <workdir>/checkpoints (absolute path, created if missing)."""
    use_replica_parallel_only_for_large_arrays()
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
    return ocp.CheckpointManager(directory, options=options)


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings (what restore lays the arrays out as)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, int] | None:
    """(state, step) of the newest checkpoint, or None when there is none."""
    step = manager.latest_step()
    if step is None:
        return None
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    return state, int(step)


def save(manager: ocp.CheckpointManager, step: int, state: Any, force: bool = False) -> None:
    """Saves `state` as `step` (asynchronously), unless that step is already saved or being saved: a
    SIGTERM or non-finite stop right after the periodic save of the same step must not fail (the state
    of a step is a function of the step, so the existing checkpoint is the same)."""
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_matching_params(workdir: str, abstract_params: Any, name: str = "ema_params",
                            what: str = "init_from.checkpoint") -> tuple[Any, list[str], list[str]]:
    """`name` ("ema_params" or "params") of the newest checkpoint in <workdir>/checkpoints, restored
    for the params that the new model also has under the same path and shape (laid out as
    `abstract_params`' shardings say). Returns (flat {path: array}, paths of the new model that the
    checkpoint lacks, paths of the checkpoint that the new model lacks). What a stage starts from when
    `init_from.checkpoint` names the previous one, and what sampling loads (only the params: the
    optimizer state is never read). `what` names the setting that pointed here, for the error messages."""
    from flax.traverse_util import flatten_dict

    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{what}={workdir!r} has no checkpoints/ folder: point it at the workdir of a "
                                "training run (`python -m dysen_jax.train --workdir=...`)")
    manager = ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler())  # read-only use
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{what}={workdir!r}: no checkpoint in {directory}: train first")
    saved = manager.item_metadata(step)
    if name not in saved:
        raise ValueError(f"the checkpoint in {directory} has no {name!r} (it holds {sorted(saved)})")
    saved_flat = flatten_dict(dict(saved[name]), sep="/")
    new_flat = flatten_dict(dict(abstract_params), sep="/")
    common = {p: a for p, a in new_flat.items() if p in saved_flat}
    wrong = [f"{p}: checkpoint {tuple(saved_flat[p].shape)} vs model {tuple(a.shape)}" for p, a in common.items()
             if tuple(saved_flat[p].shape) != tuple(a.shape)]
    if wrong:
        raise ValueError(f"{what}={workdir!r}: {len(wrong)} params have other shapes than this config's model, e.g. "
                         + "; ".join(wrong[:5]))
    from flax.traverse_util import unflatten_dict

    item = {name: unflatten_dict(common, sep="/")}
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                                 partial_restore=True))
    manager.close()
    return (flatten_dict(dict(restored[name]), sep="/"), sorted(set(new_flat) - set(common)),
            sorted(set(saved_flat) - set(common)))
