"""`python -m dysen_jax.plan train-selector`: train the RL demonstration-selection policy (PromptPG-style).

    python -m dysen_jax.plan train-selector --output runs/policy.json --backend openai \\
        --base_url http://127.0.0.1:8000/v1 --model M --api_key_env EMPTY \\
        [--train_captions 96 | --train_file gold.jsonl] [--epochs 3 --batch_size 16 --num_candidates 20]
    python -m dysen_jax.plan --selection rl --selector_path runs/policy.json --backend openai ...  # use it

Data: gold items (caption + events), from --train_file (the evaluate/bank JSONL format, or
builtin:NAME) or --train_captions synthetic dynamic-shapes captions (dataset seed TRAIN_SEED, not
the bank's 12345), split into train and held-out (--heldout_fraction). The candidate pool is C
demonstrations of the bank drawn with --seed (all of them when C >= bank size).

Each step takes a batch of train captions, samples D shots per caption from the policy
(epsilon-mixture exploration, eps linear from --eps_start 0.5 to --eps_end 0.05 over training),
plans all captions with the LLM's step I in one concurrent `plan_many(captions, shots=...)`
(imagination off), and rewards each selection with mean(triplet F1, order accuracy) of the LLM's
plan against gold; a plan from the offline fallback (or none) gets 0, since it says nothing about
the shots. REINFORCE update with a moving-average baseline (selector.py).

At the end the held-out split is planned with the greedy policy, random shots (RandomSelector,
planner.selection=random) and fixed shots (FixedSelector); the policy goes to --output and a
JSON report (per-epoch rewards, held-out results, paired policy-minus-random difference with its
standard error, LLM call counts) to <output stem>.report.json. Training state is saved every
epoch to <output>.state; --resume continues from it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from dysen_jax.dsg.schema import DSGError, Event
from dysen_jax.planner.bank import Demonstration, bank_from_config
from dysen_jax.planner.embed import embed_texts
from dysen_jax.planner.selector import (DEFAULT_DIM, DEFAULT_HIDDEN, PolicyModel, PolicySelector, candidate_text,
                                        eligible_mask, query_embeddings)

TRAIN_SEED = 2468          # dataset seed of synthetic training / held-out captions (the bank uses 12345)
FAILED_SOURCES = ("fallback", "failed")


@dataclasses.dataclass(frozen=True)
class GoldCaption:
    """A caption and its gold events (training or held-out item)."""

    caption: str
    events: tuple[Event, ...]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """REINFORCE settings (defaults as the CLI's)."""

    num_shots: int = 5
    num_candidates: int = 20
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 1e-2
    eps_start: float = 0.5
    eps_end: float = 0.05
    baseline_momentum: float = 0.9
    hidden: int = DEFAULT_HIDDEN
    embed_dim: int = DEFAULT_DIM
    seed: int = 0

    def check(self, bank_size: int) -> None:
        """Clear errors naming the flag for settings that cannot work."""
        if self.num_shots < 1:
            raise ValueError(f"--num_demonstrations={self.num_shots}: the policy selects D >= 1 shots")
        if min(self.num_candidates, bank_size) <= self.num_shots:
            raise ValueError(f"--num_candidates={self.num_candidates} with a bank of {bank_size}: the pool must hold "
                             f"more than D={self.num_shots} demonstrations (one may be the caption itself)")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"--epochs={self.epochs} and --batch_size={self.batch_size} must be >= 1")
        if not (0.0 <= self.eps_end <= 1.0 and 0.0 <= self.eps_start <= 1.0):
            raise ValueError(f"--eps_start={self.eps_start} and --eps_end={self.eps_end} must be in [0, 1]")
        if not 0.0 <= self.baseline_momentum < 1.0:
            raise ValueError(f"--baseline_momentum={self.baseline_momentum} must be in [0, 1)")


def synthetic_gold(count: int, seed: int = TRAIN_SEED, max_actions: int = 3) -> list[GoldCaption]:
    """`count` dynamic-shapes captions with their gold events."""
    from dysen_jax.data.shapes import make_example

    examples = (make_example(i, seed=seed, max_actions=max_actions) for i in range(count))
    return [GoldCaption(e.caption, tuple(e.events)) for e in examples]


def file_gold(spec: str) -> list[GoldCaption]:
    """Items of a gold JSONL ({caption, events} per line, as `evaluate --gold`; builtin:NAME too)."""
    from dysen_jax.planner.evaluate import load_gold

    return [GoldCaption(item.caption, tuple(item.events)) for item in load_gold(spec)]


