"""A visual scene-graph parser for dynamic-shapes videos: pixels -> objects by colour -> events.

The paper's TriRec (eq. 7) needs the triplets a *visual* parser reads off the generated video. On
the synthetic dataset (dysen_jax/data/shapes.py) that parser can be exact, because the renderer is
known:

1. **Objects by colour.** Every pixel is explained as background blended with one palette colour,
   pixel = bg + a (c - bg) (bg: the clip's median colour); the colour with the smallest off-line residual owns the pixel and `a`
   is its alpha (coverage x opacity). A colour whose alpha mass is large enough is an object.
2. **Per-frame states** from alpha-weighted moments: centre (x, y), spread (RMS radius, proportional
   to the size and independent of opacity; minus the pixel box filter's variance), relative opacity
   (mass / spread^2 relative to the frame of largest mass, where the object is big and fully
   opaque, but at least the peak alpha), and an orientation descriptor
   D_k = sum a (z - z0)^k / (mass spread^k), k = 2..5 (z = x + iy): it is invariant to moves, size
   and opacity, and a rotation by theta multiplies D_k by exp(i k theta).
3. **Actions per time slot.** Actions happen on the grid of ACTION_UNITS (a caption's k-th time
   group covers [kU, (k+1)U)); the plan duration fixes which frames show which slot and at which
   progress p (the generator's own `progress`). Per object and slot, every hypothesis (no action,
   a move left/right/up/down by MOVE_DISTANCE, moving toward each other object, jumping by
   JUMP_HEIGHT, growing, shrinking, spinning by 180 degrees, appearing, disappearing) predicts the
   states of the slot's frames (plus the previous slot's last frame, the state at p = 0) up to a
   few free offsets fitted by least squares; the smallest weighted residual wins. Spinning is a
   hypothesis only for shapes whose 180-degree turn shows (shapes.SPIN_SHAPES).

The parser needs the clip's plan duration (the time axis of a generated video is the plan it was
conditioned on) and, optionally, the object name of each colour (the prompt names the objects);
a colour missing from `names` is named by a nearest-template shape classifier. It never sees which
objects act or how. Ground-truth clips parse exactly (tests/test_shapes_parser.py; 256 / 256 clips
of the 32 px held-out split, benchmarks/dynamic_shapes_eval.py) as long as a slot spans >= 2 frames
(F >= 2 * duration / ACTION_UNITS); it can err when shapes overlap, when a "moving toward" happens
to look exactly like an axis move of MOVE_DISTANCE, and on tiny (16 px) frames with shrunk shapes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import numpy as np

from dysen_jax.data import shapes
from dysen_jax.dsg.build import plan_from_events
from dysen_jax.dsg.schema import Event, Plan
from dysen_jax.planner.rules import ACTION_UNITS, MOVE_TOWARD

NONE = "none"
DESCRIPTOR_ORDERS = (2, 3, 4, 5)
MIN_ALPHA = 0.02          # weaker blends are treated as background
MAX_RESIDUAL = 48.0       # RGB distance off the bg->colour line beyond which a pixel belongs to no colour
MIN_MASS_PIXELS = 1.0     # alpha mass (in pixels) below which a colour is absent from a frame
PIXEL_VARIANCE = 2.0 / 12.0  # of a pixel-wide box filter, both axes (pixels^2)
MIN_FEATURE_OPACITY = 0.25  # geometry is read only where the object is at least this opaque
# Residual scales, about the measurement noise on rendered clips: an error of this size costs 1
# (positions in fractions of the frame side).
POSITION_SCALE = 0.005
LOG_SIZE_SCALE = 0.02
OPACITY_SCALE = 0.05
GAP_SCALE = 0.01          # "moving toward" ends TOWARD_GAP from touching its target, this precisely
# Pixelisation noise of D_k for an object of RMS radius r pixels: DESCRIPTOR_NOISE[k] / r^2 (+ 5 % of |D|),
# measured on randomly placed and rotated shapes (circles have D = 0 up to this noise).
DESCRIPTOR_NOISE = np.array([0.15, 0.25, 0.35, 0.55])
DESCRIPTOR_RELATIVE_NOISE = 0.05
TOWARD_TRAVEL = (0.75 * shapes.MIN_TOWARD_TRAVEL, 1.0)
# Tie-breaking costs: simpler explanations win equal fits.
PENALTY = {NONE: 0.0, MOVE_TOWARD: 2.0}
DEFAULT_PENALTY = 1.0


@dataclasses.dataclass(frozen=True)
class ObjectStates:
    """Per-frame measurements of one colour; NaN where not measurable. Positions/spread: fractions."""

    colour: str
    resolution: int         # frame side in pixels
    mass: np.ndarray        # [F] alpha mass in pixels
    x: np.ndarray           # [F]
    y: np.ndarray           # [F]
    spread: np.ndarray      # [F] RMS distance from the centre
    opacity: np.ndarray     # [F] relative opacity, 0 where absent
    descriptor: np.ndarray  # [F, len(DESCRIPTOR_ORDERS)] complex

    def geometric(self) -> np.ndarray:
        """Frames where position, spread and descriptor are reliable."""
        return (self.opacity >= MIN_FEATURE_OPACITY) & np.isfinite(self.x)


@dataclasses.dataclass(frozen=True)
class ParsedVideo:
    """What the parser read: objects (colour -> name), their states, the events and the plan."""

    names: dict[str, str]
    states: dict[str, ObjectStates]
    events: tuple[Event, ...]
    duration: int

    @property
    def plan(self) -> Plan | None:
        return plan_from_events(self.events) if self.events else None

    @property
    def triplets(self) -> list[tuple[str, str, str | None]]:
        return [e.triplet for e in self.events]


# --- pixels -> alpha per colour -------------------------------------------------------------------------
def colour_alphas(video: np.ndarray, colours: Mapping[str, Sequence[int]] = shapes.COLOURS,
                  background: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """{colour: alpha [F, H, W] in [0, 1]}: each pixel goes to the colour that explains it best.

    background None: the per-channel median of the clip (the background covers most pixels), so a
    generated clip whose background drifted from shapes.BACKGROUND still parses. Alphas below
    3 sigma of the clip's pixel noise (MAD around the background) or MIN_ALPHA count as background.
    """
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be uint8 [F, H, W, 3], got shape {video.shape}")
    if background is None:
        background = np.median(video.reshape(-1, 3), axis=0)
    diff = video.astype(np.float32) - np.asarray(background, np.float32)
    names = list(colours)
    vectors = np.asarray([colours[c] for c in names], np.float32) - np.asarray(background, np.float32)  # [C, 3]
    a = np.einsum("fhwk,ck->fhwc", diff, vectors) / np.sum(vectors * vectors, axis=-1)
    residual = np.linalg.norm(diff[..., None, :] - a[..., None] * vectors, axis=-1)  # [F, H, W, C]
    # Pixel noise (robust spread of the background around its median): blends weaker than 3 sigma are noise.
    noise = float(np.linalg.norm(1.4826 * np.median(np.abs(diff.reshape(-1, 3)), axis=0)))
    min_alpha = np.maximum(MIN_ALPHA, 3.0 * noise / np.linalg.norm(vectors, axis=-1))
    residual = np.where(a > min_alpha, residual, np.inf)
    best = np.argmin(residual, axis=-1)
    ok = np.take_along_axis(residual, best[..., None], -1)[..., 0] < MAX_RESIDUAL
    alpha = np.clip(a, 0.0, 1.0)
    return {c: np.where(ok & (best == i), alpha[..., i], 0.0).astype(np.float64) for i, c in enumerate(names)}


def largest_component(alpha: np.ndarray) -> np.ndarray:
    """alpha [H, W] kept only on its 8-connected blob of largest mass (drops stray blended pixels)."""
    from scipy import ndimage

    labels, count = ndimage.label(alpha > 0, structure=np.ones((3, 3)))
    if count <= 1:
        return alpha
    masses = ndimage.sum(alpha, labels, index=np.arange(1, count + 1))
    return np.where(labels == 1 + int(np.argmax(masses)), alpha, 0.0)


def measure(colour: str, alpha: np.ndarray) -> ObjectStates:
    """Per-frame moments of one colour's alpha [F, H, W] (see the module docstring)."""
    alpha = np.stack([largest_component(a) for a in alpha])
    frames, h, w = alpha.shape
    side = float(max(h, w))
    ys, xs = np.mgrid[0:h, 0:w]
    xs, ys = (xs + 0.5) / side, (ys + 0.5) / side
    mass = alpha.sum(axis=(1, 2))
    present = mass >= MIN_MASS_PIXELS
    safe = np.where(present, mass, 1.0)
    x = (alpha * xs).sum(axis=(1, 2)) / safe
    y = (alpha * ys).sum(axis=(1, 2)) / safe
    z = (xs[None] - x[:, None, None]) + 1j * (ys[None] - y[:, None, None])
    # Pixel coverage is the shape blurred by a 1-pixel box: its variance 1/12 per axis adds to the shape's.
    variance = (alpha * np.abs(z) ** 2).sum(axis=(1, 2)) / safe - PIXEL_VARIANCE / side ** 2
    spread = np.sqrt(np.maximum(variance, 0.25 * PIXEL_VARIANCE / side ** 2))
    spread_safe = np.where(spread > 0, spread, 1.0)
    descriptor = np.stack([(alpha * z ** k).sum(axis=(1, 2)) / (safe * spread_safe ** k) for k in DESCRIPTOR_ORDERS], -1)
    # Opacity: mass / spread^2 relative to the frame of largest mass (the object big and opaque, where
    # that ratio is most accurate), at least the peak alpha (coverage <= 1), at most 1.
    density = np.where(present, mass / (spread_safe * side) ** 2, 0.0)
    reference = density[int(np.argmax(mass))]
    peak = alpha.max(axis=(1, 2))
    opacity = np.clip(np.maximum(density / reference if reference > 0 else density, peak), 0.0, 1.0)
    nan = np.where(present, 1.0, np.nan)
    return ObjectStates(colour, int(side), mass, x * nan, y * nan, spread * nan, np.where(present, opacity, 0.0),
                        descriptor * nan[:, None])


