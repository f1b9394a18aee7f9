"""Evaluate trained runs: generate the evaluation set, score it, print and write one table.

    python -m dysen_jax.evaluate --config=configs/tiny.py --workdir=DIR[,DIR...] [--seeds=0,1,2]
        [--label=NAME] [--table=PATH_PREFIX]

For every workdir (a run trained with --config) and sampling seed, the run's EMA params generate
one clip per evaluation caption; the clips are scored with the metrics the config's `evaluate`
section enables:

* TriRec (eq. 7), timed recall, action-order accuracy, triplet precision, exact plans: a visual
  scene-graph parser (`evaluate.parser`, "shapes" = the exact dynamic-shapes parser) reads the
  events of each clip, scored against the caption's gold events, overall and per number of actions.
* FVD (`evaluate.fvd`, I3D) and FID (`evaluate.fid`, InceptionV3 over all frames) against the
  real clips of the split: heavy, off by default on CPU.
* CLIPSIM (`evaluate.clip_path`, a local transformers CLIPModel folder): mean frame-caption cosine.
* IS (`evaluate.c3d_path`, a local C3D safetensors file): inception score of C3D class probabilities.
* Held-out loss (`evaluate.heldout_loss`, needs the real clips): the training loss of the real clips
  given their captions and plans at fixed timesteps and noise (metrics/heldout_loss.py), once per
  workdir (it does not depend on the sampling seed). It separates conditioning variants before their
  samples are good enough to parse.

The evaluation set: for the dynamic-shapes dataset the held-out split (`heldout_split`: equally
many captions with 1..evaluate.max_actions actions, sequential and concurrent, caption order !=
time order in half of the multi-step ones, drawn from dataset seed evaluate.split_seed, never the
training seed); otherwise `evaluate.captions_file` (JSONL: caption, optional video path and gold
events). Each clip is conditioned on the plan of `evaluate.plan`: "planner" (config.planner on the
caption, the full Dysen pipeline) or "gold" (the split's gold events).

The table has one row per --label: mean ± spread (sample std) over all workdirs x seeds, plus a
"ground truth" row (the real clips through the same parser and CLIP/C3D). Rows of other labels
already in the --table JSON are kept, so several configs (Table 4's rows) end up in one table:
PATH_PREFIX.json (everything, per run too) and PATH_PREFIX.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from dysen_jax import logs
from dysen_jax.dsg.schema import DSGError, Event, Plan

PARSER_METRICS = ("trirec", "timed_recall", "order_accuracy", "triplet_precision", "exact")
BY_ACTIONS_METRICS = ("trirec", "timed_recall", "order_accuracy")
BY_PREDICATE = "by_predicate"   # TriRec's recall per gold action, pooled over the set's clips
GROUND_TRUTH = "ground truth"


# --- the evaluation set -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvalItem:
    """One evaluation caption with its gold events (if known) and real clip (if any)."""

    caption: str
    events: tuple[Event, ...] | None = None
    video: np.ndarray | None = None        # uint8 [F, H, W, 3]
    structure: str = ""                    # "sequential" | "concurrent"
    reordered: bool = False                # caption order != time order

    @property
    def num_actions(self) -> int:
        return len(self.events or ())


def _structure(events: Sequence[Event]) -> str:
    starts = [e.start for e in events]
    return "concurrent" if len(set(starts)) < len(starts) else "sequential"


def _reordered(caption_order: Sequence[int], events: Sequence[Event]) -> bool:
    """Whether some clause is told before an event that happens earlier."""
    pairs = [(caption_order[i], events[i].start) for i in range(len(events))]
    return any(ci < cj and si > sj for ci, si in pairs for cj, sj in pairs)


def heldout_split(num: int, num_frames: int, resolution: int, max_actions: int = 4, seed: int = 20261,
                  max_tries: int = 200) -> list[EvalItem]:
    """The held-out dynamic-shapes split (see the module docstring), deterministic in its arguments.

    Quotas per number of actions n = num // max_actions (the remainder goes to the largest n); for
    n >= 2 half the captions are reordered; sequential and concurrent clips share what is possible
    (n = 2 concurrent clips cannot be reordered). Examples are drawn from `make_example(i, seed)`
    in index order until every quota is filled (or max_tries * num draws).
    """
    from dysen_jax.data.shapes import make_example

    if num < 1 or max_actions < 1:
        raise ValueError(f"evaluate.num_videos={num} and evaluate.max_actions={max_actions} must be >= 1")
    per_n = {n: num // max_actions for n in range(1, max_actions + 1)}
    per_n[max_actions] += num - sum(per_n.values())
    quota: dict[tuple[int, str, bool], int] = {}
    for n, count in per_n.items():
        if n == 1:
            quota[(1, "sequential", False)] = count
            continue
        reordered = count // 2
        cells = [("sequential", True), ("concurrent", True)] if n > 2 else [("sequential", True)]
        for i, cell in enumerate(cells):
            quota[(n, *cell)] = reordered // len(cells) + (i < reordered % len(cells))
        in_order = count - reordered
        for i, structure in enumerate(("sequential", "concurrent")):
            quota[(n, structure, False)] = in_order // 2 + (i < in_order % 2)
    items: list[EvalItem] = []
    for index in range(max_tries * num):
        if len(items) == num:
            break
        ex = make_example(index, seed=seed, num_frames=num_frames, resolution=resolution, max_actions=max_actions)
        key = (len(ex.events), _structure(ex.events), _reordered(ex.caption_order, ex.events))
        if quota.get(key, 0) > 0:
            quota[key] -= 1
            items.append(EvalItem(ex.caption, ex.events, ex.video, key[1], key[2]))
    if len(items) < num:
        logs.info(f"heldout split: filled {len(items)} of {num} items within {max_tries * num} draws")
    return sorted(items, key=lambda it: (it.num_actions, it.structure, it.reordered))


def captions_split(path: str, num: int) -> list[EvalItem]:
    """Items of a JSONL file: {"caption": str, "video": optional path, "events": optional gold events}."""
    from dysen_jax.data.video_io import read_video

    if not path:
        raise ValueError("evaluate.captions_file is empty: give a JSONL of {\"caption\", \"video\"?, \"events\"?} "
                         "for datasets other than dynamic_shapes")
    items = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not str(row.get("caption", "")).strip():
                raise ValueError(f"{path}:{line_no}: each line needs a non-empty \"caption\"")
            events = tuple(Event.from_json(e) for e in row["events"]) if row.get("events") else None
            video = read_video(os.path.join(os.path.dirname(path), row["video"])) if row.get("video") else None
            items.append(EvalItem(row["caption"], events, video, _structure(events) if events else ""))
            if len(items) == num:
                break
    if not items:
        raise ValueError(f"{path} holds no captions")
    return items


def evaluation_items(config: Any) -> list[EvalItem]:
    """The evaluation set the config describes."""
    ev = config.evaluate
    if config.data.dataset == "dynamic_shapes":
        return heldout_split(ev.num_videos, config.data.num_frames, config.data.resolution, ev.max_actions,
                             ev.split_seed)
    return captions_split(ev.captions_file, ev.num_videos)


# --- metrics ---------------------------------------------------------------------------------------------
class Scorers:
    """The feature models the config enables, built once and shared by every run."""

    def __init__(self, config: Any, progress: bool = True) -> None:
        from dysen_jax.metrics.trirec import parser_by_name

        ev = config.evaluate
        self.batch_size = int(ev.batch_size)
        self.parser = parser_by_name(ev.parser) if ev.parser else None
        self.i3d = self.inception = self.clip = self.c3d = None
        if ev.fvd:
            from dysen_jax.metrics.fvd import I3DFeatures
            self.i3d = I3DFeatures(ev.i3d_path or None, batch_size=self.batch_size, progress=progress)
        if ev.fid:
            from dysen_jax.metrics.fid import InceptionFeatures
            self.inception = InceptionFeatures(ev.inception_path or None, batch_size=4 * self.batch_size,
                                               progress=progress)
        if ev.clip_path:
            from dysen_jax.metrics.clipsim import CLIPSimilarity
            self.clip = CLIPSimilarity(ev.clip_path, batch_size=self.batch_size, progress=progress)
        if ev.c3d_path:
            from dysen_jax.metrics.inception_score import C3DClassifier
            self.c3d = C3DClassifier(ev.c3d_path, batch_size=self.batch_size, progress=progress)
        self.splits = int(ev.is_splits)

    def score(self, items: Sequence[EvalItem], videos: np.ndarray, plans: Sequence[Plan],
              real: np.ndarray | None) -> dict[str, Any]:
        """Metrics of one generated set (videos uint8 [N, F, H, W, 3], in item order)."""
        out: dict[str, Any] = {}
        if self.parser is not None and all(it.events for it in items):
            from dysen_jax.metrics.trirec import found_by_predicate, mean_scores, recall_by_predicate, score_video

            parsed = [self.parser(v, plan) for v, plan in zip(videos, plans)]
            per_item = [score_video(events, it.events) for events, it in zip(parsed, items)]
            out.update(mean_scores(per_item))
            out["by_actions"] = {str(n): mean_scores([s for s, it in zip(per_item, items) if it.num_actions == n])
                                 for n in sorted({it.num_actions for it in items})}
            out[BY_PREDICATE] = recall_by_predicate([found_by_predicate(events, it.events)
                                                     for events, it in zip(parsed, items)])
        if self.clip is not None:
            out["clipsim"] = float(np.mean(self.clip(videos, [it.caption for it in items])))
        if self.c3d is not None:
            from dysen_jax.metrics.inception_score import inception_score

            out["is"], out["is_std"] = inception_score(self.c3d(videos), self.splits)
        if real is not None and self.i3d is not None:
            from dysen_jax.metrics.fvd import fvd

            out["fvd"] = fvd(real, videos, self.i3d)
        if real is not None and self.inception is not None:
            from dysen_jax.metrics.fid import fid

            out["fid"] = fid(real.reshape(-1, *real.shape[2:]), videos.reshape(-1, *videos.shape[2:]), self.inception)
        return out


# --- generation ----------------------------------------------------------------------------------------------
def conditioning_plans(config: Any, items: Sequence[EvalItem]) -> tuple[list[Plan], dict[str, int]]:
    """The plan each clip is generated from (evaluate.plan), and how many came from where."""
    from dysen_jax.dsg.build import plan_from_events
    from dysen_jax.planner.base import plan_batch, planner_from_config

    source = config.evaluate.plan
    if source not in ("planner", "gold"):
        raise ValueError(f"evaluate.plan={source!r}: use 'planner' (config.planner on each caption) or 'gold'")
    counts = {"planner": 0, "gold": 0}
    if source == "gold":
        if not all(it.events for it in items):
            raise ValueError("evaluate.plan='gold' needs gold events for every caption (the captions file lacks some)")
        return [plan_from_events(it.events) for it in items], {"planner": 0, "gold": len(items)}
    plans = []
    for it, outcome in zip(items, plan_batch(planner_from_config(config.planner), [it.caption for it in items])):
        if outcome.plan is not None:
            plans.append(outcome.plan)
            counts["planner"] += 1
        elif it.events:
            plans.append(plan_from_events(it.events))   # a failed plan falls back to the gold events
            counts["gold"] += 1
        else:
            raise DSGError(f"the planner failed on {it.caption!r} ({'; '.join(outcome.errors)}) and it has no gold events")
    return plans, counts


def generate_set(experiment: Any, params: Any, items: Sequence[EvalItem], plans: Sequence[Plan], seed: int,
                 batch_size: int = 8, progress: bool = True) -> np.ndarray:
    """uint8 [N, F, H, W, 3]: clip i sampled from plan i with seed `seed * 1_000_003 + i`, in batches of
    `batch_size` (a clip does not depend on its batch-mates; the last batch is padded, so one compile)."""
    from tqdm.auto import tqdm

    from dysen_jax.sample import generate_batch

    batch_size = max(1, min(int(batch_size), len(items)))
    clips = []
    for start in tqdm(range(0, len(items), batch_size), desc=f"generate (seed {seed})", disable=not progress,
                      leave=False):
        index = list(range(start, min(start + batch_size, len(items))))
        padded = index + [index[-1]] * (batch_size - len(index))
        videos = generate_batch(experiment, params, [items[i].caption for i in padded], [plans[i] for i in padded],
                                [seed * 1_000_003 + i for i in padded])
        clips.append(videos[:len(index)])
    return np.concatenate(clips)


# --- runs -> table -------------------------------------------------------------------------------------------
def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{metric: {"mean", "std", "n"}} over runs (std: sample std, 0 for one run), by_actions likewise;
    by_predicate: {predicate: {"recall": stats, "gold": gold triplets per run}}."""
    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "n": len(values)}

    metrics = [k for k in runs[0]["metrics"] if k not in ("by_actions", BY_PREDICATE)]
    out: dict[str, Any] = {k: stats([r["metrics"][k] for r in runs]) for k in metrics}
    if "by_actions" in runs[0]["metrics"]:
        out["by_actions"] = {n: {k: stats([r["metrics"]["by_actions"][n][k] for r in runs]) for k in BY_ACTIONS_METRICS}
                             for n in runs[0]["metrics"]["by_actions"]}
    if BY_PREDICATE in runs[0]["metrics"]:   # the same items in every run, so the same gold counts
        out[BY_PREDICATE] = {p: {"recall": stats([r["metrics"][BY_PREDICATE][p]["recall"] for r in runs]),
                                 "gold": v["gold"]} for p, v in runs[0]["metrics"][BY_PREDICATE].items()}
    return out