def split_gold(items: Sequence[GoldCaption], heldout_fraction: float, seed: int) -> tuple[list[GoldCaption],
                                                                                            list[GoldCaption]]:
    """A seeded shuffle split into (train, held-out); both non-empty."""
    if len(items) < 2:
        raise ValueError(f"{len(items)} gold items: need at least 2 to have a train and a held-out split")
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"--heldout_fraction={heldout_fraction} must be in (0, 1)")
    order = np.random.default_rng(seed).permutation(len(items))
    n_heldout = min(len(items) - 1, max(1, round(heldout_fraction * len(items))))
    return [items[i] for i in order[n_heldout:]], [items[i] for i in order[:n_heldout]]


def choose_pool(bank: Sequence[Demonstration], num_candidates: int, seed: int) -> list[Demonstration]:
    """C bank demonstrations drawn with `seed` (in bank order); the whole bank when C >= its size."""
    if num_candidates >= len(bank):
        return list(bank)
    picks = np.sort(np.random.default_rng(seed).choice(len(bank), num_candidates, replace=False))
    return [bank[i] for i in picks]


def epsilon_at(step: int, total_steps: int, start: float, end: float) -> float:
    """Exploration rate at `step`: linear from `start` (step 0) to `end` (last step)."""
    if total_steps <= 1:
        return end
    return start + (end - start) * min(step, total_steps - 1) / (total_steps - 1)


def item_scores(outcome: Any, gold: Sequence[Event]) -> dict[str, float]:
    """triplet_f1, order_accuracy and reward (their mean) of the LLM's plan; all 0 for fallback/failed items."""
    from dysen_jax.planner.metrics import score_events

    if outcome.plan is None or outcome.source in FAILED_SOURCES:
        return {"reward": 0.0, "triplet_f1": 0.0, "order_accuracy": 0.0, "llm": 0.0}
    scores = score_events(list(outcome.plan.events), list(gold))
    f1, order = scores["triplet_f1"], scores["order_accuracy"]
    return {"reward": 0.5 * (f1 + order), "triplet_f1": f1, "order_accuracy": order, "llm": 1.0}


def plan_and_score(planner: Any, items: Sequence[GoldCaption],
                   shots: Sequence[Sequence[Demonstration]]) -> list[dict[str, float]]:
    """One concurrent step-I batch with the given shots; per-item scores (item_scores)."""
    outcomes = planner.plan_many([it.caption for it in items], shots=[list(s) for s in shots])
    return [item_scores(o, it.events) for o, it in zip(outcomes, items)]


def _mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


