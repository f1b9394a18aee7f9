"""Offline rule-based planner (`planner.backend = "rules"`): deterministic, no network.

Step I parses a caption into events `(agent, predicate, target, (start, end))`; step II is
`events_to_dsg`. The parser is a small, explicit English grammar:

* Clauses are split at punctuation and temporal connectives; a fragment without a verb is merged
  back into its neighbour, so "runs after the bus" or "a man and a woman dance" stay one clause.
* Each clause is `subject-NP verb [particles/prepositions] [object-NP]`: the subject NP is the
  agent (articles dropped; "it/he/she/they" or a missing subject resolve to the previous agent),
  the verb becomes a gerund predicate ("puts" -> "putting", "is spinning" -> "spinning") plus its
  particles ("moving left", "drinking from"), and the object NP is the target (cut before the next
  preposition other than "of"). A caption with no verb at all becomes one event, e.g.
  "a sunset over the ocean" -> (sunset, over, ocean).
* Time order is resolved on a timeline of groups (events of one group are concurrent):
  no connective / "then" / "and" / "after that" / "finally" append a new group; "while" / "as" /
  "meanwhile" / "at the same time" join the previous clause's group; "X after Y" puts Y's group
  just before X's, "X before Y" just after; preposed "after Y, X" / "before Y, X" / "while Y, X"
  relate the main clause X to Y the same way.
* Duration convention (shared with the synthetic dataset, which imports it): every event lasts
  `ACTION_UNITS` units of v; group k covers [k * ACTION_UNITS, (k + 1) * ACTION_UNITS).
  Events are listed by (start, position in the caption).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from dysen_jax.dsg.build import events_to_dsg
from dysen_jax.dsg.schema import DSG, DSGError, Event, Plan, SceneGraph

ACTION_UNITS = 2
DIRECTIONS = ("left", "right", "up", "down")

# --- canonical predicates (also the gold predicates of dysen_jax.data.shapes) ---------------------
MOVE_TOWARD = "moving toward"
CANONICAL_PREDICATES: dict[str, str] = {
    **{f"{verb} {d}": f"moving {d}" for verb in ("sliding", "going", "heading", "drifting", "gliding",
                                                 "shifting", "traveling", "travelling") for d in DIRECTIONS},
    "hopping": "jumping", "leaping": "jumping", "bouncing": "jumping", "jumping up": "jumping",
    "getting bigger": "growing", "getting larger": "growing", "growing bigger": "growing",
    "growing larger": "growing", "expanding": "growing",
    "getting smaller": "shrinking", "shrinking down": "shrinking",
    "rotating": "spinning", "turning around": "spinning", "spinning around": "spinning",
    "vanishing": "disappearing", "fading out": "disappearing", "fading away": "disappearing",
    "fading in": "appearing", "showing up": "appearing", "popping up": "appearing",
    "approaching": MOVE_TOWARD, "heading toward": MOVE_TOWARD, "going toward": MOVE_TOWARD,
    "moving towards": MOVE_TOWARD,
}

# --- lexicon ----------------------------------------------------------------------------------------
VERB_LEMMAS = frozenset("""
    approach appear arrive ask disappear bake bark bat bathe be bend bite blow board bounce bowl box brush build
    burn buy call carry catch chase chat check cheer chew chop clap clean climb close collect comb come
    cook crawl cross cry cut dance decorate deliver descend dig dip dive do drag draw dress drift drink
    drip drive drop dry eat enter examine exercise expand explain explode fade fall feed fight fill find
    finish fish fix flip float flow fly fold follow fry get give glide glow go grab greet grill grow
    hand hang have head hide hit hold hop hug hunt jog juggle jump kick kiss kneel knit knock land laugh
    lay lead leap lean lick lie lift light listen load look make melt mix mop move open paddle paint
    pass pet pick place plant play point pop pour practice pray press pull punch push put race rain
    raise reach read relax remove repair rest ride rise roll rotate row rub run rush sail score scream
    scroll see sell serve set sew shake shave shift shine shoot shop shout show shrink sing sit skate ski
    skip sleep slice slide smell smile smoke snow speak spin splash spray squat stack stand stare start
    step stir stop stretch surf sweep swim swing take talk taste teach tell throw tie touch toss travel
    turn type unpack use vanish vacuum wait wake walk wash watch wave wear whisk win wipe work wrap write
    yell