def evaluate_runs(config: Any, workdirs: Sequence[str], seeds: Sequence[int], progress: bool = True,
                  items: Sequence[EvalItem] | None = None) -> dict[str, Any]:
    """Every (workdir, seed) run scored; returns {"runs": [...], "summary": ..., "ground_truth": ...}."""
    from dysen_jax.experiment import load_experiment
    from dysen_jax.sample import load_params

    if not workdirs or not seeds:
        raise ValueError("give at least one --workdir and one --seeds value")
    items = list(items) if items is not None else evaluation_items(config)
    logs.info(f"evaluate: {len(items)} captions x {len(seeds)} seed(s) x {len(workdirs)} run(s)")
    scorers = Scorers(config, progress)
    plans, plan_counts = conditioning_plans(config, items)
    real = np.stack([it.video for it in items]) if all(it.video is not None for it in items) else None
    runs = []
    for workdir in workdirs:
        experiment = load_experiment(config, workdir)
        params = load_params(experiment, workdir)
        extra: dict[str, float] = {}
        if real is not None and config.evaluate.get("heldout_loss", False):
            from dysen_jax.metrics.heldout_loss import heldout_loss

            extra["heldout_loss"] = heldout_loss(experiment, params, real, [it.caption for it in items], plans,
                                                 seed=int(config.evaluate.split_seed))
        for seed in seeds:
            videos = generate_set(experiment, params, items, plans, seed, scorers.batch_size, progress)
            if real is not None and real.shape[1:] != videos.shape[1:]:
                raise ValueError(f"real clips are {real.shape[1:]} but the model generates {videos.shape[1:]}: "
                                 "make the captions file's videos match config.data")
            metrics = {**scorers.score(items, videos, plans, real), **extra}
            logs.info(f"evaluate {workdir} seed {seed}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
            runs.append({"workdir": workdir, "seed": int(seed), "metrics": metrics})
    result: dict[str, Any] = {"runs": runs, "summary": summarize(runs), "plans": plan_counts,
                              "num_items": len(items), "config_evaluate": config.evaluate.to_dict()}
    if real is not None:   # the real clips through the same parser / CLIP / C3D, on their own (gold) time axis
        from dysen_jax.dsg.build import plan_from_events

        truth_plans = [plan_from_events(it.events) if it.events else p for it, p in zip(items, plans)]
        result["ground_truth"] = scorers.score(items, real, truth_plans, None)
    return result


def _cell(stat: Mapping[str, float] | float | None, digits: int = 3) -> str:
    if stat is None:
        return "-"
    if isinstance(stat, Mapping):
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat["n"] > 1 else f"{stat['mean']:.{digits}f}"
    return f"{stat:.{digits}f}"


def table_metrics(rows: Mapping[str, Any]) -> list[str]:
    """Columns present in any row, in a fixed order."""
    order = list(PARSER_METRICS) + ["clipsim", "is", "fvd", "fid", "heldout_loss"]
    present = {k for row in rows.values() for k in row["summary"]} | {k for row in rows.values()
                                                                       for k in row.get("ground_truth", {})}
    return [k for k in order if k in present]


def markdown_table(rows: Mapping[str, Any]) -> str:
    """Main table (rows: labels and the ground truth; mean ± std over runs) + TriRec/order by number of
    actions + TriRec's recall by action (columns: predicates with their gold count per run)."""
    columns = table_metrics(rows)
    lines = ["| run | runs | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    truth = None
    for label, row in rows.items():
        lines.append(f"| {label} | {len(row['runs'])} | " + " | ".join(_cell(row["summary"].get(k)) for k in columns) + " |")
        truth = row.get("ground_truth") or truth
    if truth:
        lines.append(f"| {GROUND_TRUTH} | - | " + " | ".join(_cell(truth.get(k)) for k in columns) + " |")
    counts = sorted({n for row in rows.values() for n in row["summary"].get("by_actions", {})}, key=int)
    if counts:
        lines += ["", "| run | metric | " + " | ".join(f"{n} action{'s' if n != '1' else ''}" for n in counts) + " |",
                  "|---|---|" + "---|" * len(counts)]
        for label, row in rows.items():
            by = row["summary"].get("by_actions", {})
            for k in BY_ACTIONS_METRICS:
                lines.append(f"| {label} | {k} | " + " | ".join(_cell(by.get(n, {}).get(k)) for n in counts) + " |")
    gold: dict[str, int] = {}
    for row in rows.values():
        for predicate, v in row["summary"].get(BY_PREDICATE, {}).items():
            gold.setdefault(predicate, v["gold"])
    if gold:
        lines += ["", "| recall by action (gold triplets) | " + " | ".join(f"{p} ({n})" for p, n in gold.items()) + " |",
                  "|---|" + "---|" * len(gold)]
        for label, row in rows.items():
            by = row["summary"].get(BY_PREDICATE, {})
            lines.append(f"| {label} | " + " | ".join(_cell(by[p]["recall"]) if p in by else "-" for p in gold) + " |")
        if truth and BY_PREDICATE in truth:
            lines.append(f"| {GROUND_TRUTH} | " + " | ".join(
                _cell(truth[BY_PREDICATE][p]["recall"]) if p in truth[BY_PREDICATE] else "-" for p in gold) + " |")
    return "\n".join(lines) + "\n"


def write_table(result: Mapping[str, Any], label: str, prefix: str) -> tuple[str, str, dict[str, Any]]:
    """Adds (or replaces) row `label` in PREFIX.json and rewrites PREFIX.md; returns the paths and all rows."""
    json_path, md_path = prefix + ".json", prefix + ".md"
    rows: dict[str, Any] = {}
    if os.path.exists(json_path):
        with open(json_path) as f:
            rows = json.load(f).get("rows", {})
    rows[label] = result
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path + ".tmp", "w") as f:
        json.dump({"rows": rows}, f, indent=1, default=float)
    os.replace(json_path + ".tmp", json_path)
    with open(md_path, "w") as f:
        f.write(markdown_table(rows))
    return json_path, md_path, rows


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--{flag}={text!r}: give comma-separated integers, e.g. --{flag}=0,1,2") from None


def main(argv: list[str]) -> None:
    del argv
    from dysen_jax.cli import FLAGS

    workdirs = [w for w in FLAGS.workdir.split(",") if w.strip()]
    seeds = _int_list(FLAGS.seeds, "seeds")
    if "evaluate" not in FLAGS.config:
        raise SystemExit("evaluate: the config has no `evaluate` section (see configs/tiny.py)")
    prefix = FLAGS.table or os.path.join(workdirs[0], "eval", "evaluation")
    try:
        result = evaluate_runs(FLAGS.config, workdirs, seeds)
    except (DSGError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"evaluate: {err}") from err
    json_path, md_path, rows = write_table(result, FLAGS.label, prefix)
    print(markdown_table(rows), flush=True)
    logs.info(f"evaluate: wrote {json_path} and {md_path}")


if __name__ == "__main__":
    from absl import flags

    from dysen_jax.cli import run

    flags.DEFINE_string("seeds", "0", "Comma-separated sampling seeds; every workdir is sampled with each.")
    flags.DEFINE_string("label", "run", "Row name in the table (rows of other labels in --table are kept).")
    flags.DEFINE_string("table", "", "Output path prefix for .json and .md (default <first workdir>/eval/evaluation).")
    run(main, extra_flags=("workdir",), required=("workdir",))
