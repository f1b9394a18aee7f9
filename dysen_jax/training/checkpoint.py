"""Orbax checkpoints of the train state: keep-N, async, restored onto any mesh."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def checkpoint_manager(workdir: str, keep: int = 2) -> ocp.CheckpointManager:
    """Manager over <workdir>/checkpoints (absolute path, created if missing)."""
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
    manager.save(step, args=ocp.args.StandardSave(state), force=force)
