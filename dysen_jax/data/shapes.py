"""Synthetic "dynamic shapes" dataset: coloured shapes performing captioned actions, with gold plans.

Each clip shows 1-4 shapes (distinct colours, so a colour names an object) on a plain background
performing 1..max_actions actions, one after another or two at a time. The caption describes them
with temporal connectives ("then", "after", "before", "while", ...) so sentence order and time
order often differ ("the blue square jumps after the red circle moves left").

Time convention (the whole project relies on it): events use the planner's duration convention
(`dysen_jax.planner.rules.ACTION_UNITS` units of v per action; time group k covers
[k*U, (k+1)*U)); the plan covers `duration = max(end)` units and video frame f shows time
tau_f = f * duration / F. An event on [start, end) is performed in exactly the frames with
start <= tau_f < end: its progress there is min(1, (tau_f + duration/F - start) / (end - start)),
i.e. each frame shows the state at the end of its own time slice, so the action is complete at the
last frame of its interval; before it the progress is 0, after it 1 (shapes keep their state).
"Appearing" objects are invisible before their event, "disappearing" ones invisible after.

Rendering is numpy only (2x2 supersampled coverage for anti-aliasing); no jax / tf / torch.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator, Sequence

import numpy as np

from dysen_jax.dsg.build import events_to_dsg
from dysen_jax.dsg.schema import DSG, Event, Plan, SceneGraph
from dysen_jax.planner.rules import ACTION_UNITS, MOVE_TOWARD

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (228, 44, 44), "green": (46, 196, 70), "blue": (52, 100, 240),
    "yellow": (238, 218, 40), "purple": (164, 72, 224), "orange": (248, 140, 24),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")
SPIN_SHAPES = frozenset({"triangle", "star", "heart"})  # not symmetric under the 180 degree spin
BACKGROUND: tuple[int, int, int] = (24, 24, 32)
MAX_OBJECTS = 4

DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
MOVES = {f"moving {d}": v for d, v in DIRECTION_VECTORS.items()}
ACTIONS: tuple[str, ...] = (*MOVES, "jumping", "growing", "shrinking", "spinning", "appearing",
                            "disappearing", MOVE_TOWARD)

# Action magnitudes, in fractions of the frame side (positions and sizes are normalised to [0, 1]).
MOVE_DISTANCE = 0.3
JUMP_HEIGHT = 0.25
GROW_FACTOR = 1.5
SHRINK_FACTOR = 0.6
SPIN_DEGREES = 180.0
SIZE_RANGE = (0.22, 0.3)      # bounding-circle diameter
TOWARD_GAP = 0.04             # "moving toward" stops this far from touching its target
MIN_TOWARD_TRAVEL = 0.12

# Sampling probabilities.
P_CONCURRENT = 0.3            # an action joins the previous time group
P_NEW_OBJECT = 0.5
P_PAIR_CHUNK = 0.8            # two consecutive time groups are described in one chunk
P_REVERSED = 0.7              # ... in reversed sentence order ("B after A", "before B, A")
P_PRONOUN = 0.5

# Caption phrasing: every surface form parses back to its canonical predicate (rules planner).
VERB_PHRASES: dict[str, tuple[str, ...]] = {
    **{f"moving {d}": (f"moves {d}", f"moves {d}", f"slides {d}", f"goes {d}")
       for d in ("up", "down")},
    **{f"moving {d}": (f"moves {d}", f"moves to the {d}", f"slides {d}", f"goes {d}")
       for d in ("left", "right")},
    "jumping": ("jumps", "jumps", "hops", "bounces"),
    "growing": ("grows", "gets bigger", "grows larger", "expands"),
    "shrinking": ("shrinks", "shrinks", "gets smaller"),
    "spinning": ("spins", "rotates", "turns around", "spins around"),
    "appearing": ("appears", "appears", "fades in", "shows up"),
    "disappearing": ("disappears", "vanishes", "fades out"),
    MOVE_TOWARD: ("moves toward {target}", "moves towards {target}", "approaches {target}",
                  "heads toward {target}"),
}
PROGRESSIVE_PHRASES: dict[str, tuple[str, ...]] = {
    **{f"moving {d}": (f"is moving {d}", f"is sliding {d}") for d in DIRECTION_VECTORS},
    "jumping": ("is jumping", "is hopping"), "growing": ("is growing",), "shrinking": ("is shrinking",),
    "spinning": ("is spinning", "is rotating"), "appearing": ("is appearing",),
    "disappearing": ("is disappearing", "is fading out"),
    MOVE_TOWARD: ("is moving toward {target}", "is approaching {target}"),
}
# Two concurrent clauses; "{A}" is the first clause of the group, "{B}" the second.
CONCURRENT_FORMS = ("{A} while {B*}", "{A} as {B}", "{A} and at the same time {B}",
                    "{A}, and meanwhile {B}", "{A} and {B} at the same time", "{A} and {B} simultaneously")
SUBORDINATE_CONCURRENT_FORMS = ("{A} while {B*}", "{A} as {B}")
PREPOSED_CONCURRENT_FORMS = ("while {B*}, {A}",)
# Two consecutive time groups: {A} happens first, {B} second.
FORWARD_FORMS = ("{A}, then {B}", "{A} and then {B}", "{A} before {B}", "after {A}, {B}")
REVERSED_FORMS = ("{B} after {A}", "{B} after {A}", "before {B}, {A}", "{B} once {A}")
CHUNK_JOINS = (", then ", ", and then ", ". Then ", ". After that, ", ". Next, ", ". ", ". Afterwards, ")
FINAL_JOINS = (", and finally ", ". Finally, ")
FIRST_PREFIXES = ("first, ", "first ")


@dataclasses.dataclass(frozen=True, eq=False)
class ObjectTrack:
    """One object's per-frame state; positions and size are fractions of the frame side.

    x, y: centre; size: bounding-circle diameter; angle: degrees (clockwise on screen);
    opacity: 0..1; visible: opacity > 0 and size > 0.
    """

    name: str
    colour: str
    shape: str
    rgb: tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray
    size: np.ndarray
    angle: np.ndarray
    opacity: np.ndarray
    visible: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class ShapesExample:
    """A clip, its caption, its gold events (time order) and their step-II DSG, plus object states."""

    index: int
    seed: int
    video: np.ndarray                 # uint8 [F, H, W, 3]
    caption: str
    events: tuple[Event, ...]
    dsg: DSG
    objects: tuple[ObjectTrack, ...]
    frame_times: np.ndarray           # float32 [F], tau_f in units of v
    caption_order: tuple[int, ...]    # events[i] is the caption_order[i]-th clause of the caption

    @property
    def plan(self) -> Plan:
        return Plan(self.events, self.dsg)


# --- scenario sampling ----------------------------------------------------------------------------------
@dataclasses.dataclass
class _Object:
    colour: str
    shape: str
    size: float = 0.0
    x: float = 0.0
    y: float = 0.0
    hidden_at_start: bool = False

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclasses.dataclass(frozen=True)
class _Action:
    agent: int
    predicate: str
    target: int | None
    group: int


@dataclasses.dataclass
class _Scenario:
    objects: list[_Object]
    actions: list[_Action]
    groups: list[list[int]]


class _ScenarioSampler:
    """Samples objects and time-ordered actions that respect visibility (appear first, vanish last)."""

    def __init__(self, rng: np.random.Generator, max_actions: int) -> None:
        self.rng = rng
        self.max_actions = max_actions
        self.objects: list[_Object] = []
        self.state: list[str] = []    # per object: "visible" | "gone"
        self.actions: list[_Action] = []
        self.groups: list[list[int]] = []

    def sample(self) -> _Scenario:
        counts = np.arange(1, self.max_actions + 1)
        n_actions = int(self.rng.choice(counts, p=counts / counts.sum()))  # more actions, more often
        for a in range(n_actions):
            if a > 0 and len(self.groups[-1]) < 2 and self.rng.random() < P_CONCURRENT:
                group = self.groups[-1]
            else:
                group = []
                self.groups.append(group)
            if not self._add_action(group):
                if not group:
                    self.groups.pop()
                break
        return _Scenario(self.objects, self.actions, self.groups)

    def _busy(self, group: list[int]) -> set[int]:
        busy = set()
        for a in group:
            busy.add(self.actions[a].agent)
            if self.actions[a].target is not None:
                busy.add(self.actions[a].target)
        return busy

    def _new_object(self) -> int:
        used_colours = {o.colour for o in self.objects}
        colour = str(self.rng.choice([c for c in COLOURS if c not in used_colours]))
        self.objects.append(_Object(colour, str(self.rng.choice(SHAPES))))
        self.state.append("visible")
        return len(self.objects) - 1

    def _add_action(self, group: list[int]) -> bool:
        busy = self._busy(group)
        existing = [i for i, s in enumerate(self.state) if s == "visible" and i not in busy]
        can_create = len(self.objects) < MAX_OBJECTS
        if not existing and not can_create:
            return False
        is_new = not existing or (can_create and self.rng.random() < P_NEW_OBJECT)
        agent = self._new_object() if is_new else int(self.rng.choice(existing))
        predicate = self._choose_predicate(agent, is_new, busy | {agent})
        target = None
        if predicate == MOVE_TOWARD:
            target = self._choose_target(busy | {agent})
        if predicate == "appearing":
            self.objects[agent].hidden_at_start = True
        if predicate == "disappearing":
            self.state[agent] = "gone"
        self.actions.append(_Action(agent, predicate, target, len(self.groups) - 1))
        group.append(len(self.actions) - 1)
        return True

    def _target_candidates(self, busy: set[int]) -> list[int]:
        return [i for i, s in enumerate(self.state) if s == "visible" and i not in busy]

    def _choose_predicate(self, agent: int, is_new: bool, busy: set[int]) -> str:
        kinds = ["move", "jumping", "growing", "shrinking"]
        if self.objects[agent].shape in SPIN_SHAPES:
            kinds.append("spinning")
        if is_new:
            kinds.append("appearing")
        if not is_new or self.rng.random() < 0.5:
            kinds.append("disappearing")
        if self._target_candidates(busy) or len(self.objects) < MAX_OBJECTS:
            kinds.append(MOVE_TOWARD)
        kind = str(self.rng.choice(kinds))
        return str(self.rng.choice(list(MOVES))) if kind == "move" else kind

    def _choose_target(self, busy: set[int]) -> int:
        candidates = self._target_candidates(busy)
        if not candidates or (len(self.objects) < MAX_OBJECTS and self.rng.random() < 0.3):
            return self._new_object()
        return int(self.rng.choice(candidates))


# --- placement and per-frame states ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Effect:
    """What one action does to its agent, precomputed from the placement."""

    agent: int
    predicate: str
    start: int
    end: int
    dx: float = 0.0
    dy: float = 0.0


def _radius(size: float) -> float:
    return size / 2.0


def _inside(x: float, y: float, r: float) -> bool:
    return r <= x <= 1.0 - r and r <= y <= 1.0 - r


def _place(scenario: _Scenario, rng: np.random.Generator, tries: int = 40) -> list[_Effect] | None:
    """Random sizes/positions for which every action stays in frame; None if none found."""
    for _ in range(tries):
        for o in scenario.objects:
            o.size = float(rng.uniform(*SIZE_RANGE))
            r = _radius(o.size)
            o.x, o.y = (float(v) for v in rng.uniform(r, 1.0 - r, size=2))
        if not _separated(scenario.objects):
            continue
        effects = _simulate(scenario)
        if effects is not None:
            return effects
    return None


def _separated(objects: Sequence[_Object]) -> bool:
    for a, b in itertools.combinations(objects, 2):
        if np.hypot(a.x - b.x, a.y - b.y) < _radius(a.size) + _radius(b.size) + 0.02:
            return False
    return True


def _simulate(scenario: _Scenario) -> list[_Effect] | None:
    """Runs the actions in time order on the key states; None if something leaves the frame."""
    pos = [[o.x, o.y] for o in scenario.objects]
    size = [o.size for o in scenario.objects]
    effects = []
    for g, members in enumerate(scenario.groups):
        start, end = g * ACTION_UNITS, (g + 1) * ACTION_UNITS
        for a in members:
            act = scenario.actions[a]
            i = act.agent
            dx = dy = 0.0
            if act.predicate in MOVES:
                vx, vy = MOVES[act.predicate]
                dx, dy = vx * MOVE_DISTANCE, vy * MOVE_DISTANCE
            elif act.predicate == MOVE_TOWARD:
                tx, ty = pos[act.target]
                dist = float(np.hypot(tx - pos[i][0], ty - pos[i][1]))
                travel = dist - _radius(size[i]) - _radius(size[act.target]) - TOWARD_GAP
                if travel < MIN_TOWARD_TRAVEL:
                    return None
                dx, dy = (tx - pos[i][0]) * travel / dist, (ty - pos[i][1]) * travel / dist
            elif act.predicate == "growing":
                size[i] *= GROW_FACTOR
            elif act.predicate == "shrinking":
                size[i] *= SHRINK_FACTOR
            elif act.predicate == "jumping" and pos[i][1] - JUMP_HEIGHT < _radius(size[i]):
                return None
            pos[i] = [pos[i][0] + dx, pos[i][1] + dy]
            if not _inside(pos[i][0], pos[i][1], _radius(size[i])) or _collides(i, pos, size):
                return None
            effects.append(_Effect(i, act.predicate, start, end, dx, dy))
    return effects


def _collides(i: int, pos: Sequence[Sequence[float]], size: Sequence[float]) -> bool:
    """Whether object i's resting place overlaps another object's (shapes end apart)."""
    return any(j != i and np.hypot(pos[i][0] - pos[j][0], pos[i][1] - pos[j][1])
               < _radius(size[i]) + _radius(size[j]) for j in range(len(pos)))


def frame_times(duration: int, num_frames: int) -> np.ndarray:
    """tau_f = f * duration / F: the plan time each frame shows (float32 [F])."""
    return (np.arange(num_frames, dtype=np.float64) * duration / num_frames).astype(np.float32)


def progress(start: int, end: int, duration: int, num_frames: int) -> np.ndarray:
    """Per-frame progress of an event on [start, end): 0 before, 1 after (see module docstring)."""
    taus = np.arange(num_frames, dtype=np.float64) * duration / num_frames
    dt = duration / num_frames
    p = np.clip((taus + dt - start) / (end - start), 0.0, 1.0)
    p[taus < start] = 0.0
    p[taus >= end] = 1.0
    return p


def _tracks(objects: Sequence[_Object], effects: Sequence[_Effect], duration: int,
            num_frames: int) -> tuple[ObjectTrack, ...]:
    tracks = []
    for i, o in enumerate(objects):
        x = np.full(num_frames, o.x)
        y = np.full(num_frames, o.y)
        size = np.full(num_frames, o.size)
        angle = np.zeros(num_frames)
        opacity = np.full(num_frames, 0.0 if o.hidden_at_start else 1.0)
        for e in effects:
            if e.agent != i:
                continue
            p = progress(e.start, e.end, duration, num_frames)
            x, y = x + e.dx * p, y + e.dy * p
            if e.predicate == "jumping":
                y = y - JUMP_HEIGHT * np.sin(np.pi * p)
            elif e.predicate == "growing":
                size = size * (1.0 + (GROW_FACTOR - 1.0) * p)
            elif e.predicate == "shrinking":
                size = size * (1.0 + (SHRINK_FACTOR - 1.0) * p)
            elif e.predicate == "spinning":
                angle = angle + SPIN_DEGREES * p
            elif e.predicate == "appearing":
                opacity = np.where(p > 0, p, 0.0)
            elif e.predicate == "disappearing":
                opacity = opacity * (1.0 - p)
        f32 = lambda v: np.asarray(v, np.float32)
        tracks.append(ObjectTrack(o.name, o.colour, o.shape, COLOURS[o.colour], f32(x), f32(y), f32(size),
                                  f32(angle), f32(opacity), (opacity > 0) & (size > 0)))
    return tuple(tracks)


# --- rendering ------------------------------------------------------------------------------------------
def _star_polygon(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[-0.72, -0.72], [0.72, -0.72], [0.72, 0.72], [-0.72, 0.72]]),
    "triangle": np.array([[0.0, -1.0], [0.866, 0.5], [-0.866, 0.5]]),
    "star": _star_polygon(),
}


def _in_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over the sample points."""
    inside = np.zeros(u.shape, bool)
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0)):
        if y1 == y2:
            continue
        crosses = (y1 > v) != (y2 > v)
        inside ^= crosses & (u < (x2 - x1) * (v - y1) / (y2 - y1) + x1)
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (shape-local coordinates, unit bounding circle, v down) lie inside `shape`."""
    if shape == "circle":
        return u * u + v * v <= 0.9
    if shape == "heart":
        hx, hy = u * 1.15, -v * 1.15 + 0.12
        return (hx * hx + hy * hy - 1.0) ** 3 - hx * hx * hy ** 3 <= 0.0
    return _in_polygon(u, v, _POLYGONS[shape])


_SUPERSAMPLE = 2


def _draw(frame: np.ndarray, shape: str, rgb: Sequence[int], cx: float, cy: float, radius: float,
          angle: float, opacity: float) -> None:
    """Alpha-composites one anti-aliased shape into `frame` (float32 [H, W, 3]) in place."""
    h, w = frame.shape[:2]
    if radius <= 0 or opacity <= 0:
        return
    x0, x1 = max(int(np.floor(cx - radius)) - 1, 0), min(int(np.ceil(cx + radius)) + 1, w)
    y0, y1 = max(int(np.floor(cy - radius)) - 1, 0), min(int(np.ceil(cy + radius)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    s = _SUPERSAMPLE
    gx = x0 + (np.arange((x1 - x0) * s) + 0.5) / s
    gy = y0 + (np.arange((y1 - y0) * s) + 0.5) / s
    dx, dy = (gx[None, :] - cx) / radius, (gy[:, None] - cy) / radius
    c, sn = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    u, v = c * dx + sn * dy, -sn * dx + c * dy
    mask = shape_mask(shape, u, v).astype(np.float32)
    cover = mask.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    alpha = (cover * opacity)[..., None]
    region = frame[y0:y1, x0:x1]
    region *= 1.0 - alpha
    region += alpha * np.asarray(rgb, np.float32)


def render_video(tracks: Sequence[ObjectTrack], num_frames: int, resolution: int) -> np.ndarray:
    """uint8 [F, H, W, 3] video of the tracks, drawn in object order on the plain background."""
    video = np.empty((num_frames, resolution, resolution, 3), np.float32)
    video[:] = np.asarray(BACKGROUND, np.float32)
    for f in range(num_frames):
        for t in tracks:
            if t.visible[f]:
                _draw(video[f], t.shape, t.rgb, float(t.x[f]) * resolution, float(t.y[f]) * resolution,
                      float(t.size[f]) * resolution / 2.0, float(t.angle[f]), float(t.opacity[f]))
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


# --- captions -------------------------------------------------------------------------------------------
class _CaptionWriter:
    """Turns time groups into a caption with connectives; records the clause order of each action."""

    def __init__(self, scenario: _Scenario, rng: np.random.Generator) -> None:
        self.s = scenario
        self.rng = rng
        self.order: list[int] = []       # action indices in caption order
        self.join: str | None = None     # connective just written before the next clause, if any

    def choice(self, options: Sequence[str]) -> str:
        return str(options[int(self.rng.integers(len(options)))])

    def clause(self, a: int, progressive: bool = False) -> str:
        act = self.s.actions[a]
        table = PROGRESSIVE_PHRASES if progressive else VERB_PHRASES
        target = f"the {self.s.objects[act.target].name}" if act.target is not None else ""
        verb = self.choice(table[act.predicate]).format(target=target)
        subject = self._subject(act.agent)
        self.order.append(a)
        return f"{subject} {verb}".strip()

    def _subject(self, agent: int) -> str:
        """'it' (or nothing right after ', then') when a chunk's first clause repeats the last agent."""
        join, self.join = self.join, None
        name = f"the {self.s.objects[agent].name}"
        if join is None or not self.order or self.s.actions[self.order[-1]].agent != agent:
            return name
        if self.rng.random() >= P_PRONOUN:
            return name
        return "" if join in (", then ", ", and then ") and self.rng.random() < 0.5 else "it"

    def group(self, g: int, context: str) -> str:
        """One time group; context 'lead' (starts a chunk), 'main' or 'sub' (after a subordinator)."""
        members = self.s.groups[g]
        if len(members) == 1:
            return self.clause(members[0])
        forms = {"lead": CONCURRENT_FORMS + PREPOSED_CONCURRENT_FORMS, "main": CONCURRENT_FORMS[:4],
                 "sub": SUBORDINATE_CONCURRENT_FORMS}[context]
        return self._fill(self.choice(forms), lambda slot, prog: self.clause(
            members[0] if slot == "A" else members[1], progressive=prog))

    def _fill(self, form: str, make) -> str:
        """Fills {A}/{B} (and the progressive {B*}) slots in the order they occur in `form`."""
        out, rest = [], form
        while "{" in rest:
            head, _, tail = rest.partition("{")
            slot, _, rest = tail.partition("}")
            if head:
                self.join = "" if self.join is not None else None
            out.append(head)
            out.append(make(slot.rstrip("*"), slot.endswith("*") and self.rng.random() < 0.5))
        return "".join(out) + rest

    def chunk(self, groups: Sequence[int]) -> str:
        if len(groups) == 1:
            return self.group(groups[0], "lead")
        form = self.choice(REVERSED_FORMS if self.rng.random() < P_REVERSED else FORWARD_FORMS)

        def make(slot: str, _progressive: bool) -> str:
            g = groups[0] if slot == "A" else groups[1]
            i = form.index("{" + slot)
            subordinate = form[:i].rstrip().endswith(("after", "before", "once"))
            return self.group(g, "sub" if subordinate else "main")

        return self._fill(form, make)

    def write(self) -> str:
        chunks = self._chunks(len(self.s.groups))
        text = ""
        for ci, groups in enumerate(chunks):
            if ci == 0:
                if len(chunks) > 1 and len(groups) == 1 and self.rng.random() < 0.3:
                    text = self.choice(FIRST_PREFIXES)
            else:
                last = ci == len(chunks) - 1 and ci >= 2 and self.rng.random() < 0.5
                self.join = self.choice(FINAL_JOINS if last else CHUNK_JOINS)
                text += self.join
            text += self.chunk(groups)
        return _sentence_case(text)

    def _chunks(self, k: int) -> list[list[int]]:
        chunks, g = [], 0
        while g < k:
            if g + 1 < k and self.rng.random() < P_PAIR_CHUNK:
                chunks.append([g, g + 1])
                g += 2
            else:
                chunks.append([g])
                g += 1
        return chunks


