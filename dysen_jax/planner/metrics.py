"""Planner quality: predicted events scored against gold events (paper Fig. 9).

Names are compared the way a person would compare them, through canonical forms:

* `normalize_name`: lowercase, punctuation and possessive 's dropped, articles and possessive
  pronouns dropped, a leading count or determiner dropped ("two children" ~ "children"), every word
  singular ("bottles of water" ~ "bottle of water", "boxes" ~ "box", "children" ~ "child");
  None / "none" / "null" / "" targets are all "".
* `normalize_predicate`: the same word clean-up, auxiliaries dropped and the verb turned into its
  gerund with the rules planner's morphology ("puts" / "put" / "is putting" ~ "putting",
  "moves to the left" ~ "moving left"), -ly adverbs dropped, then the rules planner's synonym table
  (CANONICAL_PREDICATES: "approaching" ~ "moving toward", "rotating" ~ "spinning").

Alignment (`align`): one-to-one, greedy by score. A candidate pair must agree on the agent or on the
predicate (a shared target alone, or two missing targets, is not the same event). Pairs are taken
best first: exact triplets, then more agreeing components (agent, predicate, target), then the
closer rank in time order, then gold order; each event is used once. Taking exact matches first
makes the number of exact pairs equal the multiset overlap of the triplets.

Metrics of one item (`score_events`), each in [0, 1]:

* triplet_precision / recall / f1: multiset overlap of normalised (agent, predicate, target).
* predicate_accuracy: fraction of gold events whose aligned prediction has the same predicate.
* argument_accuracy: fraction of gold events whose aligned prediction has the same agent and target.
* order_accuracy (strict): over every pair of aligned ("matched") gold events, the fraction whose
  temporal relation (before / simultaneous / after, from start times) is the same between their
  predictions. With fewer than 2 matched events there is no pair to judge: 1.0 when every gold event
  is matched (a one-event plan that was found), else 0.0.
* exact: 1.0 when the predicted events equal the gold events as a multiset of normalised
  (agent, predicate, target, start, end), else 0.0.

An empty prediction (a failed item) scores 0 everywhere. `aggregate` averages items.
"""

from __future__ import annotations

import collections
import itertools
from typing import Sequence

from dysen_jax.dsg.schema import Event
from dysen_jax.planner.rules import (
    ARTICLES, AUXILIARIES, CANONICAL_PREDICATES, DETERMINERS, NOT_VERBS, PARTICLES, POSSESSIVES, PREPOSITIONS,
    gerund, lemmatize, tokenize)

METRIC_KEYS: tuple[str, ...] = ("triplet_precision", "triplet_recall", "triplet_f1", "predicate_accuracy",
                                "argument_accuracy", "order_accuracy", "exact")
NormTriplet = tuple[str, str, str]

_NONE_NAMES = frozenset({"", "none", "null", "nothing", "n/a", "na", "-", "no target", "no object"})
_PUNCTUATION = frozenset(",.;:!?")
_BE = frozenset({"is", "are", "was", "were", "am", "be", "been", "being"})

# --- nouns: plural -> singular --------------------------------------------------------------------
_IRREGULAR_PLURALS = {
    "children": "child", "men": "man", "women": "woman", "people": "person", "feet": "foot", "teeth": "tooth",
    "mice": "mouse", "geese": "goose", "oxen": "ox", "knives": "knife", "wives": "wife", "lives": "life",
    "leaves": "leaf", "wolves": "wolf", "shelves": "shelf", "loaves": "loaf", "halves": "half", "calves": "calf",
    "thieves": "thief", "scarves": "scarf", "elves": "elf", "tomatoes": "tomato", "potatoes": "potato",
    "heroes": "hero", "echoes": "echo", "mangoes": "mango", "volcanoes": "volcano", "dice": "die",
}
_IE_NOUNS = frozenset("""cookie movie pie tie selfie zombie hoodie brownie smoothie rookie birdie goalie collie
    magpie sweetie genie lassie auntie""".split())
_NOT_PLURAL = frozenset("news series species lens chess physics jeans pants scissors clothes".split())