""".split())

IRREGULAR = {
    "ran": "run", "threw": "throw", "thrown": "throw", "took": "take", "taken": "take", "sat": "sit",
    "stood": "stand", "ate": "eat", "eaten": "eat", "drank": "drink", "drove": "drive", "rode": "ride",
    "swam": "swim", "flew": "fly", "fell": "fall", "went": "go", "came": "come", "gave": "give",
    "held": "hold", "caught": "catch", "made": "make", "saw": "see", "got": "get", "began": "begin",
    "built": "build", "wrote": "write", "spoke": "speak", "sang": "sing", "shook": "shake",
    "blew": "blow", "grew": "grow", "shrank": "shrink", "shrunk": "shrink", "spun": "spin",
    "swung": "swing", "dug": "dig", "fed": "feed", "led": "lead", "told": "tell", "wore": "wear",
    "won": "win", "bit": "bite", "hid": "hide", "slid": "slide", "rose": "rise", "hung": "hang",
    "knelt": "kneel", "goes": "go", "does": "do", "has": "have", "had": "have", "did": "do",
    "is": "be", "are": "be", "was": "be", "were": "be", "am": "be",
}
NOT_VERBS = frozenset("""
    thing something nothing anything everything morning evening ceiling building king ring wing string
    spring sing song news bus glass grass dress class gas this his its is was has as us yes always
    sometimes series species lens
