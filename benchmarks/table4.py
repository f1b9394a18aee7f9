"""Dysen-VDM's Table 4 (ablations) at a fixed CPU budget on the dynamic-shapes data.

    python benchmarks/table4.py --out=/tmp/table4 [--steps=200 --seeds=0,1,2 --rows=dysen,no_dysen,no_imagination,gnn]
                                [--set diffusion.frame_noise_share=0 ...]

For every row and seed, with the project's own commands (subprocesses, so this is exactly what a user
runs): `python -m dysen_jax.preprocess` into OUT/ROW/seedS/data, `python -m dysen_jax.train
--config=configs/tiny.py:VARIANT --config.seed=S --config.train.num_steps=STEPS`, then one
`python -m dysen_jax.evaluate` per row over its seeds' workdirs, all rows into OUT/table4.{json,md}
(mean ± sample std over the seeds). The rows that apply to our setting (rules planner, no LLM):

    dysen            configs/tiny.py              RGTrm over the planner's DSG (steps I-III), text + DSG
    no_dysen         configs/tiny.py:no_dysen     w/o Dysen: text only
    no_imagination   configs/tiny.py:no_imagination  DSG without step III (scene imagination)
    gnn              configs/tiny.py:gnn          RGTrm -> a plain GNN (models/gnn.py)

The budget is the same for every run: STEPS steps of batch 8 (configs/tiny.py), one CPU process; the
wall time of each run is written to OUT/runs.jsonl. `config.seed` seeds the init, the data order and
the training clips (the synthetic set is drawn from it), so the seeds differ in all three; rows with
the same seed train on the same clips. Resumable: a run whose final checkpoint exists is not trained
again, a row already in OUT/table4.json is not evaluated again (--force_eval redoes it); a failing run
is written to OUT/failures.jsonl and the rest go on (exit status 1 at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.machine import cpu_name  # noqa: E402

ROWS = {"dysen": "", "no_dysen": "no_dysen", "no_imagination": "no_imagination", "gnn": "gnn"}


def config_arg(row: str, base_variant: str = "") -> str:
    variant = ",".join(v for v in (base_variant, ROWS[row]) if v)
    return "--config=configs/tiny.py" + (f":{variant}" if variant else "")


def run(cmd: list[str], log_path: str) -> None:
    """Runs a project command, its output to log_path; raises with the log's tail on failure."""
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        with open(log_path) as f:
            tail = f.read()[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {done.returncode}:\n{tail}")


def final_checkpoint(workdir: str, steps: int) -> bool:
    return os.path.isdir(os.path.join(workdir, "checkpoints", str(steps)))


def config_overrides(settings: list[str]) -> list[str]:
    """`--set KEY=VALUE` items -> `--config.KEY=VALUE` flags for every project command of the table."""
    flags = []
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set {item!r}: write KEY=VALUE with a config key, e.g. diffusion.frame_noise_share=0")
        flags.append(f"--config.{key.strip()}={value}")
    return flags


def train_run(row: str, seed: int, steps: int, out: str, base_variant: str = "", extra: tuple[str, ...] = ()) -> dict:
    """Preprocess + train one (row, seed) run unless its final checkpoint exists; returns its record."""
    workdir = os.path.join(out, row, f"seed{seed}")
    if final_checkpoint(workdir, steps):
        return {"row": row, "seed": seed, "workdir": workdir, "skipped": True}
    os.makedirs(workdir, exist_ok=True)
    overrides = [f"--config.seed={seed}", *extra]
    start = time.time()
    if not os.path.exists(os.path.join(workdir, "data", "manifest.json")):
        run([sys.executable, "-m", "dysen_jax.preprocess", config_arg(row, base_variant), f"--output_dir={workdir}/data", *overrides],
            os.path.join(workdir, "preprocess.log"))
    prep = time.time() - start
    run([sys.executable, "-m", "dysen_jax.train", config_arg(row, base_variant), f"--workdir={workdir}", *overrides,
         f"--config.train.num_steps={steps}", f"--config.train.checkpoint_every={steps}",
         "--config.train.keep_checkpoints=1", "--config.train.sample_at_end=False", "--config.train.log_every=50"],
        os.path.join(workdir, "train.log"))
    return {"row": row, "seed": seed, "workdir": workdir, "preprocess_s": round(prep, 1),
            "train_s": round(time.time() - start - prep, 1), "steps": steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="Output folder (runs, logs, table).")
    parser.add_argument("--steps", type=int, default=200, help="Training steps of every run (the budget).")
    parser.add_argument("--seeds", default="0,1,2", help="Training seeds (config.seed), comma-separated.")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"Rows among {list(ROWS)}, comma-separated.")
    parser.add_argument("--eval_videos", type=int, default=32, help="Held-out captions (evaluate.num_videos).")
    parser.add_argument("--sample_steps", type=int, default=25, help="DDIM steps of the evaluation samples.")
    parser.add_argument("--base_variant", default="", help="A configs/tiny.py variant under every row (smoke: a "
                        "seconds-long check of this script).")
    parser.add_argument("--force_eval", action="store_true", help="Evaluate rows already in the table again.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="A config override for every run and evaluation (repeatable), e.g. "
                        "--set diffusion.frame_noise_share=0.")
    args = parser.parse_args()
    extra = tuple(config_overrides(args.set))
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"--rows: unknown {unknown}; use any of {list(ROWS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds={args.seeds!r}: give comma-separated integers, e.g. 0,1,2") from None
    os.makedirs(args.out, exist_ok=True)
    failures = os.path.join(args.out, "failures.jsonl")
    runs_log = os.path.join(args.out, "runs.jsonl")
    failed = eval_failed = 0
    todo = [(row, seed) for row in rows for seed in seeds]
    for i, (row, seed) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] train {row} seed {seed} ({args.steps} steps)", flush=True)
        try:
            record = train_run(row, seed, args.steps, args.out, args.base_variant, extra)
        except Exception as err:  # noqa: BLE001 - one failed run must not stop the others
            failed += 1
            with open(failures, "a") as f:
                f.write(json.dumps({"row": row, "seed": seed, "stage": "train", "error": str(err)}) + "\n")
            print(f"  failed: {str(err).splitlines()[0]} (see {failures})", flush=True)
            continue
        if not record.get("skipped"):
            with open(runs_log, "a") as f:
                f.write(json.dumps({**record, "cpu": cpu_name()}) + "\n")
        print("  already trained" if record.get("skipped") else f"  trained in {record['train_s']} s", flush=True)
    table = os.path.join(args.out, "table4")
    done_rows = {}
    if os.path.exists(table + ".json"):
        with open(table + ".json") as f:
            done_rows = json.load(f)["rows"]
    for row in rows:
        workdirs = [os.path.join(args.out, row, f"seed{s}") for s in seeds]
        ready = [w for w in workdirs if final_checkpoint(w, args.steps)]
        if not ready or (row in done_rows and not args.force_eval):
            continue
        print(f"evaluate {row} over {len(ready)} run(s)", flush=True)
        try:
            run([sys.executable, "-m", "dysen_jax.evaluate", config_arg(row, args.base_variant), f"--workdir={','.join(ready)}",
                 "--seeds=0", f"--label={row}", f"--table={table}",
                 f"--config.evaluate.num_videos={args.eval_videos}", f"--config.sample.steps={args.sample_steps}",
                 *extra],
                os.path.join(args.out, f"evaluate_{row}.log"))
        except Exception as err:  # noqa: BLE001
            eval_failed += 1
            with open(failures, "a") as f:
                f.write(json.dumps({"row": row, "stage": "evaluate", "error": str(err)}) + "\n")
            print(f"  failed: {str(err).splitlines()[0]}", flush=True)
    if os.path.exists(table + ".md"):
        print(open(table + ".md").read())
    print(f"{len(todo) - failed} of {len(todo)} runs trained, {eval_failed} evaluation failure(s); machine: {cpu_name()}",
          flush=True)
    return 1 if failed or eval_failed else 0


if __name__ == "__main__":
    sys.exit(main())