def _sentence_case(text: str) -> str:
    sentences = [s.strip() for s in text.split(". ")]
    return ". ".join(s[:1].upper() + s[1:] for s in sentences if s) + "."


# --- public API -------------------------------------------------------------------------------------------
def _rng(index: int, seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF, 0x5A4E]))


def make_example(index: int, seed: int = 0, num_frames: int = 8, resolution: int = 32,
                 max_actions: int = 3) -> ShapesExample:
    """The example `index` of the dataset `seed` (deterministic in (seed, index) and the sizes)."""
    if num_frames < 1 or resolution < 8 or max_actions < 1:
        raise ValueError(f"need num_frames >= 1, resolution >= 8, max_actions >= 1; got "
                         f"{num_frames}, {resolution}, {max_actions}")
    rng = _rng(index, seed)
    while True:
        scenario = _ScenarioSampler(rng, max_actions).sample()
        effects = _place(scenario, rng)
        if effects is not None:
            break
    caption_writer = _CaptionWriter(scenario, rng)
    caption = caption_writer.write()
    clause_pos = {a: i for i, a in enumerate(caption_writer.order)}
    ranked = sorted(range(len(scenario.actions)), key=lambda a: (scenario.actions[a].group, clause_pos[a]))
    events = tuple(_event(scenario, a) for a in ranked)
    duration = max(e.end for e in events)
    tracks = _tracks(scenario.objects, effects, duration, num_frames)
    return ShapesExample(
        index=int(index), seed=int(seed), video=render_video(tracks, num_frames, resolution),
        caption=caption, events=events, dsg=events_to_dsg(events), objects=tracks,
        frame_times=frame_times(duration, num_frames), caption_order=tuple(clause_pos[a] for a in ranked))