""".split()) - {"is", "was", "has", "sing", "dress"}

ARTICLES = frozenset({"a", "an", "the"})
POSSESSIVES = frozenset({"his", "her", "its", "their", "my", "your", "our"})
QUANTIFIERS = frozenset("""this that these those some another every each one two three four five six
    several many few both all any no other""".split())
DETERMINERS = ARTICLES | POSSESSIVES | QUANTIFIERS
SUBJECT_PRONOUNS = frozenset({"it", "he", "she", "they"})
OBJECT_PRONOUNS = frozenset({"it", "him", "her", "them"})
AUXILIARIES = frozenset("""is are was were am be been being will would can could should may might must
    do does did keeps keep kept starts start started begins begin began continues continue tries try
    tried to not also still just slowly quickly""".split())
PARTICLES = frozenset("""left right up down away back around off out over in into onto on to toward
    from at with across through along past under above below behind near beside inside outside
    forward backward bigger larger smaller of by after""".split())
PREPOSITIONS = frozenset("""on in at to into onto from with by over under near behind across through
    toward along past inside outside above below beside between for around during as like""".split())
STOP_WORDS = PREPOSITIONS | frozenset({"again", "together", "then", "after", "before", "or", "but", "very", "too",
                                       "here", "there", "now", "while", "slowly", "quickly"})
FILLER_PREFIXES = (("a", "video", "of"), ("video", "of"), ("a", "clip", "of"), ("an", "animation", "of"),
                   ("footage", "of"), ("there", "is"), ("there", "are"), ("here", "is"), ("this", "is"))

# --- connectives --------------------------------------------------------------------------------------
SEQ, FIRST, CONC, AFTER, BEFORE = "seq", "first", "conc", "after", "before"
SUBORDINATE = (CONC, AFTER, BEFORE)
_CONNECTIVES: dict[tuple[str, ...], str] = {}
for _kind, _phrases in {
    SEQ: ["then", "and then", "after that", "after this", "afterwards", "afterward", "next", "finally",
          "and finally", "later", "and later", "after which", "subsequently", "eventually", "and",
          "and next", "but"],
    FIRST: ["first", "at first", "firstly", "initially", "to begin with"],
    CONC: ["while", "whilst", "as", "meanwhile", "and meanwhile", "in the meantime", "at the same time",
           "at the same time as", "and at the same time", "simultaneously", "and simultaneously",
           "together"],
    AFTER: ["after", "right after", "just after", "soon after", "once", "when", "as soon as"],
    BEFORE: ["before", "right before", "just before", "until"],
}.items():
    for _p in _phrases:
        _CONNECTIVES[tuple(_p.split())] = _kind
_MAX_CONNECTIVE = max(len(p) for p in _CONNECTIVES)
TRAILING_CONC = frozenset({("at", "the", "same", "time"), ("simultaneously",), ("together",)})

_TOKEN_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|[,.;:!?]")
_REWRITES = [(re.compile(p), r) for p, r in [
    (r"\bto the (left|right)\b", r"\1"), (r"\b(up|down|left|right)wards?\b", r"\1"),
    (r"\btowards\b", "toward"), (r"\bnext to\b", "beside"), (r"['’]s\b", ""),
]]
# "in front of" becomes one placeholder word pair so the clause splitter does not read "of" as a
# preposition boundary; callers that want the words back (metrics) tokenize without it.
_PLACEHOLDERS = [(re.compile(r"\bin front of\b"), "before_loc")]


# --- morphology -------------------------------------------------------------------------------------
def gerund(lemma: str) -> str:
    """Regular -ing form: make -> making, run -> running, lie -> lying, see -> seeing."""
    if lemma.endswith("ie"):
        return lemma[:-2] + "ying"
    if lemma.endswith("e") and not lemma.endswith(("ee", "ye", "oe")) and len(lemma) > 2:
        return lemma[:-1] + "ing"
    if re.fullmatch(r"[^aeiou]*[aeiou][^aeiouwxy]", lemma):
        return lemma + lemma[-1] + "ing"
    return lemma + "ing"


def lemmatize(word: str) -> str | None:
    """Verb lemma of a known verb form (base, -s, -ed, irregular), else None."""
    if word in NOT_VERBS and word not in IRREGULAR:
        return None
    if word in IRREGULAR:
        return IRREGULAR[word]
    if word in VERB_LEMMAS:
        return word
    candidates: list[str] = []
    if word.endswith("ies"):
        candidates.append(word[:-3] + "y")
    if word.endswith("es"):
        candidates.append(word[:-2])
    if word.endswith("s"):
        candidates.append(word[:-1])
    if word.endswith("ied"):
        candidates.append(word[:-3] + "y")
    if word.endswith("ed"):
        candidates += [word[:-2], word[:-1], word[:-3]]
    return next((c for c in candidates if c in VERB_LEMMAS), None)


def _is_gerund(word: str) -> bool:
    return len(word) > 4 and word.endswith("ing") and word not in NOT_VERBS


# --- clause parsing ------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Clause:
    """One fragment of the caption: its connectives, words, and where it sits in its sentence."""

    connectives: list[str]
    lead: list[str]
    words: list[str]
    sentence_start: bool
    trailing_conc: bool = False


@dataclasses.dataclass(frozen=True)
class _Verb:
    index: int        # position of the main verb in the clause words
    gerund: str
    subject_end: int  # the subject is words[:subject_end] (before any auxiliary)


def find_verb(words: Sequence[str]) -> _Verb | None:
    """The main verb: the first verb form not inside a determiner-led noun phrase."""
    for i, w in enumerate(words):
        after_det = i > 0 and words[i - 1] in DETERMINERS
        if after_det or w in DETERMINERS or w in SUBJECT_PRONOUNS:
            continue
        if w in AUXILIARIES or w in ("is", "are", "was", "were", "am"):
            nxt = _verb_after_aux(words, i)
            if nxt is not None:
                return nxt
            if w in ("is", "are", "was", "were", "am"):
                return _Verb(i, "being", i)
            continue
        if _is_gerund(w):
            return _Verb(i, w, i)
        lemma = lemmatize(w)
        if lemma is not None:
            return _Verb(i, gerund(lemma), i)
    return _guess_unknown_verb(words)


def _verb_after_aux(words: Sequence[str], aux: int) -> _Verb | None:
    j = aux + 1
    while j < len(words) and (words[j] in AUXILIARIES or words[j].endswith("ly")):
        j += 1
    if j >= len(words):
        return None
    w = words[j]
    if _is_gerund(w):
        return _Verb(j, w, aux)
    lemma = lemmatize(w)
    return _Verb(j, gerund(lemma), aux) if lemma is not None and lemma != "be" else None


def _guess_unknown_verb(words: Sequence[str]) -> _Verb | None:
    """An unknown third-person verb: the first '-s' word after a noun ("a skier skis")."""
    for i in range(1, len(words)):
        w, prev = words[i], words[i - 1]
        if (prev not in DETERMINERS and prev not in STOP_WORDS and w.endswith("s")
                and not w.endswith(("ss", "us", "is")) and w not in NOT_VERBS and len(w) > 2):
            return _Verb(i, gerund(w[:-2] if w.endswith(("ches", "shes", "xes")) else w[:-1]), i)
    return None


def noun_phrase(words: Sequence[str]) -> str:
    """Words of a noun phrase up to the first stop word, articles and possessives dropped."""
    kept: list[str] = []
    for i, w in enumerate(words):
        if w in STOP_WORDS or w.endswith("ly") and i > 0:
            break
        if w in ARTICLES or (w in POSSESSIVES and i + 1 < len(words) and words[i + 1] not in STOP_WORDS):
            continue
        kept.append(w)
    return " ".join(kept)


def _split_predicate(words: Sequence[str], verb: _Verb) -> tuple[str, str | None]:
    """Gerund + particles as the predicate, then the object noun phrase as the target."""
    rest = [w for w in words[verb.index + 1:] if not (w.endswith("ly") and len(w) > 3)]
    parts = [verb.gerund]
    j = 0
    while j < len(rest) and rest[j] in PARTICLES and (rest[j] != "of" or len(parts) > 1) and len(parts) < 3:
        parts.append(rest[j])
        j += 1
    target = noun_phrase(rest[j:]) or None
    predicate = " ".join(parts)
    predicate = CANONICAL_PREDICATES.get(predicate, predicate)
    return predicate, target


def _verbless_event(words: Sequence[str]) -> tuple[str, str, str | None]:
    """(subject, preposition, object) for a caption with no verb, e.g. a sunset over the ocean."""
    for i, w in enumerate(words):
        if w in PREPOSITIONS and i + 1 < len(words):
            subject = noun_phrase(words[:i]) or "scene"
            target = noun_phrase(words[i + 1:]) or None
            return subject, w, target
    return noun_phrase(words) or " ".join(words), "being", None


# --- caption -> clauses -------------------------------------------------------------------------------
def tokenize(caption: str, placeholders: bool = True) -> list[str]:
    """Lowercased words and punctuation marks, after a few phrase rewrites ("to the left" -> "left");
    `placeholders=False` keeps "in front of" as words instead of the parser's placeholder."""
    text = caption.lower()
    for pattern, repl in _REWRITES + (_PLACEHOLDERS if placeholders else []):
        text = pattern.sub(repl, text)
    return _TOKEN_RE.findall(text)


