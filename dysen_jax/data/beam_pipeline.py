"""Preprocessing as an Apache Beam pipeline, for inputs beyond one machine (the `[beam]` extra).

    python -m dysen_jax.data.beam_pipeline --config=configs/tiny.py --output_dir=DIR -- --runner=DirectRunner
    python -m dysen_jax.data.beam_pipeline --config=... --output_dir=gs://B/data -- --runner=DataflowRunner \\
        --project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py
    (FlinkRunner / SparkRunner: --runner=FlinkRunner --flink_master=HOST:PORT, --runner=SparkRunner ...)

Pipeline options go after `--` or in `--beam_options="--runner=... ..."`. The workers need this package
(`--setup_file=./setup.py` on Dataflow) and an output_dir they and the launcher can reach (local disk for
DirectRunner, a shared file system or gs:// for clusters).

The same per-item transform as `python -m dysen_jax.preprocess`:
  item indices -> Item (source.item) -> BatchElements(plan_batch_size) -> plan the batch (concurrent LLM
  requests; the planner is built once per DoFn in setup()) -> encode each item -> key by output shard ->
  GroupByKey -> write the shard (items in index order) + its .done.json marker.
Grouping by the local job's shard (instead of WriteToTFRecord's arbitrary record placement) makes the
files byte-identical to the local runner's, with the same SHARD_PATTERN names; failures travel in the
markers and are merged into failures.jsonl, and the launcher writes the same manifest.json. Shards that
already have markers are skipped, so a failed pipeline can simply be rerun. LLM usage is counted with
Beam metrics (namespace "dysen") and reported in the manifest.
"""

from __future__ import annotations

import shlex
import time
from typing import Any, Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from dysen_jax import logs
from dysen_jax import preprocess as pp
from dysen_jax.data.sources import Item

METRICS_NAMESPACE = "dysen"


class PlanAndEncode(beam.DoFn):
    """A batch of items -> (output shard, ItemResult) per item; the planner is built once per DoFn instance."""

    def __init__(self, planner_config: dict[str, Any], job: pp.Job) -> None:
        self.planner_config = planner_config
        self.job = job
        self.counters = {k: Metrics.counter(METRICS_NAMESPACE, f"llm_{k}") for k in pp.LLM_COUNTERS}

    def setup(self) -> None:
        import ml_collections

        from dysen_jax.planner.base import planner_from_config

        self.planner = planner_from_config(ml_collections.ConfigDict(self.planner_config))

    def process(self, batch: list[Item]) -> Iterator[tuple[int, pp.ItemResult]]:
        before = pp.llm_snapshot(self.planner)
        results = list(pp.process_items(batch, self.planner, self.job.spec, self.job.vocab, max(len(batch), 1)))
        for key, value in (pp.llm_delta(before, pp.llm_snapshot(self.planner)) or {}).items():
            if value:
                self.counters[key].inc(value)
        for result in results:
            yield pp.shard_of(result.index, self.job.ranges), result


class WriteShard(beam.DoFn):
    """(shard, its items' results) -> the shard file and marker (items in index order); yields the marker."""

    def __init__(self, job: pp.Job, output_dir: str) -> None:
        self.job = job
        self.output_dir = output_dir

    def process(self, keyed: tuple[int, Any]) -> Iterator[dict[str, Any]]:
        shard, results = keyed
        yield pp.write_shard(self.job, self.output_dir, shard, sorted(results, key=lambda r: r.index))


def build(pipeline: beam.Pipeline, config: Any, job: pp.Job, output_dir: str, shards: Sequence[int]) -> Any:
    """Adds the preprocessing of output shards `shards` to `pipeline`; returns the markers' PCollection."""
    indices = [i for s in shards for i in job.ranges[s]]
    return (pipeline
            | "Indices" >> beam.Create(indices)
            | "Items" >> beam.Map(job.source.item)
            | "Batch" >> beam.BatchElements(min_batch_size=job.batch_size, max_batch_size=job.batch_size)
            | "PlanAndEncode" >> beam.ParDo(PlanAndEncode(config.planner.to_dict(), job))
            | "ByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(WriteShard(job, output_dir)))


def llm_metrics(result: Any) -> dict[str, int]:
    """The pipeline's LLM counters (committed where the runner has them, else attempted)."""
    totals = dict.fromkeys(pp.LLM_COUNTERS, 0)
    for counter in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        name = counter.key.metric.name.removeprefix("llm_")
        if name in totals:
            value = counter.committed if counter.committed is not None else counter.attempted
            totals[name] += int(value or 0)
    return totals


def run(config: Any, output_dir: str, beam_args: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the pipeline for every shard without a marker, then writes failures.jsonl + manifest.json."""
    started = time.time()
    job = pp.job_from_config(config)
    pp.make_output_dir(output_dir)
    todo = pp.pending_shards(job, output_dir, range(len(job.ranges)))
    options = PipelineOptions(list(beam_args))
    llm = dict.fromkeys(pp.LLM_COUNTERS, 0)
    if todo:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, config, job, output_dir, todo)
        result = pipeline.run()
        result.wait_until_finish()
        llm = llm_metrics(result)
    runner = options.get_all_options().get("runner") or "DirectRunner"
    run_info = {"runner": f"beam:{runner}", "shards_written": len(todo),
                "shards_skipped_on_resume": len(job.ranges) - len(todo), "seconds": round(time.time() - started, 3),
                "llm": llm}
    # LLM usage of this pipeline run (Beam counts per batch, so shard markers carry none).
    manifest = pp.finalize(job, output_dir, run_info, llm_override=llm if config.planner.backend != "rules" else {},
                           strict=True)
    logs.info(f"beam preprocess -> {output_dir}\n  {pp.format_report(manifest['report'])}")
    return manifest


def main(argv: list[str]) -> None:
    from dysen_jax.cli import FLAGS

    config = FLAGS.config
    output_dir = FLAGS.output_dir or config.data.data_dir
    if not output_dir:
        raise SystemExit("beam_pipeline needs --output_dir=DIR (or --config.data.data_dir=DIR)")
    beam_args = list(argv[1:]) + shlex.split(FLAGS.beam_options or "")
    run(config, output_dir, beam_args)


if __name__ == "__main__":
    from absl import flags

    from dysen_jax.cli import run as run_cli

    flags.DEFINE_string("beam_options", "", "Beam pipeline options, e.g. \"--runner=DataflowRunner --project=P\" "
                        "(or pass them after a `--` separator).")
    run_cli(main, extra_flags=("output_dir",))