def singular(word: str) -> str:
    """Singular of an English noun by suffix rules ("boxes" -> "box", "bottles" -> "bottle")."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if len(word) <= 3 or word in _NOT_PLURAL or word.endswith(("ss", "us", "is", "ous")) or not word.endswith("s"):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-1] if word[:-1] in _IE_NOUNS else word[:-3] + "y"
    if word.endswith(("sses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    return word[:-1]


# --- canonical forms --------------------------------------------------------------------------------
def _words(text: str | None) -> list[str]:
    """Lowercase words of `text` (the rules planner's tokenizer, punctuation dropped)."""
    if text is None:
        return []
    return [w for w in tokenize(str(text), placeholders=False) if w not in _PUNCTUATION]


def normalize_name(text: str | None) -> str:
    """Canonical object / agent name; "" for a missing target (None, "none", "null")."""
    if text is None or str(text).strip().lower() in _NONE_NAMES:
        return ""
    raw = _words(text)
    words = [w for k, w in enumerate(raw) if w not in ARTICLES and not (w in POSSESSIVES and k + 1 < len(raw))]
    while len(words) > 1 and words[0] in DETERMINERS and words[1] not in PREPOSITIONS and words[1] != "of":
        words = words[1:]
    return " ".join(singular(w) for w in words)


def _verb_gerund(word: str) -> str:
    """Gerund of a verb form: known verbs via the rules lexicon, unknown -s / -ed forms by suffix rules."""
    if len(word) > 4 and word.endswith("ing") and word not in NOT_VERBS:
        return word
    lemma = lemmatize(word)
    if lemma is not None:
        return gerund(lemma)
    if word in PARTICLES or word in PREPOSITIONS:  # a verbless relation such as "over" or "near"
        return word
    if word.endswith(("ches", "shes", "xes", "sses")):
        return gerund(word[:-2])
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return gerund(word[:-1])
    if word.endswith("ed") and len(word) > 4:
        return gerund(word[:-2])
    return word  # an unknown base form or an adjective: kept as written


def normalize_predicate(text: str | None) -> str:
    """Canonical predicate: gerund verb + particles ("is putting down" / "puts down" -> "putting down")."""
    words = [w for w in _words(text) if w not in ARTICLES]
    while len(words) > 1 and (words[0] in AUXILIARIES or words[0] in _BE):
        words = words[1:]
    if not words:
        return ""
    head = _verb_gerund(words[0])
    rest = [w for w in words[1:] if not (w.endswith("ly") and len(w) > 4)]
    predicate = " ".join([head] + rest)
    return CANONICAL_PREDICATES.get(predicate, predicate)


def normalize_event(event: Event) -> NormTriplet:
    """The event's (agent, predicate, target) in canonical form."""
    return (normalize_name(event.agent), normalize_predicate(event.predicate), normalize_name(event.target))


# --- alignment ---------------------------------------------------------------------------------------
def _by_time(events: Sequence[Event]) -> list[int]:
    """Rank of each event in (start, list position) order."""
    order = sorted(range(len(events)), key=lambda i: (events[i].start, i))
    rank = [0] * len(events)
    for r, i in enumerate(order):
        rank[i] = r
    return rank


def align(pred: Sequence[Event], gold: Sequence[Event]) -> list[tuple[int, int]]:
    """One-to-one (pred index, gold index) pairs, greedy by score (see the module docstring)."""
    p_norm = [normalize_event(e) for e in pred]
    g_norm = [normalize_event(e) for e in gold]
    p_rank, g_rank = _by_time(pred), _by_time(gold)
    candidates = []
    for (i, p), (j, g) in itertools.product(enumerate(p_norm), enumerate(g_norm)):
        agree = [a == b for a, b in zip(p, g)]
        if not (agree[0] or agree[1]):
            continue
        candidates.append((-all(agree), -sum(agree), abs(p_rank[i] - g_rank[j]), j, i))
    used_p: set[int] = set()
    used_g: set[int] = set()
    pairs = []
    for *_, j, i in sorted(candidates):
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            pairs.append((i, j))
    return sorted(pairs, key=lambda ij: ij[1])


# --- scores --------------------------------------------------------------------------------------------
def _relation(a: Event, b: Event) -> int:
    """-1: a starts before b, 0: together, 1: after."""
    return (a.start > b.start) - (a.start < b.start)


def _order_accuracy(pred: Sequence[Event], gold: Sequence[Event], pairs: list[tuple[int, int]]) -> float:
    if len(pairs) < 2:
        return float(len(pairs) == len(gold))
    same = [_relation(pred[i1], pred[i2]) == _relation(gold[j1], gold[j2])
            for (i1, j1), (i2, j2) in itertools.combinations(pairs, 2)]
    return sum(same) / len(same)


def score_events(pred: Sequence[Event] | None, gold: Sequence[Event]) -> dict[str, float]:
    """The METRIC_KEYS of one item; `pred` empty or None (a failed plan) scores 0 everywhere."""
    if not gold:
        raise ValueError("gold has no events: every gold item needs at least one event to score against")
    pred = list(pred or ())
    if not pred:
        return dict.fromkeys(METRIC_KEYS, 0.0)
    p_norm = [normalize_event(e) for e in pred]
    g_norm = [normalize_event(e) for e in gold]
    overlap = sum((collections.Counter(p_norm) & collections.Counter(g_norm)).values())
    precision, recall = overlap / len(pred), overlap / len(gold)
    f1 = 2 * precision * recall / (precision + recall) if overlap else 0.0
    pairs = align(pred, gold)
    predicate_ok = sum(p_norm[i][1] == g_norm[j][1] for i, j in pairs)
    argument_ok = sum(p_norm[i][0] == g_norm[j][0] and p_norm[i][2] == g_norm[j][2] for i, j in pairs)
    p_timed = collections.Counter(t + (e.start, e.end) for t, e in zip(p_norm, pred))
    g_timed = collections.Counter(t + (e.start, e.end) for t, e in zip(g_norm, gold))
    return {
        "triplet_precision": precision,
        "triplet_recall": recall,
        "triplet_f1": f1,
        "predicate_accuracy": predicate_ok / len(gold),
        "argument_accuracy": argument_ok / len(gold),
        "order_accuracy": _order_accuracy(pred, gold, pairs),
        "exact": float(p_timed == g_timed),
    }


def aggregate(scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every key over items (keys in order of first appearance)."""
    if not scores:
        raise ValueError("no item scores to aggregate: score at least one item")
    keys = list(dict.fromkeys(k for s in scores for k in s))
    return {k: sum(s.get(k, 0.0) for s in scores) / len(scores) for k in keys}
