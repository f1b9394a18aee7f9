"""RL demonstration selection (PromptPG-style): a small policy over frozen text embeddings picks D shots.

The policy scores every candidate c of a fixed pool (C demonstrations of the bank, as PromptPG
samples a candidate pool) for a query caption x:

    score(x, c) = <W e(x), W e(c)> + b_c

e(.) is the frozen hashed embedding of dysen_jax/planner/embed.py (the query's caption; the
candidate's caption and gold event lines, i.e. the demonstration as the prompt shows it), W a
trainable linear projection (flax `Dense`, no bias, shared by both sides as in PromptPG) and b_c a
trainable per-candidate bias (zero at init; it learns "generally useful" demonstrations). With the
default init the scores are close to equal, so the untrained policy is close to random selection.

Sampling (training): D shots are drawn sequentially without replacement. At each draw the
distribution over the still-eligible candidates is the epsilon-mixture

    p(c) = (1 - eps) * softmax(score)(c) + eps * 1 / #eligible

(eligible: in the pool, not yet drawn, not the query caption itself). The log-probability of an
ordered selection is the sum of log p over the D draws, computed under that same mixture, so
REINFORCE's gradient is that of the distribution the shots were actually drawn from. eps starts
at 0.5 and decays linearly to 0.05 over training (selector_train.py). The update minimises
-mean((R - baseline) * log p(selection)) with optax adam; the baseline is a moving average of the
batch mean reward. Inference (`PolicySelector.select`) is greedy: the k eligible candidates with
the highest scores, highest first, deterministic.

A policy file is JSON: the candidate captions (the pool, in order), the embedding recipe and
dimension, the layer sizes, and the parameters (float32, base64). Loading it against a bank
checks that every candidate is in the bank and says which are missing otherwise.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dysen_jax.planner.bank import Demonstration
from dysen_jax.planner.embed import DEFAULT_DIM, EMBEDDING_VERSION, embed_text, embed_texts

POLICY_FORMAT = "dysen_jax.selection_policy/v1"
DEFAULT_HIDDEN = 64
Params = Any


def caption_key(caption: str) -> str:
    """How captions are matched (as selection.candidates does): lower case, single spaces."""
    return " ".join(caption.lower().split())


def candidate_text(demo: Demonstration) -> str:
    """The text a candidate is embedded from: its caption and its gold event lines (the prompt's turn pair)."""
    lines = [f"({e.agent}, {e.predicate}, {e.target or 'none'}, ({e.start}v, {e.end}v))" for e in demo.events]
    return demo.caption + "\n" + "\n".join(lines)


class ShotScorer(nn.Module):
    """Scores [B, C] of queries [B, E] against candidates [C, E]: <W q, W c> + b_c."""

    num_candidates: int
    hidden: int = DEFAULT_HIDDEN

    @nn.compact
    def __call__(self, queries: jax.Array, candidates: jax.Array) -> jax.Array:
        project = nn.Dense(self.hidden, use_bias=False, name="project")
        bias = self.param("candidate_bias", nn.initializers.zeros, (self.num_candidates,))
        return project(queries) @ project(candidates).T + bias


def mixture_log_probs(scores: jax.Array, eligible: jax.Array, eps: jax.Array | float) -> jax.Array:
    """log p [..., C] of the eps-mixture of softmax(scores) and uniform, both over `eligible` only.

    Ineligible candidates get -inf. `eligible` must have at least one True per row.
    """
    masked = jnp.where(eligible, scores, -jnp.inf)
    log_soft = jax.nn.log_softmax(masked, axis=-1)
    count = jnp.sum(eligible, axis=-1, keepdims=True)
    log_uniform = -jnp.log(count.astype(scores.dtype))
    eps = jnp.asarray(eps, scores.dtype)
    mixed = jnp.logaddexp(jnp.log1p(-eps) + log_soft, jnp.log(eps) + log_uniform)
    # eps == 0 gives log(0) = -inf + finite; logaddexp handles it; keep ineligible at -inf.
    return jnp.where(eligible, mixed, -jnp.inf)


def selection_log_prob(scores: jax.Array, eligible: jax.Array, selection: jax.Array,
                       eps: jax.Array | float) -> jax.Array:
    """log p [B] of the ordered selections [B, D] drawn sequentially without replacement from the mixture."""
    total = jnp.zeros(scores.shape[0], scores.dtype)
    remaining = eligible
    rows = jnp.arange(scores.shape[0])
    for d in range(selection.shape[1]):
        log_p = mixture_log_probs(scores, remaining, eps)
        pick = selection[:, d]
        total = total + log_p[rows, pick]
        remaining = remaining.at[rows, pick].set(False)
    return total


def sample_selection(key: jax.Array, scores: jax.Array, eligible: jax.Array, num_shots: int,
                     eps: jax.Array | float) -> jax.Array:
    """Ordered selections [B, num_shots] drawn sequentially without replacement from the mixture."""
    rows = jnp.arange(scores.shape[0])
    remaining = eligible
    picks = []
    for key_d in jax.random.split(key, num_shots):
        pick = jax.random.categorical(key_d, mixture_log_probs(scores, remaining, eps), axis=-1)
        picks.append(pick)
        remaining = remaining.at[rows, pick].set(False)
    return jnp.stack(picks, axis=1)


@dataclasses.dataclass
class PolicyModel:
    """The scorer and its jitted pieces for one pool size: scores, sampling and the REINFORCE update."""

    num_candidates: int
    hidden: int = DEFAULT_HIDDEN
    embed_dim: int = DEFAULT_DIM
    learning_rate: float = 3e-3

    def __post_init__(self) -> None:
        self.module = ShotScorer(self.num_candidates, self.hidden)
        self.optimizer = optax.adam(self.learning_rate)
        self.scores: Callable[[Params, jax.Array, jax.Array], jax.Array] = jax.jit(self.module.apply)
        self.sample = jax.jit(self._sample, static_argnames="num_shots")
        self.update = jax.jit(self._update)

    def init(self, seed: int) -> Params:
        """Fresh parameters (scores near zero, so the policy starts near uniform)."""
        dummy = jnp.zeros((1, self.embed_dim), jnp.float32)
        return self.module.init(jax.random.PRNGKey(seed), dummy,
                                jnp.zeros((self.num_candidates, self.embed_dim), jnp.float32))["params"]

    def _sample(self, params: Params, key: jax.Array, queries: jax.Array, candidates: jax.Array,
                eligible: jax.Array, eps: jax.Array, num_shots: int) -> jax.Array:
        scores = self.module.apply({"params": params}, queries, candidates)
        return sample_selection(key, scores, eligible, num_shots, eps)

    def log_prob(self, params: Params, queries: jax.Array, candidates: jax.Array, eligible: jax.Array,
                 selection: jax.Array, eps: jax.Array | float) -> jax.Array:
        """log p [B] of ordered selections under the eps-mixture policy."""
        scores = self.module.apply({"params": params}, queries, candidates)
        return selection_log_prob(scores, eligible, selection, eps)

    def _update(self, params: Params, opt_state: Any, queries: jax.Array, candidates: jax.Array,
                eligible: jax.Array, selection: jax.Array, advantages: jax.Array,
                eps: jax.Array) -> tuple[Params, Any, dict[str, jax.Array]]:
        """One REINFORCE step: minimise -mean(advantage * log p(selection))."""

        def loss_fn(p: Params) -> tuple[jax.Array, jax.Array]:
            log_p = self.log_prob(p, queries, candidates, eligible, selection, eps)
            return -jnp.mean(advantages * log_p), log_p

        (loss, log_p), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "log_prob": jnp.mean(log_p),
                                   "grad_norm": optax.global_norm(grads)}