# --- shape names ------------------------------------------------------------------------------------------
def _shape_features(states: ObjectStates, frame: int) -> np.ndarray:
    """Rotation/scale-invariant shape features: compactness and |D_k|."""
    compact = states.mass[frame] / states.opacity[frame] / (states.spread[frame] * 1.0) ** 2
    return np.concatenate([[compact], np.abs(states.descriptor[frame])])


@functools.lru_cache(maxsize=4)
def _shape_templates(resolution: int) -> dict[str, np.ndarray]:
    """Features of every shape drawn alone at the dataset's mean size, at `resolution`."""
    out = {}
    for shape in shapes.SHAPES:
        frame = np.empty((1, resolution, resolution, 3), np.float32)
        frame[:] = np.asarray(shapes.BACKGROUND, np.float32)
        size = np.mean(shapes.SIZE_RANGE) * resolution
        shapes._draw(frame[0], shape, shapes.COLOURS["red"], resolution / 2 + 0.3, resolution / 2 + 0.2, size / 2, 0.0, 1.0)
        video = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        states = measure("red", colour_alphas(video)["red"])
        out[shape] = _features_scaled(states, 0, resolution)
    return out


def _features_scaled(states: ObjectStates, frame: int, resolution: int) -> np.ndarray:
    f = _shape_features(states, frame)
    f[0] = f[0] / resolution ** 2   # compactness in pixels^2 / fraction^2 -> dimensionless
    return f


