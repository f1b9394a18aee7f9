"""XLA options for the jitted functions that initialise params and train states.

On CPU, an init's program is mostly the random initialisers' threefry bits, one set per param
leaf, and LLVM's optimisation of those takes longer than the init ever runs: the smoke config's train
state (534 param leaves) compiled in 59.8 s at XLA's default and 43.5 s at -O0 without LLVM's
expensive passes, and ran in 0.05 s / 0.06 s (`python benchmarks/init_compile.py
--config=configs/tiny.py:smoke`, AMD EPYC, 2 cores; the params differ by float rounding, ≤ 1.2e-7).
An init runs once, so its speed does not matter.
Other backends keep their defaults.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

CPU_INIT_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def init_compile_options() -> dict[str, Any] | None:
    """`compiler_options` for `jax.jit` of an init function: cheap codegen on CPU, None elsewhere."""
    return dict(CPU_INIT_COMPILE_OPTIONS) if jax.default_backend() == "cpu" else None


def jit_init(fn: Callable, **jit_kwargs: Any) -> Callable:
    """`jax.jit(fn, **jit_kwargs)` with `init_compile_options()`: for functions that create params or states."""
    return jax.jit(fn, compiler_options=init_compile_options(), **jit_kwargs)
