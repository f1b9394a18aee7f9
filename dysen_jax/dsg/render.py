"""A PNG picture of a dynamic scene graph over time, optionally with the video frames under it.

One panel per scene graph (time labels [t, t_next)): subject objects as boxes on the left,
relation nodes in the middle, target-only objects on the right, attributes as small nodes under
their object, arrows subject -> relation -> object and object -> attribute. With `frames`, a row of
thumbnails sits under the panels, each frame under the scene graph it shows; long videos (many frames
per scene graph) show at most `max_thumbnails` evenly spaced frames per panel, captioned with the frame
ranges and, with `clip_frames` (VidRD long videos), the clips they belong to.
"""

from __future__ import annotations

import textwrap

import numpy as np

from dysen_jax.dsg.schema import DSG, SceneGraph

_OBJECT_STYLE = dict(boxstyle="round,pad=0.3", fc="#dbe9f6", ec="#2b6ca3", lw=1.2)
_RELATION_STYLE = dict(boxstyle="round4,pad=0.3", fc="#fde3c8", ec="#d2691e", lw=1.2)
_ATTRIBUTE_STYLE = dict(boxstyle="round,pad=0.2", fc="#e3f4e1", ec="#3c8d40", lw=1.0)


def _label(text: str, width: int = 9) -> str:
    return "\n".join(textwrap.wrap(text, width, break_long_words=False)) or text


def _layout(graph: SceneGraph) -> tuple[dict[str, tuple[float, float]], list[tuple[float, float]]]:
    """Positions (axes fraction) of object nodes and of one relation node per triplet."""
    subjects = list(dict.fromkeys(s for s, _, _ in graph.triplets))
    others = [o for o in graph.objects if o not in subjects]
    targets_only = [o for o in others if any(o == t for _, _, t in graph.triplets)]
    holders_only = [o for o in others if o not in targets_only]
    left = subjects + holders_only

    positions = {**dict(zip(left, _column(len(left), 0.17))),
                 **dict(zip(targets_only, _column(len(targets_only), 0.83)))}
    return positions, _column(len(graph.triplets), 0.5)


def _column(n: int, x: float) -> list[tuple[float, float]]:
    """n positions stacked vertically around the panel centre."""
    gap = min(0.3, 0.8 / max(n, 1))
    return [(x, 0.55 + gap * ((n - 1) / 2 - i)) for i in range(n)]


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], colour: str, rad: float = 0.0) -> None:
    ax.annotate("", xy=end, xytext=start, xycoords="axes fraction", textcoords="axes fraction",
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.1, shrinkA=14, shrinkB=14,
                                connectionstyle=f"arc3,rad={rad}"))


def _draw_graph(ax, graph: SceneGraph, fontsize: float) -> None:
    ax.set_axis_off()
    if not graph.triplets and not graph.attributes:
        ax.text(0.5, 0.5, "(empty scene)", ha="center", va="center", fontsize=fontsize, color="0.5",
                transform=ax.transAxes)
        return
    positions, relations = _layout(graph)
    for (s, p, o), xy in zip(graph.triplets, relations):
        _arrow(ax, positions[s], xy, "#d2691e")
        if o is not None:
            rad = 0.0 if positions[o][0] > xy[0] else -0.4
            _arrow(ax, xy, positions[o], "#d2691e", rad)
        ax.text(*xy, _label(p), ha="center", va="center", fontsize=fontsize, bbox=_RELATION_STYLE,
                transform=ax.transAxes, style="italic", zorder=3)
    for name, xy in positions.items():
        ax.text(*xy, _label(name), ha="center", va="center", fontsize=fontsize, bbox=_OBJECT_STYLE,
                transform=ax.transAxes, weight="bold", zorder=3)
    stacked: dict[str, int] = {}
    for holder, attribute in graph.attributes:
        k = stacked.get(holder, 0)
        stacked[holder] = k + 1
        hx, hy = positions[holder]
        xy = (max(0.08, hx - 0.08) + k * 0.16, hy - 0.17)
        _arrow(ax, (hx, hy), xy, "#3c8d40")
        ax.text(*xy, _label(attribute, 9), ha="center", va="center", fontsize=fontsize * 0.85,
                bbox=_ATTRIBUTE_STYLE, transform=ax.transAxes, zorder=3)


