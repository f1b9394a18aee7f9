"""Preprocess: items (captions + videos) -> planner -> DSG tensors + text tokens -> TFRecord shards.

    python -m dysen_jax.preprocess --config=configs/tiny.py --output_dir=DIR
    python -m dysen_jax.preprocess ... --shard_index=1 --num_shards=4    # this process: shards 1, 5, 9, ...
    python -m dysen_jax.preprocess ... --finalize                        # only merge markers -> manifest

Inputs (`dysen_jax.data.sources`): the synthetic dataset, or a caption file (JSONL/CSV with video paths),
mixed with pseudo-videos made from a caption file of images (data.image_captions_file,
data.pseudo_video_ratio); how clips are cut (frame stride, random start, crop, camera moves) is
config.data too, seeded per item (see sources.py).
Output: config.data.num_shards files named like records.SHARD_PATTERN; item i goes to the shard whose
contiguous index range holds it, in index order, so every way of running the job (one process, several,
resumed, Beam) writes byte-identical files.

Splitting: `--num_shards=N --shard_index=K` makes this process write only the output shards s with
s % N == K (N processes or machines can share one output directory). Whichever process finds every
shard done at its end writes failures.jsonl and manifest.json; `--finalize` does only that.

Resume: each shard is written to `<name>.tmp` and renamed when complete, then a `<name>.done.json`
marker records its counts and failures. A rerun (after a crash or SIGKILL) skips shards that have both
files, so nothing is redone or duplicated; a half-written shard is rewritten from scratch. Markers carry
a fingerprint of the job (spec, vocabulary, input, shard ranges, planner): resuming into a directory
written with another config is refused instead of mixing the two.

Precomputed latents (`config.data.precompute_latents=True`, latent configs): after planning a batch,
its clips go through the frozen VAE encoder (`training/latents.py`, `data.latent_batch_size` clips per
jitted call, the last one padded so it compiles once) and each record also stores the posterior's
mean and logvar (see data/records.py). The encoder's fingerprint is part of the job's, so resuming with
another VAE is refused, and the manifest names it, so training with another VAE is refused too.

Failures: an unreadable row, a caption the planner cannot plan, an unreadable video or a DSG too big
for the record spec fails that item only; it goes to failures.jsonl with its stage and reason.

Report: logged at the end and stored as the manifest's "report": items, written, failed (by stage),
how items were planned (rules / llm / repaired / fallback / failed), LLM calls, cache hits and
tokens (summed over every shard's marker, so all processes and resumed runs count), and this run's
own numbers (shards written / skipped on resume, seconds, its LLM usage).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from dysen_jax import logs
from dysen_jax.data.records import FAILURES, MANIFEST, SHARD_PATTERN, RecordSpec, encode_example
from dysen_jax.data.sources import Item, Source, VideoError, load_video, source_from_config
from dysen_jax.dsg.schema import DSGError
from dysen_jax.dsg.vocab import WordVocab
from dysen_jax.planner.base import SOURCES, PlanOutcome, plan_batch

MARKER_SUFFIX = ".done.json"
STAGES: tuple[str, ...] = ("read", "plan", "video", "tensorize")  # where an item can fail
LLM_COUNTERS: tuple[str, ...] = ("calls", "cache_hits", "retries", "failures", "prompt_tokens",
                                 "completion_tokens")
DEFAULT_PLAN_BATCH_SIZE = 64
DEFAULT_LATENT_BATCH_SIZE = 8


# --- sizes and sharding -----------------------------------------------------------------------------
def build_vocab(config: Any, source: Source | None = None) -> WordVocab:
    """The vocabulary: every word of the source's texts (synthetic generator, caption file) + hash buckets."""
    source = source if source is not None else source_from_config(config)
    return WordVocab.from_texts(source.vocabulary_texts(), config.dsg.num_hash_buckets)