def classify_shape(states: ObjectStates, resolution: int) -> str:
    """The shape whose template features are nearest to the object's most opaque frame's."""
    frame = int(np.argmax(np.where(np.isfinite(states.spread), states.opacity, -1.0)))
    features = _features_scaled(states, frame, resolution)
    templates = _shape_templates(resolution)
    scale = np.array([2.0, 0.2, 0.2, 0.2, 0.2])
    return min(templates, key=lambda s: float(np.sum(((templates[s] - features) / scale) ** 2)))


# --- hypotheses per slot -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Slot:
    frames: np.ndarray      # frame indices, the first one at p = 0 when the previous slot exists
    p: np.ndarray           # progress of each frame in the slot's action


def _slots(duration: int, num_frames: int) -> list[_Slot]:
    taus = shapes.frame_times(duration, num_frames).astype(np.float64)
    out = []
    for start in range(0, duration, ACTION_UNITS):
        end = start + ACTION_UNITS
        inside = np.flatnonzero((taus >= start) & (taus < end))
        if inside.size == 0:
            continue
        p = shapes.progress(start, end, duration, num_frames)[inside]
        if inside[0] > 0:
            inside, p = np.concatenate([[inside[0] - 1], inside]), np.concatenate([[0.0], p])
        out.append(_Slot(inside, p))
    return out