def _match_connective(tokens: Sequence[str], i: int) -> tuple[str, int] | None:
    for n in range(min(_MAX_CONNECTIVE, len(tokens) - i), 0, -1):
        kind = _CONNECTIVES.get(tuple(tokens[i:i + n]))
        if kind is not None:
            return kind, n
    return None


def _strip_filler(words: list[str]) -> list[str]:
    for prefix in FILLER_PREFIXES:
        if tuple(words[:len(prefix)]) == prefix and len(words) > len(prefix):
            return words[len(prefix):]
    return words


class _Splitter:
    """Cuts a token stream into `_Clause`s at punctuation and connectives."""

    def __init__(self) -> None:
        self.clauses: list[_Clause] = []
        self.sentence_start = True
        self.connectives: list[str] = []
        self.lead: list[str] = []
        self.words: list[str] = []

    def flush(self, end_of_sentence: bool) -> None:
        if self.words:
            self.clauses.append(_Clause(self.connectives, self.lead, self.words, self.sentence_start))
            self.sentence_start, self.connectives, self.lead = False, [], []
        self.words = []
        if end_of_sentence:
            self.sentence_start, self.connectives, self.lead = True, [], []

    def run(self, tokens: Sequence[str]) -> list[_Clause]:
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok in ",.;!?:":
                self.flush(tok != ",")
                i += 1
                continue
            match = _match_connective(tokens, i)
            if match is not None and tokens[i] == "right" and self.words and find_verb(self.words[-1:]):
                match = None  # "moves right after X" is a direction, not "right after"
            if match is None:
                self.words.append(tok)
                i += 1
                continue
            kind, n = match
            phrase = tuple(tokens[i:i + n])
            following = tokens[i + n] if i + n < len(tokens) else "."
            if phrase in TRAILING_CONC and following in ",.;!?:" and self.words:
                self.flush(False)
                self.clauses[-1].trailing_conc = True
            else:
                self.flush(False)
                self.connectives = self.connectives + [kind]
                self.lead = self.lead + list(phrase)
            i += n
        self.flush(True)
        return self.clauses