def shard_ranges(num_examples: int, num_shards: int) -> list[range]:
    """Contiguous, near-equal example index ranges, one per shard."""
    if num_shards < 1 or num_shards > max(num_examples, 1):
        raise ValueError(f"config.data.num_shards={num_shards} must be in [1, number of items={num_examples}]")
    bounds = [num_examples * s // num_shards for s in range(num_shards + 1)]
    return [range(bounds[s], bounds[s + 1]) for s in range(num_shards)]


def shard_of(index: int, ranges: Sequence[range]) -> int:
    """The shard whose range holds item `index`."""
    return bisect.bisect_right([r.start for r in ranges], index) - 1


def my_shards(num_output_shards: int, shard_index: int, num_shards: int) -> list[int]:
    """The output shards process `shard_index` of `num_shards` writes: s % num_shards == shard_index."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard_index={shard_index} --num_shards={num_shards}: need num_shards >= 1 and "
                         "0 <= shard_index < num_shards (one process per shard_index)")
    return [s for s in range(num_output_shards) if s % num_shards == shard_index]


# --- the per-item transform (shared by the local job and Beam) --------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class ItemResult:
    """One item's outcome: the serialized tf.train.Example, or a failure record (stage + reason)."""

    index: int
    record: bytes | None
    failure: dict[str, Any] | None
    planned_by: str | None            # PlanOutcome.source; None when the item never reached the planner
    gold_match: bool = False          # planner events == generator events (synthetic data)
    imagination: dict[str, int] = dataclasses.field(default_factory=dict)


def _failure(item: Item, stage: str, error: str, planned_by: str | None = None) -> ItemResult:
    record = {"index": item.index, "caption": item.caption, "video": item.video_path, "stage": stage,
              "error": error}
    if item.image_path:  # a pseudo-video's image
        record["image"] = item.image_path
    return ItemResult(item.index, None, record, planned_by)


def plan_items(planner: Any, items: Sequence[Item]) -> list[PlanOutcome | None]:
    """One outcome per item (None for items whose row is unusable); requests of the batch run concurrently.

    A batch that raises (a planner bug on one caption) is replanned item by item, so one bad
    caption fails alone instead of failing its whole batch.
    """
    todo = [i for i, item in enumerate(items) if item.error is None]
    captions = [items[i].caption for i in todo]
    try:
        outcomes = plan_batch(planner, captions)
    except DSGError:
        outcomes = []
        for caption in captions:
            try:
                outcomes.extend(plan_batch(planner, [caption]))
            except DSGError as err:
                outcomes.append(PlanOutcome(None, "failed", (str(err),)))
    result: list[PlanOutcome | None] = [None] * len(items)
    for i, outcome in zip(todo, outcomes):
        result[i] = outcome
    return result


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedItem:
    """An item that passed every per-item stage: its frames, DSG arrays and tokens, ready to serialize."""

    item: Item
    outcome: PlanOutcome
    video: np.ndarray
    arrays: dict[str, np.ndarray]
    tokens: np.ndarray


def prepare_item(item: Item, outcome: PlanOutcome | None, spec: RecordSpec, vocab: WordVocab) -> PreparedItem | ItemResult:
    """Item + its plan -> frames, DSG arrays and tokens, or a failure naming the stage and the reason."""
    from dysen_jax.dsg.tensorize import tensorize

    if item.error is not None or outcome is None:
        return _failure(item, "read", item.error or "the item was not planned")
    if outcome.plan is None:
        return _failure(item, "plan", "; ".join(outcome.errors) or "the planner returned no plan", outcome.source)
    try:
        video = load_video(item, spec.num_frames, spec.resolution)
    except VideoError as err:
        return _failure(item, "video", str(err), outcome.source)
    try:
        arrays = tensorize(outcome.plan.dsg, vocab, spec.dsg)
    except DSGError as err:
        return _failure(item, "tensorize", str(err), outcome.source)
    return PreparedItem(item, outcome, video, arrays, spec.encode_caption(item.caption, vocab))


def serialize_item(prepared: PreparedItem, spec: RecordSpec,
                   latent_moments: tuple[np.ndarray, np.ndarray] | None = None) -> ItemResult:
    """A prepared item (+ its VAE posterior moments when the spec stores latents) -> its record."""
    item, outcome = prepared.item, prepared.outcome
    record = encode_example(spec, prepared.video, item.caption, outcome.plan.dumps(), prepared.tokens,
                            prepared.arrays, latent_moments)
    gold = item.gold_events is not None and tuple(outcome.plan.events) == tuple(item.gold_events)
    return ItemResult(item.index, record, None, outcome.source, gold, dict(outcome.imagination))


def encode_item(item: Item, outcome: PlanOutcome | None, spec: RecordSpec, vocab: WordVocab) -> ItemResult:
    """Item + its plan -> serialized tf.train.Example, or a failure naming the stage and the reason
    (records without latents; `process_items` handles both)."""
    prepared = prepare_item(item, outcome, spec, vocab)
    return prepared if isinstance(prepared, ItemResult) else serialize_item(prepared, spec)


def process_items(items: Iterable[Item], planner: Any, spec: RecordSpec, vocab: WordVocab,
                  batch_size: int, codec: Any = None,
                  latent_batch_size: int = DEFAULT_LATENT_BATCH_SIZE) -> Iterator[ItemResult]:
    """Plans `items` in batches of `batch_size` (concurrent LLM requests) and encodes each, in order;
    when the spec stores latents, each batch's clips also go through `codec`'s encoder."""
    if batch_size < 1:
        raise ValueError(f"config.data.plan_batch_size={batch_size} must be >= 1")
    if spec.stores_latents and codec is None:
        raise ValueError("config.data.precompute_latents=True needs the VAE: run `python -m dysen_jax.preprocess` "
                         "(the Beam pipeline does not compute latents yet), or set precompute_latents=False")
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield from _process_batch(batch, planner, spec, vocab, codec, latent_batch_size)
            batch = []
    if batch:
        yield from _process_batch(batch, planner, spec, vocab, codec, latent_batch_size)


def _process_batch(batch: list[Item], planner: Any, spec: RecordSpec, vocab: WordVocab, codec: Any,
                   latent_batch_size: int) -> Iterator[ItemResult]:
    prepared = [prepare_item(item, outcome, spec, vocab) for item, outcome in zip(batch, plan_items(planner, batch))]
    ready = [p for p in prepared if isinstance(p, PreparedItem)]
    moments: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if spec.stores_latents and ready:
        means, logvars = codec.moments_of_clips(np.stack([p.video for p in ready]), latent_batch_size)
        moments = {id(p): (m, lv) for p, m, lv in zip(ready, means, logvars)}
    for p in prepared:
        yield p if isinstance(p, ItemResult) else serialize_item(p, spec, moments.get(id(p)))


# --- the job: what every run of the same config agrees on ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class Job:
    """Source, record spec, vocabulary and output shards of a config, plus a fingerprint of them that
    every shard marker carries, so a rerun with a different config cannot mix its shards with old ones."""

    source: Source
    spec: RecordSpec
    vocab: WordVocab
    ranges: tuple[range, ...]
    source_info: dict[str, Any]
    batch_size: int
    latent_vae: str = ""       # fingerprint of the VAE encoder whose moments the records store ("" = none)
    latent_source: str = ""    # config.init_from.vae that loaded it
    latent_batch_size: int = DEFAULT_LATENT_BATCH_SIZE

    @property
    def fingerprint(self) -> str:
        payload = {"spec": self.spec.to_json(), "vocab": self.vocab.to_json(), "source": self.source_info,
                   "ranges": [(r.start, r.stop) for r in self.ranges]}
        if self.latent_vae:    # only then: pixel-space jobs keep their fingerprints
            payload["latent_vae"] = self.latent_vae
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def shard_name(self, shard: int) -> str:
        return SHARD_PATTERN.format(index=shard, count=len(self.ranges))


def latent_codec(config: Any) -> Any:
    """The VAE codec preprocess encodes clips with (`data.precompute_latents`), or None."""
    if not RecordSpec.from_config(config).stores_latents:
        return None
    from dysen_jax.training.latents import codec_from_config

    return codec_from_config(config)


def job_from_config(config: Any, codec: Any = None) -> Job:
    """The job config.data / dsg / text / planner describe; `codec` (from `latent_codec`, loaded here when
    None) when the records store latents."""
    source = source_from_config(config)
    spec = RecordSpec.from_config(config)
    if spec.stores_latents and codec is None:
        codec = latent_codec(config)
    return Job(source, spec, build_vocab(config, source),
               tuple(shard_ranges(len(source), config.data.num_shards)),
               {**source.describe(), "planner": config.planner.backend,
                **({"planner_model": config.planner.llm.model} if config.planner.backend == "openai" else {})},
               int(config.data.get("plan_batch_size", DEFAULT_PLAN_BATCH_SIZE)),
               codec.encoder_fingerprint if spec.stores_latents else "",
               codec.source if spec.stores_latents else "",
               int(config.data.get("latent_batch_size", DEFAULT_LATENT_BATCH_SIZE)))


# --- shard files and markers ------------------------------------------------------------------------
def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def make_output_dir(output_dir: str) -> None:
    _gfile().makedirs(output_dir)


def write_text_atomic(path: str, text: str) -> None:
    """Writes `path` via a temp file + rename (local paths, and gs:// etc. through tf.io.gfile)."""
    gfile = _gfile()
    with gfile.GFile(path + ".tmp", "w") as f:
        f.write(text)
    gfile.rename(path + ".tmp", path, overwrite=True)


def read_marker(job: Job, output_dir: str, shard: int) -> dict[str, Any] | None:
    """A finished shard's marker, or None when the shard (file or marker) is not complete."""
    gfile = _gfile()
    path = os.path.join(output_dir, job.shard_name(shard))
    if not (gfile.exists(path) and gfile.exists(path + MARKER_SUFFIX)):
        return None
    with gfile.GFile(path + MARKER_SUFFIX, "r") as f:
        info = json.loads(f.read())
    if info.get("fingerprint") != job.fingerprint:
        raise ValueError(f"{path} was written for a different config (data, dsg, text or planner settings): "
                         "write into a new --output_dir, or delete the old shards and their .done.json markers")
    return info


def pending_shards(job: Job, output_dir: str, shards: Iterable[int]) -> list[int]:
    """The shards among `shards` not finished yet in `output_dir`."""
    return [s for s in shards if read_marker(job, output_dir, s) is None]


def write_shard(job: Job, output_dir: str, shard: int, results: Iterable[ItemResult],
                llm_usage: Callable[[], dict[str, int] | None] | None = None, progress: Any = None) -> dict[str, Any]:
    """Writes one shard from its items' results (in index order) atomically, then its marker; returns it.

    `llm_usage` is called once the results are consumed: the LLM usage of this shard, kept in its marker.
    """
    import tensorflow as tf

    name = job.shard_name(shard)
    path = os.path.join(output_dir, name)
    expected = job.ranges[shard]
    info: dict[str, Any] = {"name": name, "fingerprint": job.fingerprint, "first_index": expected.start,
                            "num_items": len(expected), "written": 0, "failed": 0, "planner_matches_gold": 0,
                            "planned": dict.fromkeys(SOURCES, 0), "failed_by_stage": dict.fromkeys(STAGES, 0),
                            "imagination": {}, "failures": []}
    seen = []
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for result in results:
            seen.append(result.index)
            if result.planned_by is not None:
                info["planned"][result.planned_by] = info["planned"].get(result.planned_by, 0) + 1
            _add(info["imagination"], result.imagination)
            if result.record is not None:
                writer.write(result.record)
                info["written"] += 1
                info["planner_matches_gold"] += int(result.gold_match)
            else:
                info["failed"] += 1
                info["failed_by_stage"][result.failure["stage"]] += 1
                info["failures"].append(result.failure)
            if progress is not None:
                progress.update(1)
    if seen != list(expected):
        raise RuntimeError(f"shard {name} got items {seen[:5]}..., expected {expected} in index order")
    _gfile().rename(path + ".tmp", path, overwrite=True)
    llm = llm_usage() if llm_usage is not None else None
    if llm is not None:
        info["llm"] = llm
    write_text_atomic(path + MARKER_SUFFIX, json.dumps(info))
    return info


# --- LLM usage ------------------------------------------------------------------------------------------
def llm_snapshot(planner: Any) -> dict[str, int] | None:
    """The planner's LLM client counters now (None for planners without an LLM client)."""
    stats = getattr(getattr(planner, "client", None), "stats", None)
    if stats is None:
        return None
    return {k: int(getattr(stats, k, 0)) for k in LLM_COUNTERS}


def llm_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {k: after[k] - before[k] for k in LLM_COUNTERS}


def _add(total: dict[str, int], part: dict[str, int] | None) -> dict[str, int]:
    for key, value in (part or {}).items():
        total[key] = total.get(key, 0) + int(value)
    return total


def _sum(parts: Iterable[dict[str, int] | None]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        _add(total, part)
    return total


# --- manifest and report --------------------------------------------------------------------------------
def finalize(job: Job, output_dir: str, run: dict[str, Any], llm_override: dict[str, int] | None = None,
             strict: bool = False) -> dict[str, Any] | None:
    """Merges every shard's marker into failures.jsonl + manifest.json; returns the manifest.

    When some shard is not done yet (another process is still writing it) returns None, or raises
    naming the missing shards when `strict`. `llm_override` replaces the markers' LLM sums (Beam,
    whose workers count LLM usage per batch, not per shard).
    """
    shards = [read_marker(job, output_dir, s) for s in range(len(job.ranges))]
    missing = [job.shard_name(s) for s, info in enumerate(shards) if info is None]
    if missing:
        if strict:
            raise RuntimeError(f"{len(missing)} shard(s) not done in {output_dir}: {missing[:4]}...; run "
                               "`python -m dysen_jax.preprocess` with the same config (and --shard_index/"
                               "--num_shards for each process) until all are written")
        return None
    failures = sorted((f for info in shards for f in info["failures"]), key=lambda f: f["index"])
    write_text_atomic(os.path.join(output_dir, FAILURES), "".join(json.dumps(f) + "\n" for f in failures))
    items = sum(len(r) for r in job.ranges)
    written = sum(i["written"] for i in shards)
    report = {
        "items": items, "written": written, "failed": len(failures),
        "planned": {k: sum(i["planned"].get(k, 0) for i in shards) for k in SOURCES},
        "failed_by_stage": {k: sum(i["failed_by_stage"].get(k, 0) for i in shards) for k in STAGES},
        "llm": llm_override if llm_override is not None else _sum(i.get("llm") for i in shards),
        "imagination": _sum(i.get("imagination") for i in shards),
        "this_run": run,
    }
    manifest = {
        "spec": job.spec.to_json(),
        "vocab": job.vocab.to_json(),
        "counts": {"items": items, "written": written, "failed": len(failures),
                   "planner_matches_gold": sum(i["planner_matches_gold"] for i in shards),
                   "shards": len(shards), "shards_skipped_on_resume": run.get("shards_skipped_on_resume", 0)},
        "report": report,
        "shards": [{k: i[k] for k in ("name", "first_index", "num_items", "written", "failed")} for i in shards],
        "source": job.source_info,
    }
    if job.latent_vae:
        manifest["latents"] = {"vae_fingerprint": job.latent_vae, "vae_source": job.latent_source}
    write_text_atomic(os.path.join(output_dir, MANIFEST), json.dumps(manifest, indent=1))
    return manifest


def format_report(report: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    planned = report["planned"]
    stages = ", ".join(f"{k} {v}" for k, v in report["failed_by_stage"].items() if v) or "none"
    lines = [f"items {report['items']}: written {report['written']}, failed {report['failed']} ({stages})",
             f"planned by: rules {planned['rules']}, llm {planned['llm']}, repaired {planned['repaired']}, "
             f"fell back {planned['fallback']}, failed {planned['failed']}"]
    llm = report["llm"]
    if llm:
        lines.append(f"LLM: {llm.get('calls', 0)} calls, {llm.get('cache_hits', 0)} cache hits, "
                     f"{llm.get('retries', 0)} retries, {llm.get('failures', 0)} failed requests, tokens "
                     f"{llm.get('prompt_tokens', 0)} prompt + {llm.get('completion_tokens', 0)} completion")
    run = report["this_run"]
    lines.append(f"this run ({run.get('runner')}): {run.get('shards_written', 0)} shard(s) written, "
                 f"{run.get('shards_skipped_on_resume', 0)} skipped on resume, {run.get('seconds', 0):.1f}s")
    return "\n  ".join(lines)


# --- the local job ------------------------------------------------------------------------------------
def preprocess(config: Any, output_dir: str, show_progress: bool = True, *, shard_index: int = 0,
               num_shards: int = 1) -> dict[str, Any] | None:
    """Runs (or resumes) this process's shards into `output_dir`; returns the manifest, or None while
    other processes' shards are still missing (the last process to finish writes it)."""
    from tqdm import tqdm

    from dysen_jax.planner.base import planner_from_config

    started = time.time()
    codec = latent_codec(config)
    job = job_from_config(config, codec)
    mine = my_shards(len(job.ranges), shard_index, num_shards)
    make_output_dir(output_dir)
    todo = pending_shards(job, output_dir, mine)
    planner = planner_from_config(config.planner) if todo else None
    at_start = llm_snapshot(planner)
    with tqdm(total=sum(len(job.ranges[s]) for s in mine), desc=f"preprocess {shard_index}/{num_shards}",
              unit="clip", disable=not show_progress) as bar:
        bar.update(sum(len(job.ranges[s]) for s in mine if s not in todo))
        for s in todo:
            before = llm_snapshot(planner)
            results = process_items((job.source.item(i) for i in job.ranges[s]), planner, job.spec, job.vocab,
                                    job.batch_size, codec, job.latent_batch_size)
            write_shard(job, output_dir, s, results, progress=bar,
                        llm_usage=lambda: llm_delta(before, llm_snapshot(planner)))  # noqa: B023 - called now
    run = {"runner": "local", "process": f"{shard_index}/{num_shards}", "shards_written": len(todo),
           "shards_skipped_on_resume": len(mine) - len(todo), "seconds": round(time.time() - started, 3),
           "llm": llm_delta(at_start, llm_snapshot(planner)) or {}}
    manifest = finalize(job, output_dir, run)
    if manifest is None:
        logs.info(f"preprocess {shard_index}/{num_shards}: wrote {len(todo)} shard(s), skipped "
                  f"{run['shards_skipped_on_resume']} in {run['seconds']:.1f}s; other processes' shards are not "
                  f"done yet: the last process to finish writes {MANIFEST} (or run with --finalize)")
        return None
    logs.info(f"preprocess -> {output_dir} (failures: {FAILURES})\n  {format_report(manifest['report'])}")
    return manifest


def finalize_only(config: Any, output_dir: str) -> dict[str, Any]:
    """Writes failures.jsonl + manifest.json from the markers; raises if a shard is missing."""
    job = job_from_config(config)
    run = {"runner": "finalize", "shards_written": 0, "shards_skipped_on_resume": 0, "seconds": 0.0}
    manifest = finalize(job, output_dir, run, strict=True)
    logs.info(f"preprocess --finalize -> {output_dir}\n  {format_report(manifest['report'])}")
    return manifest


def main(argv: list[str]) -> None:
    del argv
    from dysen_jax.cli import FLAGS

    config = FLAGS.config
    output_dir = FLAGS.output_dir or config.data.data_dir
    if not output_dir:
        raise SystemExit("preprocess needs --output_dir=DIR (or --config.data.data_dir=DIR)")
    if FLAGS.finalize:
        finalize_only(config, output_dir)
        return
    preprocess(config, output_dir, shard_index=FLAGS.shard_index, num_shards=FLAGS.num_shards)


def define_flags() -> None:
    """This job's own flags (besides --config and --output_dir)."""
    from absl import flags

    flags.DEFINE_integer("shard_index", 0, "This process's index among --num_shards processes sharing the job.")
    flags.DEFINE_integer("num_shards", 1, "How many processes share the job; this one writes the output "
                         "shards s with s % num_shards == shard_index (config.data.num_shards is the file count).")
    flags.DEFINE_bool("finalize", False, "Only merge the shard markers into failures.jsonl and manifest.json.")


if __name__ == "__main__":
    from dysen_jax.cli import run as run_cli

    define_flags()
    run_cli(main, extra_flags=("output_dir",))