def _event(scenario: _Scenario, a: int) -> Event:
    act = scenario.actions[a]
    target = scenario.objects[act.target].name if act.target is not None else None
    return Event(scenario.objects[act.agent].name, act.predicate, target,
                 act.group * ACTION_UNITS, (act.group + 1) * ACTION_UNITS)


def iterate_examples(num: int, seed: int = 0, start: int = 0, **kwargs) -> Iterator[ShapesExample]:
    """Examples start .. start+num-1 of the dataset `seed`; kwargs go to `make_example`."""
    for index in range(start, start + num):
        yield make_example(index, seed, **kwargs)


def vocabulary_texts() -> list[str]:
    """Every word the generator can emit (captions, object names, predicates) for a WordVocab."""
    texts = [f"the {c} {s}" for c in COLOURS for s in SHAPES]
    texts += [p.format(target="the") for table in (VERB_PHRASES, PROGRESSIVE_PHRASES)
              for phrases in table.values() for p in phrases]
    texts += [f.replace("{B*}", "").replace("{A}", "").replace("{B}", "")
              for f in CONCURRENT_FORMS + PREPOSED_CONCURRENT_FORMS + FORWARD_FORMS + REVERSED_FORMS]
    texts += list(CHUNK_JOINS + FINAL_JOINS + FIRST_PREFIXES + ACTIONS) + ["it"]
    return texts