class SelectorTrainer:
    """The policy's training state and one REINFORCE step per batch (see the module docstring)."""

    def __init__(self, planner: Any, bank: Sequence[Demonstration], pool: Sequence[Demonstration],
                 config: TrainConfig, total_steps: int) -> None:
        self.planner = planner
        self.bank = list(bank)
        self.pool = list(pool)
        self.config = config
        self.total_steps = total_steps
        self.model = PolicyModel(len(self.pool), config.hidden, config.embed_dim, config.learning_rate)
        self.candidates = jnp.asarray(embed_texts([candidate_text(d) for d in self.pool], config.embed_dim))
        self.params = self.model.init(config.seed)
        self.opt_state = self.model.optimizer.init(self.params)
        self.baseline: float | None = None
        self.step = 0
        self.epoch = 0
        self.key = jax.random.PRNGKey(config.seed + 1)
        self.history: list[dict[str, float]] = []

    def selector(self) -> PolicySelector:
        """The greedy policy with the current parameters."""
        return PolicySelector(self.bank, self.params, [d.caption for d in self.pool], hidden=self.config.hidden,
                              embed_dim=self.config.embed_dim)

    def train_step(self, items: Sequence[GoldCaption]) -> dict[str, float]:
        """Sample shots, plan, reward, update; returns the step's statistics."""
        captions = [it.caption for it in items]
        queries = jnp.asarray(query_embeddings(captions, self.config.embed_dim))
        eligible = jnp.asarray(eligible_mask(self.pool, captions))
        eps = jnp.float32(epsilon_at(self.step, self.total_steps, self.config.eps_start, self.config.eps_end))
        self.key, key = jax.random.split(self.key)
        selection = self.model.sample(self.params, key, queries, self.candidates, eligible, eps,
                                      num_shots=self.config.num_shots)
        picks = np.asarray(selection)
        scores = plan_and_score(self.planner, items, [[self.pool[j] for j in row] for row in picks])
        rewards = np.array([s["reward"] for s in scores], np.float32)
        batch_mean = float(rewards.mean())
        baseline = batch_mean if self.baseline is None else self.baseline
        advantages = jnp.asarray(rewards - baseline)
        self.params, self.opt_state, stats = self.model.update(self.params, self.opt_state, queries, self.candidates,
                                                               eligible, selection, advantages, eps)
        m = self.config.baseline_momentum
        self.baseline = batch_mean if self.baseline is None else m * self.baseline + (1 - m) * batch_mean
        self.step += 1
        return {"reward": batch_mean, "baseline": float(self.baseline), "eps": float(eps),
                "loss": float(stats["loss"]), "log_prob": float(stats["log_prob"]),
                "llm_rate": float(np.mean([s["llm"] for s in scores]))}

    # -- resumable state -------------------------------------------------------------------------------
    def state_bytes(self) -> bytes:
        meta = {"config": dataclasses.asdict(self.config), "pool": [d.caption for d in self.pool],
                "baseline": self.baseline, "step": self.step, "epoch": self.epoch, "history": self.history}
        return serialization.msgpack_serialize({
            "params": serialization.to_state_dict(self.params),
            "opt_state": serialization.to_state_dict(self.opt_state),
            "key": np.asarray(self.key),
            "meta": json.dumps(meta)})

    def restore(self, data: bytes, where: str) -> None:
        """Continues from state_bytes(); refuses a state from another pool or configuration."""
        state = serialization.msgpack_restore(data)
        meta = json.loads(state["meta"])
        same = lambda c: {k: v for k, v in c.items() if k != "epochs"}  # noqa: E731 - more epochs may follow
        pool = [d.caption for d in self.pool]
        if meta["pool"] != pool or same(meta["config"]) != same(dataclasses.asdict(self.config)):
            raise ValueError(f"{where} was written by a run with another candidate pool or settings: "
                             "use the same flags (only --epochs may change), or drop --resume to start over")
        self.params = serialization.from_state_dict(self.params, state["params"])
        self.opt_state = serialization.from_state_dict(self.opt_state, state["opt_state"])
        self.key = jnp.asarray(state["key"], jnp.uint32)
        self.baseline, self.step, self.epoch = meta["baseline"], meta["step"], meta["epoch"]
        self.history = meta["history"]


def epoch_batches(items: Sequence[GoldCaption], batch_size: int, seed: int, epoch: int) -> list[list[GoldCaption]]:
    """The epoch's shuffled batches, all of `batch_size` (the last one wraps around), so shapes stay fixed."""
    n = len(items)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    steps = math.ceil(n / batch_size)
    return [[items[order[(s * batch_size + i) % n]] for i in range(min(batch_size, n))] for s in range(steps)]


def evaluate_selectors(planner: Any, selectors: dict[str, Any], items: Sequence[GoldCaption],
                       num_shots: int) -> dict[str, dict[str, Any]]:
    """Per selector: mean reward / triplet F1 / order accuracy / LLM rate of its shots on `items`, per-item rewards."""
    results = {}
    for name, selector in selectors.items():
        shots = [selector.select(it.caption, num_shots) for it in items]
        scores = plan_and_score(planner, items, shots)
        results[name] = {**_mean(scores), "rewards": [s["reward"] for s in scores]}
    return results


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean of a - b over items, its standard error, and wins / ties / losses."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "stderr": se, "wins": int((d > 1e-9).sum()), "ties": int((abs(d) <= 1e-9).sum()),
            "losses": int((d < -1e-9).sum())}