def split_clauses(caption: str) -> list[_Clause]:
    """Fragments between punctuation and connectives, verbless ones merged into a neighbour."""
    clauses = _Splitter().run(tokenize(caption))
    for c in clauses:
        c.words = _strip_filler(c.words)
    return _merge_verbless(clauses)


def _merge_verbless(clauses: list[_Clause]) -> list[_Clause]:
    """Joins each fragment without a verb to the previous fragment (the next one if it is first)."""
    merged: list[_Clause] = []
    carry: list[str] = []
    carry_clause: _Clause | None = None
    for c in clauses:
        if find_verb(c.words) is None:
            if merged:
                merged[-1].words += c.lead + c.words
                merged[-1].trailing_conc = merged[-1].trailing_conc or c.trailing_conc
            else:
                carry_clause = carry_clause or c
                carry += (c.lead if carry else []) + c.words
            continue
        if carry_clause is not None:
            c = _Clause(carry_clause.connectives, carry_clause.lead, carry + c.lead + c.words,
                        carry_clause.sentence_start, c.trailing_conc)
            carry, carry_clause = [], None
        merged.append(c)
    if carry_clause is not None:
        merged.append(_Clause(carry_clause.connectives, carry_clause.lead, carry, carry_clause.sentence_start))
    return merged


# --- time order -----------------------------------------------------------------------------------------
class _Timeline:
    """Groups of concurrent clauses in time order; clauses are placed relative to earlier ones."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []

    def group_of(self, clause: int) -> int:
        return next(g for g, members in enumerate(self.groups) if clause in members)

    def append(self, clause: int) -> None:
        self.groups.append([clause])

    def join(self, clause: int, ref: int) -> None:
        self.groups[self.group_of(ref)].append(clause)

    def insert_before(self, clause: int, ref: int) -> None:
        self.groups.insert(self.group_of(ref), [clause])

    def insert_after(self, clause: int, ref: int) -> None:
        self.groups.insert(self.group_of(ref) + 1, [clause])

    def place(self, kind: str, clause: int, ref: int, clause_is_main: bool) -> None:
        """`kind` relates the main clause to the subordinate one ("X after Y": X after Y)."""
        if kind == CONC:
            self.join(clause, ref)
        elif (kind == AFTER) == clause_is_main:
            self.insert_after(clause, ref)
        else:
            self.insert_before(clause, ref)


def schedule(clauses: Sequence[_Clause]) -> list[int]:
    """The time-group index of every clause (see the module docstring for the rules)."""
    timeline = _Timeline()
    pending: tuple[str, int] | None = None
    for i, c in enumerate(clauses):
        subordinate = next((k for k in reversed(c.connectives) if k in SUBORDINATE), None)
        sequential = any(k in (SEQ, FIRST) for k in c.connectives)
        if subordinate and (c.sentence_start or sequential or i == 0):
            timeline.append(i)
            pending = (subordinate, i)
        elif subordinate:
            timeline.place(subordinate, i, i - 1, clause_is_main=False)
        elif c.trailing_conc and i > 0:
            timeline.join(i, i - 1)
        elif pending is not None and not sequential:
            timeline.place(pending[0], i, pending[1], clause_is_main=True)
            pending = None
        else:
            timeline.append(i)
            pending = None
    index = {clause: g for g, members in enumerate(timeline.groups) for clause in members}
    return [index[i] for i in range(len(clauses))]


# --- the planner ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Triple:
    agent: str
    predicate: str
    target: str | None


_UNRESOLVED_SUBJECTS = {"he": "man", "she": "woman", "they": "people", "it": "it"}


def clause_triples(clauses: Sequence[_Clause]) -> list[_Triple]:
    """(agent, predicate, target) of each clause, pronouns and missing subjects resolved."""
    triples: list[_Triple] = []
    agents: list[str] = []
    targets: list[str] = []
    for c in clauses:
        verb = find_verb(c.words)
        if verb is None:
            agent, predicate, target = _verbless_event(c.words)
        else:
            subject = noun_phrase(c.words[:verb.subject_end])
            if not subject or subject in SUBJECT_PRONOUNS:
                subject = agents[-1] if agents else _UNRESOLVED_SUBJECTS.get(subject, "someone")
            agent = subject
            predicate, target = _split_predicate(c.words, verb)
        if target in OBJECT_PRONOUNS:
            pool = [t for t in targets if t != agent] if target in ("it", "them") else []
            others = [a for a in agents if a != agent]
            target = (pool or others or [target])[-1]
        triples.append(_Triple(agent, predicate, target))
        agents.append(agent)
        if target:
            targets.append(target)
    return triples


def parse_events(caption: str) -> list[Event]:
    """Step I: the caption's events, ordered by (start, position in the caption)."""
    if not isinstance(caption, str) or not caption.strip():
        raise DSGError("caption is empty: give a non-empty text prompt to plan")
    clauses = split_clauses(caption)
    if not clauses:  # only connectives ("and then"): plan the words as one verbless clause
        words = [w for w in tokenize(caption) if w not in ",.;!?:"]
        if not words:
            raise DSGError(f"caption {caption!r} has no words to plan from")
        clauses = [_Clause([], [], words, True)]
    groups = schedule(clauses)
    triples = clause_triples(clauses)
    events = [Event(t.agent, t.predicate, t.target, g * ACTION_UNITS, (g + 1) * ACTION_UNITS)
              for t, g in zip(triples, groups)]
    order = sorted(range(len(events)), key=lambda i: (events[i].start, i))
    return [events[i] for i in order]