def _offset_fit(observed: np.ndarray, predicted_shape: np.ndarray) -> float:
    """Sum of squares after removing the best constant offset."""
    r = observed - predicted_shape
    return float(np.sum((r - r.mean()) ** 2)) if r.size else 0.0


def _position_residual(xy: np.ndarray, p: np.ndarray, motion: np.ndarray) -> float:
    """xy [n, 2] observed; motion [n, 2] the hypothesis' displacement at each p (up to an offset)."""
    return (_offset_fit(xy[:, 0], motion[:, 0]) + _offset_fit(xy[:, 1], motion[:, 1])) / POSITION_SCALE ** 2


def _toward_residual(xy: np.ndarray, p: np.ndarray, target: np.ndarray, radii: float) -> float:
    """Straight motion toward `target` by a fitted travel, linear in p, ending TOWARD_GAP from
    touching it (`radii`: the two bounding-circle radii, summed)."""
    centre = xy.mean(axis=0)
    u = target - centre
    norm = float(np.linalg.norm(u))
    if norm < 1e-6 or xy.shape[0] < 2:
        return np.inf
    u = u / norm
    pc = p - p.mean()
    travel = float(np.sum(pc * ((xy - centre) @ u)) / max(np.sum(pc * pc), 1e-12))
    travel = float(np.clip(travel, *TOWARD_TRAVEL))
    motion = travel * p[:, None] * u[None]
    end = np.mean(xy - motion, axis=0) + travel * u
    gap = float(np.linalg.norm(target - end)) - radii
    return _position_residual(xy, p, motion) + ((gap - shapes.TOWARD_GAP) / GAP_SCALE) ** 2


def _descriptor_residual(d: np.ndarray, p: np.ndarray, radius_px: np.ndarray, turns: float) -> float:
    """Chi-square of d [n, K] (complex) against a rotation by turns*pi*p (0: constant), with the
    pixelisation noise of an object of RMS radius radius_px [n]."""
    if d.shape[0] < 2:
        return 0.0
    k = np.asarray(DESCRIPTOR_ORDERS, np.float64)
    phase = np.exp(1j * turns * np.pi * p[:, None] * k[None])
    ref = np.mean(d / phase, axis=0)
    err = np.abs(d - ref[None] * phase) ** 2
    noise = DESCRIPTOR_NOISE[None] / np.maximum(radius_px, 0.5)[:, None] ** 2
    var = noise ** 2 + (DESCRIPTOR_RELATIVE_NOISE * np.abs(ref))[None] ** 2
    return float(np.sum(err / var))