# --- gold scene graphs (step-III "gold", parsed from the object states) ------------------------------------
SMALL_SIZE, LARGE_SIZE = 0.2, 0.34   # bounding-circle diameters below/above which an object is small/large
NEAR_DISTANCE = 0.3                  # centre distance (fraction of the frame side) that counts as "near"
MAX_GOLD_RELATIONS = 2               # spatial relations per scene graph, to keep scene graphs readable


def _spatial_relation(a: ObjectTrack, b: ObjectTrack, f: int) -> str:
    dx, dy = float(b.x[f] - a.x[f]), float(b.y[f] - a.y[f])
    if np.hypot(dx, dy) < NEAR_DISTANCE:
        return "near"
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def gold_scene_dsg(example: ShapesExample) -> DSG:
    """The example's enriched DSG, read off the rendered object states like a video scene-graph parser.

    Scene graph t keeps the step-II triplets and adds, at the last frame showing step t (tau in
    [t, t+1)), each visible object's colour and size (small/large) attributes and up to
    MAX_GOLD_RELATIONS spatial relations (left of / right of / above / below / near) of the acting
    objects to the others. Used as gold for step-III demonstrations and for scoring imagination.
    """
    frames_of_step: dict[int, int] = {}
    for f, tau in enumerate(example.frame_times):
        frames_of_step[int(np.floor(tau))] = f
    graphs = []
    last = 0
    for sg in example.dsg.graphs:
        f = last = frames_of_step.get(sg.t, last)
        visible = [o for o in example.objects if bool(o.visible[f])]
        attributes = []
        for o in visible:
            attributes.append((o.name, o.colour))
            if o.size[f] < SMALL_SIZE:
                attributes.append((o.name, "small"))
            elif o.size[f] > LARGE_SIZE:
                attributes.append((o.name, "large"))
        actors = list(dict.fromkeys(s for s, _, _ in sg.triplets))
        relations = []
        for name in actors:
            a = next((o for o in visible if o.name == name), None)
            if a is None:
                continue
            for b in visible:
                if b.name != name and len(relations) < MAX_GOLD_RELATIONS:
                    relations.append((name, _spatial_relation(a, b, f), b.name))
        graphs.append(SceneGraph(sg.t, sg.triplets + tuple(relations), tuple(attributes)))
    return DSG(tuple(graphs), example.dsg.duration)