def eligible_mask(pool: Sequence[Demonstration], captions: Sequence[str], require_dsg: bool = False) -> np.ndarray:
    """[B, C] bool: candidate c may be shown for caption b (not the caption itself; a gold DSG if required)."""
    keys = [caption_key(d.caption) for d in pool]
    has_dsg = np.array([d.dsg is not None or not require_dsg for d in pool], bool)
    return np.stack([np.array([k != caption_key(c) for k in keys], bool) & has_dsg for c in captions])


def _encode(array: np.ndarray) -> dict[str, Any]:
    array = np.asarray(array, np.float32)
    return {"shape": list(array.shape), "float32_base64": base64.b64encode(array.astype("<f4").tobytes()).decode()}


def _decode(obj: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(obj["float32_base64"]), "<f4").reshape(obj["shape"]).copy()


class PolicySelector:
    """Greedy top-k demonstrations by a trained policy (the Selector protocol of selection.py).

    `candidates`: captions of the policy's pool, in the order its parameters index them (default:
    the whole bank). Every one must be in `bank`, else ValueError naming the missing ones.
    """

    def __init__(self, bank: Sequence[Demonstration], params: Params, candidates: Sequence[str] | None = None, *,
                 hidden: int = DEFAULT_HIDDEN, embed_dim: int = DEFAULT_DIM,
                 metadata: dict[str, Any] | None = None, source: str = "") -> None:
        self.bank = list(bank)
        by_key = {}
        for demo in self.bank:
            by_key.setdefault(caption_key(demo.caption), demo)
        captions = [d.caption for d in self.bank] if candidates is None else list(candidates)
        missing = [c for c in captions if caption_key(c) not in by_key]
        if missing:
            where = f"policy {source!r}" if source else "the policy"
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            shown = "; ".join(repr(c) for c in missing[:3]) + more
            trained_on = (metadata or {}).get("bank") or "its training bank"
            raise ValueError(
                f"{where} was trained on {len(captions)} candidate demonstrations, {len(missing)} of which are not "
                f"in the demonstration bank ({len(self.bank)} demonstrations): {shown}. Use the bank it was trained "
                f"with (planner.demonstrations / --demonstrations; training used {trained_on}) or retrain with "
                "`python -m dysen_jax.plan train-selector`")
        self.pool = [by_key[caption_key(c)] for c in captions]
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.hidden = int(hidden)
        self.embed_dim = int(embed_dim)
        self.metadata = dict(metadata or {})
        self.model = PolicyModel(len(self.pool), self.hidden, self.embed_dim)
        self.candidate_embeddings = jnp.asarray(embed_texts([candidate_text(d) for d in self.pool], self.embed_dim))
        expected = jax.tree_util.tree_map(np.shape, self.model.init(0))
        got = jax.tree_util.tree_map(np.shape, self.params)
        if expected != got:
            raise ValueError(f"policy parameter shapes {got} do not match a pool of {len(self.pool)} candidates "
                             f"with hidden={self.hidden}, embed_dim={self.embed_dim} (expected {expected})")

    def scores(self, captions: Sequence[str]) -> np.ndarray:
        """Policy scores [len(captions), C] of the pool for each caption."""
        queries = jnp.asarray(embed_texts(list(captions), self.embed_dim))
        return np.asarray(self.model.scores({"params": self.params}, queries, self.candidate_embeddings))

    def select(self, caption: str, k: int, require_dsg: bool = False) -> list[Demonstration]:
        """The k eligible pool candidates with the highest scores, highest first.

        If fewer than k of the pool are eligible (e.g. require_dsg and a pool without gold DSGs),
        the rest are the bank's other eligible demonstrations in bank order (as FixedSelector).
        """
        if k <= 0:
            return []
        eligible = eligible_mask(self.pool, [caption], require_dsg)[0]
        scores = self.scores([caption])[0]
        order = [int(i) for i in np.argsort(-scores, kind="stable") if eligible[i]]
        chosen = [self.pool[i] for i in order[:k]]
        if len(chosen) < k:
            from dysen_jax.planner.selection import candidates as eligible_in_bank
            taken = {id(d) for d in chosen}
            rest = [d for d in eligible_in_bank(self.bank, caption, require_dsg) if id(d) not in taken]
            chosen += rest[:k - len(chosen)]
        return chosen

    # -- persistence -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        flat = {"/".join(str(getattr(k, "key", k)) for k in path): _encode(np.asarray(v))
                for path, v in jax.tree_util.tree_flatten_with_path(self.params)[0]}
        return {"format": POLICY_FORMAT, "embedding": {"version": EMBEDDING_VERSION, "dim": self.embed_dim},
                "hidden": self.hidden, "candidates": [d.caption for d in self.pool], "params": flat,
                "metadata": self.metadata}

    def save(self, path: str) -> None:
        """Writes the policy JSON atomically."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(self.to_json(), f)
        os.replace(path + ".tmp", path)

    @classmethod
    def load(cls, path: str, bank: Sequence[Demonstration]) -> "PolicySelector":
        """The policy saved at `path`, its candidates resolved in `bank` (clear errors otherwise)."""
        if not path:
            raise ValueError("planner.selection='rl' needs planner.selector_path: train one with "
                             "`python -m dysen_jax.plan train-selector --output POLICY`")
        if not os.path.exists(path):
            raise FileNotFoundError(f"selection policy {path!r} (planner.selector_path) does not exist: train one "
                                    "with `python -m dysen_jax.plan train-selector --output POLICY`")
        try:
            with open(path) as f:
                obj = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"selection policy {path!r} is not valid JSON ({err}): retrain it") from None
        if not isinstance(obj, dict) or obj.get("format") != POLICY_FORMAT:
            raise ValueError(f"{path!r} is not a selection policy (expected format {POLICY_FORMAT!r}, got "
                             f"{obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r})")
        embedding = obj.get("embedding", {})
        if embedding.get("version") != EMBEDDING_VERSION:
            raise ValueError(f"selection policy {path!r} uses embedding {embedding.get('version')!r}, this code "
                             f"computes {EMBEDDING_VERSION!r}: retrain it")
        params: dict[str, Any] = {}
        for name, value in obj["params"].items():
            node = params
            *parents, leaf = name.split("/")
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = jnp.asarray(_decode(value))
        return cls(bank, params, obj["candidates"], hidden=obj["hidden"], embed_dim=embedding["dim"],
                   metadata=obj.get("metadata"), source=path)


def query_embeddings(captions: Sequence[str], dim: int = DEFAULT_DIM) -> np.ndarray:
    """[B, E] frozen embeddings of query captions."""
    return embed_texts(list(captions), dim)


__all__ = ["PolicySelector", "PolicyModel", "ShotScorer", "mixture_log_probs", "selection_log_prob",
           "sample_selection", "eligible_mask", "candidate_text", "caption_key", "embed_text", "query_embeddings"]