def _slot_hypotheses(states: dict[str, ObjectStates], shape_of: Mapping[str, str], colour: str,
                     slot: _Slot) -> dict[tuple[str, str | None], float]:
    """Weighted residual of every (predicate, target colour) hypothesis for one object in one slot."""
    s = states[colour]
    f, p = slot.frames, slot.p
    opacity = s.opacity[f]
    geo = s.geometric()[f]
    gf, gp = f[geo], p[geo]
    xy = np.stack([s.x[gf], s.y[gf]], -1)
    log_size = np.log(s.spread[gf])
    desc = s.descriptor[gf]
    radius_px = s.spread[gf] * s.resolution
    zeros = np.zeros((gp.size, 2))

    def total(pred: str, motion=None, size_shape=None, opacity_model=None, turns=0.0, pos=None) -> float:
        r = pos if pos is not None else _position_residual(xy, gp, zeros if motion is None else motion)
        r += _offset_fit(log_size, np.zeros_like(gp) if size_shape is None else size_shape) / LOG_SIZE_SCALE ** 2
        expected = np.ones_like(p) if opacity_model is None else opacity_model
        r += float(np.sum((opacity - expected) ** 2)) / OPACITY_SCALE ** 2
        r += _descriptor_residual(desc, gp, radius_px, turns)
        return r + PENALTY.get(pred, DEFAULT_PENALTY)

    out: dict[tuple[str, str | None], float] = {(NONE, None): total(NONE)}
    for name, (vx, vy) in shapes.MOVES.items():
        out[(name, None)] = total(name, motion=shapes.MOVE_DISTANCE * gp[:, None] * np.array([vx, vy])[None])
    jump = np.stack([np.zeros_like(gp), -shapes.JUMP_HEIGHT * np.sin(np.pi * gp)], -1)
    out[("jumping", None)] = total("jumping", motion=jump)
    out[("growing", None)] = total("growing", size_shape=np.log1p((shapes.GROW_FACTOR - 1.0) * gp))
    out[("shrinking", None)] = total("shrinking", size_shape=np.log1p((shapes.SHRINK_FACTOR - 1.0) * gp))
    if shape_of[colour] in shapes.SPIN_SHAPES:   # a spinning circle or square looks the same: not observable
        out[("spinning", None)] = min(total("spinning", turns=t) for t in (1.0, -1.0))
    out[("appearing", None)] = total("appearing", opacity_model=p)
    out[("disappearing", None)] = total("disappearing", opacity_model=1.0 - p)
    for other, o in states.items():
        if other == colour:
            continue
        og = o.geometric()[f]
        if not og.any() or gp.size < 2:
            continue
        target = np.array([np.mean(o.x[f][og]), np.mean(o.y[f][og])])
        radii = (s.spread[gf][-1] / spread_ratio(shape_of[colour], s.resolution)
                 + np.mean(o.spread[f][og]) / spread_ratio(shape_of[other], o.resolution))
        out[(MOVE_TOWARD, other)] = total(MOVE_TOWARD, pos=_toward_residual(xy, gp, target, radii))
    return out


def slot_residuals(video: np.ndarray, duration: int, names: Mapping[str, str] | None = None
                   ) -> list[dict[str, dict[tuple[str, str | None], float]]]:
    """Per slot, per colour, the residual of every hypothesis (for inspection and tuning)."""
    states, named = _objects(video, names, 0.005)
    shape_of = {c: shape_from_name(n) for c, n in named.items()}
    return [{c: _slot_hypotheses(states, shape_of, c, slot) for c in states} for slot in _slots(duration, len(video))]


def shape_from_name(name: str) -> str:
    """The shape word of an object name ("red circle" -> "circle"); "circle" when none is known."""
    return next((w for w in reversed(name.split()) if w in shapes.SHAPES), "circle")