def train_selector(planner: Any, bank: Sequence[Demonstration], train: Sequence[GoldCaption],
                   heldout: Sequence[GoldCaption], config: TrainConfig, *, output: str = "", resume: bool = False,
                   progress: bool = True, compare: Sequence[str] = ("random", "fixed"),
                   log: Any = None) -> tuple[PolicySelector, dict[str, Any]]:
    """Trains the policy on `train`, evaluates it against the baselines on `heldout`; (policy, report).

    With `output`, the policy is saved there after every epoch (and the training state to
    output + '.state'), and the report to <output stem>.report.json at the end.
    """
    from dysen_jax.planner.selection import FixedSelector, RandomSelector

    log = log or (lambda msg: print(msg, file=sys.stderr))
    config.check(len(bank))
    pool = choose_pool(bank, config.num_candidates, config.seed)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    trainer = SelectorTrainer(planner, bank, pool, config, config.epochs * steps_per_epoch)
    state_path = output + ".state" if output else ""
    if resume and state_path and os.path.exists(state_path):
        with open(state_path, "rb") as f:
            trainer.restore(f.read(), state_path)
        log(f"resumed from {state_path} at epoch {trainer.epoch}, step {trainer.step}")
    started = time.monotonic()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=trainer.total_steps, initial=trainer.step, desc="train-selector", unit="step",
                   dynamic_ncols=True)
    while trainer.epoch < config.epochs:
        rows = []
        for batch in epoch_batches(train, config.batch_size, config.seed, trainer.epoch):
            rows.append(trainer.train_step(batch))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{rows[-1]['reward']:.3f}", eps=f"{rows[-1]['eps']:.2f}")
        trainer.epoch += 1
        summary = {"epoch": trainer.epoch, **_mean(rows)}
        trainer.history.append(summary)
        line = (f"epoch {trainer.epoch}/{config.epochs}: mean reward {summary['reward']:.3f} (eps "
                f"{rows[-1]['eps']:.2f}, baseline {summary['baseline']:.3f}, LLM-answered {summary['llm_rate']:.0%})")
        (bar.write if bar is not None else log)(line)
        if output:
            trainer.selector().save(output)
            with open(state_path + ".tmp", "wb") as f:
                f.write(trainer.state_bytes())
            os.replace(state_path + ".tmp", state_path)
    if bar is not None:
        bar.close()
    train_s = time.monotonic() - started

    policy = trainer.selector()
    policy.metadata.update({"train": dataclasses.asdict(config), "train_items": len(train)})
    selectors: dict[str, Any] = {"policy": policy}
    baselines = {"random": lambda: RandomSelector(bank, config.seed), "fixed": lambda: FixedSelector(bank),
                 "random_pool": lambda: RandomSelector(pool, config.seed),
                 "untrained": lambda: PolicySelector(bank, trainer.model.init(config.seed), [d.caption for d in pool],
                                                     hidden=config.hidden, embed_dim=config.embed_dim)}
    for name in compare:
        if name not in baselines:
            raise ValueError(f"unknown baseline {name!r}: use {', '.join(baselines)}")
        selectors[name] = baselines[name]()
    log(f"held-out evaluation: {len(heldout)} captions x {len(selectors)} selectors")
    heldout_results = evaluate_selectors(planner, selectors, heldout, config.num_shots)
    report: dict[str, Any] = {
        "config": dataclasses.asdict(config), "train_items": len(train), "heldout_items": len(heldout),
        "bank_size": len(bank), "pool": [d.caption for d in pool], "history": trainer.history,
        "heldout": {k: {m: v for m, v in r.items() if m != "rewards"} for k, r in heldout_results.items()},
        "train_seconds": round(train_s, 2), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    if "random" in heldout_results:
        diff = paired_difference(heldout_results["policy"]["rewards"], heldout_results["random"]["rewards"])
        report["policy_minus_random"] = diff
        report["beats_random"] = bool(diff["mean"] > 0)
    client = getattr(planner, "client", None)
    if client is not None and hasattr(client, "stats"):
        report["llm_stats"] = dataclasses.asdict(client.stats)
    if output:
        policy.metadata["heldout"] = report["heldout"]
        policy.save(output)
        with open(report_path(output), "w") as f:
            json.dump(report, f, indent=1)
    return policy, report


def report_path(output: str) -> str:
    """Where the JSON report of a policy written to `output` goes."""
    return os.path.splitext(output)[0] + ".report.json"


def format_results(report: dict[str, Any]) -> str:
    """The held-out table (and the paired comparison with random shots)."""
    lines = [f"{'selector':<12}{'reward':>8}{'triplet_f1':>12}{'order_acc':>11}{'LLM-answered':>14}"]
    for name, r in report["heldout"].items():
        lines.append(f"{name:<12}{r['reward']:>8.3f}{r['triplet_f1']:>12.3f}{r['order_accuracy']:>11.3f}"
                     f"{r['llm']:>13.0%}")
    diff = report.get("policy_minus_random")
    if diff:
        lines.append(f"policy - random: {diff['mean']:+.3f} reward per caption (s.e. {diff['stderr']:.3f}; "
                     f"{diff['wins']} better, {diff['ties']} same, {diff['losses']} worse "
                     f"of {report['heldout_items']})")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from dysen_jax.planner.settings import add_planner_flags

    parser = argparse.ArgumentParser(prog="python -m dysen_jax.plan train-selector",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="policy file to write (JSON); report next to it")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--train_captions", type=int, default=96,
                      help=f"synthetic gold captions (dataset seed {TRAIN_SEED}), split into train / held-out")
    data.add_argument("--train_file", default="", help="gold JSONL {caption, events} per line (or builtin:NAME)")
    parser.add_argument("--heldout_fraction", type=float, default=0.25)
    d = TrainConfig()
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch_size", type=int, default=d.batch_size)
    parser.add_argument("--num_candidates", type=int, default=d.num_candidates,
                        help="candidate pool size C (drawn from the bank)")
    parser.add_argument("--learning_rate", type=float, default=d.learning_rate)
    parser.add_argument("--eps_start", type=float, default=d.eps_start, help="exploration rate at the first step")
    parser.add_argument("--eps_end", type=float, default=d.eps_end, help="exploration rate at the last step")
    parser.add_argument("--baseline_momentum", type=float, default=d.baseline_momentum)
    parser.add_argument("--hidden", type=int, default=d.hidden, help="projection width of the scorer")
    parser.add_argument("--compare", default="random,fixed",
                        help="held-out baselines, comma-separated: random, fixed, random_pool (random shots from "
                             "the policy's pool), untrained (the policy at initialisation)")
    parser.add_argument("--resume", action="store_true", help="continue from <output>.state if it exists")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_planner_flags(parser)
    return parser


