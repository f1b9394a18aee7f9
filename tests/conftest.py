"""Test setup: 8 fake CPU devices so sharding over a mesh is exercised for real, and a persistent
XLA compilation cache shared by the tests and the CLI subprocesses they start (same programs are
compiled once per session instead of once per call)."""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "dysen_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# The slowest test modules first (their summed --durations, 2026-12-02), so under `pytest -n 2` (pytest-xdist)
# the long multi-process / resume / sharding runs overlap with each other and the many short tests instead
# of forming a tail. With `--dist loadgroup` (the README's command) the modules marked xdist_group run whole
# on one worker (their module fixtures are built once) and every other test is handed out on its own.
SLOW_FIRST = ("test_train_loop", "test_multihost", "test_evaluate", "test_notebooks", "test_models", "test_train",
              "test_sharding", "test_unet_remat", "test_autoencoder_stage", "test_pretrained_init", "test_unet_parity",
              "test_latent_diffusion")


def pytest_configure(config):
    # For `--dist load`: xdist first hands each worker a quarter of the suite in order, which gave one worker
    # every slow test (1913 s of the suite's 2682 s); one test at a time balances them.
    if config.pluginmanager.hasplugin("xdist") and config.getoption("maxschedchunk", None) is None:
        config.option.maxschedchunk = 1


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        return SLOW_FIRST.index(module) if module in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order inside a module is kept