@functools.lru_cache(maxsize=64)
def spread_ratio(shape: str, resolution: int) -> float:
    """RMS radius / bounding-circle radius of `shape` as measured at `resolution` (mean size)."""
    radius = np.mean(shapes.SIZE_RANGE) * resolution / 2
    frame = np.empty((1, resolution, resolution, 3), np.float32)
    frame[:] = np.asarray(shapes.BACKGROUND, np.float32)
    shapes._draw(frame[0], shape, shapes.COLOURS["red"], resolution / 2 + 0.3, resolution / 2 + 0.2, radius, 0.0, 1.0)
    states = measure("red", colour_alphas(np.clip(np.rint(frame), 0, 255).astype(np.uint8))["red"])
    return float(states.spread[0] * resolution / radius)


def detect_objects(video: np.ndarray, min_object_mass: float = 0.005) -> dict[str, ObjectStates]:
    """{colour: its per-frame states} for every palette colour that is an object of uint8 clip [F, H, W, 3]:
    its largest per-frame alpha mass reaches `min_object_mass` of the frame area (see parse_video)."""
    states = {c: measure(c, a) for c, a in colour_alphas(video).items()}
    return {c: s for c, s in states.items() if s.mass.max() >= min_object_mass * video.shape[1] * video.shape[2]}


def _objects(video: np.ndarray, names: Mapping[str, str] | None, min_object_mass: float
             ) -> tuple[dict[str, ObjectStates], dict[str, str]]:
    states = detect_objects(video, min_object_mass)
    resolution = max(video.shape[1:3])
    names = dict(names or {})
    return states, {c: names.get(c) or f"{c} {classify_shape(s, resolution)}" for c, s in states.items()}


# --- the parser ---------------------------------------------------------------------------------------------
def parse_video(video: np.ndarray, duration: int, names: Mapping[str, str] | None = None,
                min_object_mass: float = 0.005) -> ParsedVideo:
    """Events (agent, predicate, target, slot start, slot end) read off a dynamic-shapes clip.

    video: uint8 [F, H, W, 3]; duration: the plan's duration in units of v (the time axis of the
    clip, frame f at f * duration / F); names: colour -> object name ("red" -> "red circle"),
    colours missing from it are named "<colour> <classified shape>". A colour is an object when its
    largest per-frame alpha mass reaches `min_object_mass` of the frame area (the smallest shape of
    the dataset covers 1.6 %; blended edges of two touching shapes can pass for a third colour).
    """
    video = np.asarray(video)
    if video.dtype != np.uint8:
        raise ValueError(f"video must be uint8 [F, H, W, 3] (use data.video_io.to_uint8), got {video.dtype}")
    if int(duration) < 1:
        raise ValueError(f"duration={duration}: pass the plan's duration in units of v (max event end), >= 1")
    duration = int(duration)
    states, named = _objects(video, names, min_object_mass)
    shape_of = {c: shape_from_name(n) for c, n in named.items()}
    events = []
    for k, slot in enumerate(_slots(duration, len(video))):
        start = int(round(shapes.frame_times(duration, len(video))[slot.frames[-1]] // ACTION_UNITS)) * ACTION_UNITS
        for colour in states:
            if not np.any(states[colour].opacity[slot.frames] > 0):
                continue   # absent for the whole slot: before appearing or after disappearing
            scores = _slot_hypotheses(states, shape_of, colour, slot)
            (predicate, target), _ = min(scores.items(), key=lambda kv: kv[1])
            if predicate != NONE:
                events.append(Event(named[colour], predicate, named[target] if target else None,
                                    start, start + ACTION_UNITS))
    return ParsedVideo(named, states, tuple(events), duration)


def names_from_events(events: Sequence[Event]) -> dict[str, str]:
    """colour -> object name from plan events whose names start with a palette colour ("red circle")."""
    out: dict[str, str] = {}
    for e in events:
        for name in (e.agent, e.target):
            if name:
                words = name.lower().replace("the ", "").split()
                if words and words[0] in shapes.COLOURS:
                    out.setdefault(words[0], " ".join(words))
    return out