def training_planner(planner_cfg: Any) -> Any:
    """The step-I-only LLM planner for training (imagination off; shots come from the policy)."""
    from dysen_jax.planner.base import planner_from_config

    if planner_cfg.backend != "openai":
        raise ValueError(f"--backend={planner_cfg.backend!r}: train-selector needs --backend openai (an LLM whose "
                         "answers depend on the demonstrations; the rules planner ignores them)")
    cfg = copy.deepcopy(planner_cfg)
    cfg.imagination = False
    cfg.selection = "fixed"  # unused: every call passes the policy's shots
    return planner_from_config(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Trains, evaluates and writes the policy and its report; 0 on success, 2 for bad input."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from dysen_jax.planner.settings import planner_config_from_flags

    try:
        planner_cfg = planner_config_from_flags(args)
        if args.train_file:
            items = file_gold(args.train_file)
        elif args.train_captions < 2:
            raise ValueError(f"--train_captions={args.train_captions}: need at least 2")
        else:
            items = synthetic_gold(args.train_captions)
        train, heldout = split_gold(items, args.heldout_fraction, args.seed)
        config = TrainConfig(num_shots=planner_cfg.num_demonstrations, num_candidates=args.num_candidates,
                             epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                             eps_start=args.eps_start, eps_end=args.eps_end, baseline_momentum=args.baseline_momentum,
                             hidden=args.hidden, seed=args.seed)
        bank = bank_from_config(planner_cfg)
        config.check(len(bank))
        planner = training_planner(planner_cfg)
        compare = [c.strip() for c in args.compare.split(",") if c.strip()]
    except (DSGError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"train-selector: {len(train)} train / {len(heldout)} held-out captions "
          f"({args.train_file or f'synthetic, seed {TRAIN_SEED}'}), pool of {min(config.num_candidates, len(bank))} "
          f"of {len(bank)} demonstrations, D={config.num_shots}, LLM {planner_cfg.llm.model} at "
          f"{planner_cfg.llm.base_url}", file=sys.stderr)
    try:
        _, report = train_selector(planner, bank, train, heldout, config, output=args.output, resume=args.resume,
                                   progress=not args.no_progress, compare=compare)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report["llm"] = {"base_url": planner_cfg.llm.base_url, "model": planner_cfg.llm.model}
    report["data"] = args.train_file or f"synthetic:{args.train_captions}:seed{TRAIN_SEED}"
    with open(report_path(args.output), "w") as f:
        json.dump(report, f, indent=1)
    print(format_results(report))
    print(f"policy written to {args.output}, report to {report_path(args.output)}; use it with "
          f"--selection rl --selector_path {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
