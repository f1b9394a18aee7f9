"""The Beam pipeline (DirectRunner) writes the same records, failures and counts as the local job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("apache_beam", reason="needs the [beam] extra: pip install -e '.[beam]'")

from dysen_jax import preprocess as preprocess_lib  # noqa: E402
from dysen_jax.data import beam_pipeline  # noqa: E402
from dysen_jax.data.records import FAILURES, read_manifest  # noqa: E402
from tests.helpers import tiny_test_config  # noqa: E402
from tests.test_preprocess import REPO, _configure, _llm_overrides, records, server  # noqa: E402,F401


def _decoded(directory: str) -> list[dict]:
    """Every record's features, decoded, order-independent across shards."""
    import tensorflow as tf

    out = []
    for recs in records(directory).values():
        for raw in recs:
            example = tf.train.Example.FromString(raw)
            features = {}
            for name, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                features[name] = tuple(getattr(feature, kind).value)
            out.append(features)
    return sorted(out, key=lambda f: json.dumps({k: repr(v) for k, v in sorted(f.items())}))


def test_direct_runner_cli_writes_the_local_runners_records(tmp_path):
    config = tiny_test_config()
    config.dsg.max_nodes = 4  # some items fail: the failures side file must match too
    local = str(tmp_path / "local")
    expected = preprocess_lib.preprocess(config, local, show_progress=False)
    assert 0 < expected["counts"]["failed"] < 16

    out = str(tmp_path / "beam")
    done = subprocess.run([sys.executable, "-m", "dysen_jax.data.beam_pipeline", "--config=configs/tiny.py:smoke",
                           "--config.dsg.max_nodes=4", f"--output_dir={out}", "--", "--runner=DirectRunner"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "beam:DirectRunner" in done.stdout
    assert _decoded(out) == _decoded(local)
    assert records(out) == records(local)  # stronger: same shard names, same order, same bytes
    assert open(os.path.join(out, FAILURES)).read() == open(os.path.join(local, FAILURES)).read()
    manifest = read_manifest(out)
    assert manifest["counts"] == expected["counts"] and manifest["shards"] == expected["shards"]
    assert manifest["vocab"] == expected["vocab"] and manifest["spec"] == expected["spec"]
    # Rerunning finds every shard done and only rewrites the manifest.
    again = beam_pipeline.run(config, out, ["--runner=DirectRunner"])
    assert again["report"]["this_run"]["shards_skipped_on_resume"] == 2 and records(out) == records(local)


def test_beam_reports_llm_usage_from_its_workers(tmp_path, server):  # noqa: F811 - the fixture
    config = _configure(tiny_test_config(), _llm_overrides(server, **{"data.plan_batch_size": 8}))
    manifest = beam_pipeline.run(config, str(tmp_path / "beam"), ["--runner=DirectRunner"])
    report = manifest["report"]
    assert report["planned"]["llm"] == 16 and report["written"] == 16
    assert report["llm"]["calls"] == server.calls == 16 and report["llm"]["prompt_tokens"] > 0
