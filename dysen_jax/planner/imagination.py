"""Dysen step III: step-wise scene imagination with the sliding window context, then global polishing.

Round one enriches the skeleton DSG's scene graphs in time order: the LLM sees the caption, the
previous *enriched* scene, the current skeleton scene and the next skeleton scene (SWC) and answers
the full current scene (add + change; paper appendix A.3). Scene m of every caption is asked in one
concurrent batch, so a batch of captions costs max_m rounds, not sum_m. Without SWC every scene is
asked alone, all in one round. Round two sends the whole enriched DSG once for global polishing.

Every answer is validated against the skeleton (`check_scene`): every object of the scene is kept,
every acting object still acts, names are short, and the scene stays within `max_items` triplets and
`max_items` attributes (so it fits the DSG tensors). Bad answers are re-asked with the error; a scene
still bad keeps its skeleton (counted as kept), a bad polish keeps the step-wise result.
"""

from __future__ import annotations

from typing import Any, Sequence

from dysen_jax.dsg.schema import DSG, SceneGraph
from dysen_jax.planner.llm_client import LLMClient
from dysen_jax.planner.parse import PlanParseError, parse_dsg_lines, parse_scene
from dysen_jax.planner.prompts import (POLISH_REMINDER, SCENE_REMINDER, imagination_messages,
                                       polish_messages)
from dysen_jax.planner.repair import ask_with_repair

MAX_NAME_WORDS = 6  # longer names are sentences, not objects or predicates


def _key(name: str) -> str:
    return " ".join(name.lower().split())


def check_scene(triplets: Sequence[tuple], attributes: Sequence[tuple], skeleton: SceneGraph,
                max_items: int) -> SceneGraph:
    """The answer as scene graph `skeleton.t`, names of known objects spelled as in the skeleton.

    Raises PlanParseError (fed back to the LLM) naming what breaks the DSG rules and how to fix it.
    """
    if len(triplets) > max_items:
        raise PlanParseError(f"{len(triplets)} triplets is more than {max_items}: keep the most visible ones")
    if len(attributes) > max_items:
        raise PlanParseError(f"{len(attributes)} attributes is more than {max_items}: keep the most visible ones")
    canonical = {_key(o): o for o in skeleton.objects}
    fix = lambda name: canonical.get(_key(name), name)  # noqa: E731
    for item in list(triplets) + list(attributes):
        for name in item:
            if name is not None and len(name.split()) > MAX_NAME_WORDS:
                raise PlanParseError(f"{name!r} is too long: names have at most {MAX_NAME_WORDS} words")
    triplets = [(fix(s), p, fix(o) if o is not None else None) for s, p, o in triplets]
    attributes = [(fix(o), a) for o, a in attributes]
    scene = SceneGraph(skeleton.t, tuple(triplets), tuple(attributes))
    missing = [o for o in skeleton.objects if o not in scene.objects]
    if missing:
        raise PlanParseError(f"object(s) {', '.join(missing)} of the current scene are missing: keep every object")
    subjects = {s for s, _, _ in scene.triplets}
    idle = [s for s, _, _ in skeleton.triplets if s not in subjects]
    if idle:
        raise PlanParseError(f"{', '.join(dict.fromkeys(idle))} must stay the subject of an action in this scene")
    return scene


class SceneImaginer:
    """Step III over batches of (caption, skeleton DSG); see the module docstring."""

    def __init__(self, client: LLMClient, selector: Any, num_demonstrations: int = 5, max_repairs: int = 2,
                 sliding_window: bool = True, polish: bool = True, max_items: int = 12,
                 json_mode: bool = False) -> None:
        self.client = client
        self.selector = selector
        self.num_demonstrations = num_demonstrations
        self.max_repairs = max_repairs
        self.sliding_window = sliding_window
        self.polish = polish
        self.max_items = max_items
        self.response_format = {"type": "json_object"} if json_mode else None
        self.json_mode = json_mode

    def _scene_check(self, skeleton: SceneGraph):
        return lambda text: check_scene(*parse_scene(text), skeleton, self.max_items)

    def _dsg_check(self, draft: DSG, skeleton: DSG):
        def check(text: str) -> DSG:
            scenes = parse_dsg_lines(text)
            steps = [sg.t for sg in draft.graphs]
            missing = [t for t in steps if t not in scenes]
            if missing:
                raise PlanParseError(f"time step(s) t={', t='.join(map(str, missing))} are missing: keep every step")
            extra = sorted(set(scenes) - set(steps))
            if extra:
                raise PlanParseError(f"time step(s) t={', t='.join(map(str, extra))} do not exist: "
                                     f"the steps are t={', t='.join(map(str, steps))}")
            graphs = []
            for t in steps:
                try:
                    graphs.append(check_scene(*scenes[t], skeleton.at(t), self.max_items))
                except PlanParseError as err:
                    raise PlanParseError(f"t={t}: {err}") from None
            return DSG(tuple(graphs), draft.duration)
        return check

    def imagine_many(self, captions: Sequence[str], skeletons: Sequence[DSG]) -> list[tuple[DSG, dict[str, int]]]:
        """The enriched DSG of each caption and its counts (scenes by llm/repaired/kept, polish)."""
        shots = [self.selector.select(c, self.num_demonstrations, require_dsg=True) for c in captions]
        scenes: list[list[SceneGraph | None]] = [[None] * len(d.graphs) for d in skeletons]
        counts = [{"scenes": len(d.graphs), "scenes_llm": 0, "scenes_repaired": 0, "scenes_kept": 0,
                   "polished": 0, "polish_kept": 0} for d in skeletons]
        rounds = max(len(d.graphs) for d in skeletons) if self.sliding_window else 1
        for m in range(rounds):
            jobs = [(i, k) for i, d in enumerate(skeletons) for k in range(len(d.graphs))
                    if not self.sliding_window or k == m]
            conversations, checks = [], []
            for i, k in jobs:
                graphs = skeletons[i].graphs
                previous = scenes[i][k - 1] if k > 0 else None
                following = graphs[k + 1] if k + 1 < len(graphs) else None
                conversations.append(imagination_messages(captions[i], previous, graphs[k], following, shots[i],
                                                          self.sliding_window, self.json_mode))
                checks.append(self._scene_check(graphs[k]))
            answers = ask_with_repair(self.client, conversations, checks, self.max_repairs, SCENE_REMINDER,
                                      self.response_format)
            for (i, k), answer in zip(jobs, answers):
                if answer.ok:
                    scenes[i][k] = answer.value
                    counts[i]["scenes_repaired" if answer.repairs else "scenes_llm"] += 1
                else:
                    scenes[i][k] = skeletons[i].graphs[k]
                    counts[i]["scenes_kept"] += 1
        drafts = [DSG(tuple(s), d.duration) for s, d in zip(scenes, skeletons)]
        if not self.polish:
            return list(zip(drafts, counts))
        conversations = [polish_messages(c, d, shots[i], self.json_mode) for i, (c, d) in enumerate(zip(captions, drafts))]
        checks = [self._dsg_check(d, s) for d, s in zip(drafts, skeletons)]
        answers = ask_with_repair(self.client, conversations, checks, self.max_repairs, POLISH_REMINDER,
                                  self.response_format)
        results = []
        for draft, count, answer in zip(drafts, counts, answers):
            count["polished" if answer.ok else "polish_kept"] = 1
            results.append((answer.value if answer.ok else draft, count))
        return results