def _time_label(dsg: DSG, m: int) -> str:
    start = dsg.graphs[m].t
    end = dsg.graphs[m + 1].t if m + 1 < len(dsg.graphs) else dsg.duration
    return f"SG{m + 1}   t = {start}" if end == start + 1 else f"SG{m + 1}   t = {start}-{end - 1}"


def _strip(frames: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Frames `indices` side by side with a 2-pixel white gap (uint8 [H, W', 3])."""
    h = frames.shape[1]
    parts = []
    for k in indices:
        parts += [frames[k], np.full((h, 2, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def _ranges(indices: np.ndarray) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    parts, start = [], None
    for i, k in enumerate(indices):
        start = k if start is None else start
        if i + 1 == len(indices) or indices[i + 1] != k + 1:
            parts.append(str(start) if start == k else f"{start}-{k}")
            start = None
    return ", ".join(parts)


def _thumbnail_caption(shown: np.ndarray, clip_frames: int | None) -> str:
    caption = "frames " + _ranges([int(k) for k in shown])
    if clip_frames:
        clips = sorted({int(k) // clip_frames + 1 for k in shown})
        caption += "\n" + ("clip " if len(clips) == 1 else "clips ") + _ranges(clips)
    return caption


def _evenly(indices: np.ndarray, at_most: int) -> np.ndarray:
    if len(indices) <= at_most:
        return indices
    return indices[np.unique(np.round(np.linspace(0, len(indices) - 1, at_most)).astype(int))]


def render_dsg(dsg: DSG, path: str, frames: np.ndarray | None = None,
               frame_steps: np.ndarray | None = None, title: str | None = None,
               clip_frames: int | None = None, max_thumbnails: int = 6) -> None:
    """Writes a PNG of `dsg` to `path`; `frames` (uint8 [F, H, W, 3]) adds thumbnails under it.

    `frame_steps[f]` is the index (into dsg.graphs) of the scene graph frame f shows; by default
    frames are spread evenly over the plan as in `dysen_jax.dsg.tensorize.frame_steps`. Each panel
    shows at most `max_thumbnails` of its frames (evenly spaced); `clip_frames` = N names the clips
    of a long video (frame f is in clip f // N + 1).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(dsg.graphs)
    if frames is not None:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            frames = np.clip(np.rint(frames * 255.0 if frames.max() <= 1.0 else frames), 0, 255).astype(np.uint8)
        if frame_steps is None:
            from dysen_jax.dsg.tensorize import frame_steps as default_steps
            frame_steps = default_steps(dsg, len(frames))
        frame_steps = np.asarray(frame_steps)
    max_objects = max((len(g.objects) + len(g.triplets) for g in dsg.graphs), default=1)
    panel_w, graph_h = 2.6, 1.1 + 0.45 * max(max_objects / 2, 2)
    rows = [graph_h] + ([1.3 + (0.2 if clip_frames else 0.0)] if frames is not None else [])
    fig, axes = plt.subplots(len(rows), n, figsize=(panel_w * n, sum(rows) + 0.4),
                             gridspec_kw=dict(height_ratios=rows), squeeze=False)
    fontsize = 7.0
    for m, graph in enumerate(dsg.graphs):
        ax = axes[0, m]
        _draw_graph(ax, graph, fontsize)
        ax.set_title(_time_label(dsg, m), fontsize=9, weight="bold")
        ax.add_patch(plt.Rectangle((0.01, 0.01), 0.98, 0.98, transform=ax.transAxes, fill=False,
                                   ec="0.75", lw=0.8))
        if frames is not None:
            fax = axes[1, m]
            fax.set_axis_off()
            shown = np.flatnonzero(frame_steps == m)
            if len(shown):
                fax.imshow(_strip(frames, _evenly(shown, max_thumbnails)), interpolation="nearest")
                fax.set_title(_thumbnail_caption(shown, clip_frames), fontsize=7)
            else:
                fax.text(0.5, 0.5, "(no frame)", ha="center", va="center", fontsize=7, color="0.5",
                         transform=fax.transAxes)
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, int(13 * panel_w * n))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