def name_attributes(objects: Sequence[str], attribute_words: Sequence[str]) -> dict[str, list[str]]:
    """Attribute words (e.g. colours, shapes) that appear in each object's name."""
    known = set(attribute_words)
    return {o: [w for w in o.split() if w in known] for o in objects}


# Step III of the rules planner reads these words off object names (`planner.imagination=True`).
COLOUR_WORDS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black",
                                 "white", "gray", "grey", "golden", "silver")
APPEARING, DISAPPEARING = "appearing", "disappearing"


def objects_in_scene(events: Sequence[Event], t: int) -> list[str]:
    """Objects the plan names that are in the scene at time step t, in order of first mention: an
    object is there from the start unless it is "appearing" (then from its event's start), and until
    the end unless it is "disappearing" (then until its event's end) -- the synthetic data's rule."""
    names = list(dict.fromkeys(n for e in sorted(events, key=lambda e: e.start) for n in (e.agent, e.target)
                               if n is not None))
    appears = {e.agent: e.start for e in events if e.predicate == APPEARING}
    vanishes = {e.agent: e.end for e in events if e.predicate == DISAPPEARING}
    return [n for n in names if appears.get(n, 0) <= t < vanishes.get(n, t + 1)]


class RulesPlanner:
    """Deterministic offline planner. `enrich=True` is its step III: every scene graph holds every object
    in the scene at that time (idle ones too, "object permanence"), each with the `attribute_words` of its
    name (default COLOUR_WORDS), so each frame's graph says what the frame shows, not only who acts."""

    def __init__(self, enrich: bool = False, attribute_words: Sequence[str] = COLOUR_WORDS) -> None:
        self.enrich = enrich
        self.attribute_words = tuple(attribute_words)

    def plan(self, caption: str) -> Plan:
        """Events parsed from `caption` and their DSG (skeleton, or enriched with attributes)."""
        events = parse_events(caption)
        dsg = events_to_dsg(events)
        if self.enrich:
            dsg = self._enriched(dsg, events)
        return Plan(tuple(events), dsg)

    def _enriched(self, dsg: DSG, events: Sequence[Event]) -> DSG:
        attrs = name_attributes(dsg.objects, self.attribute_words)
        graphs = tuple(SceneGraph(g.t, g.triplets, g.attributes + tuple(
            (o, a) for o in objects_in_scene(events, g.t) for a in attrs.get(o, ()))) for g in dsg.graphs)
        return DSG(graphs, dsg.duration)
