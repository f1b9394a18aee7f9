"""DSG -> padded arrays with stable node slots across time (what the RGTrm consumes).

Every object, relation (one node per distinct triplet) and attribute (one node per distinct
(object, attribute) pair) of the whole DSG gets one slot, in order of first appearance; the slot
never changes over time, only whether it is present at a step. Because a relation node always links
the same subject and object, edges are static and presence is a per-step mask:

    node_words [N, W] int32   label word ids (WordVocab; unseen words hash to stable buckets)
    node_type  [N]    int32   NODE_PAD / NODE_OBJECT / NODE_ATTRIBUTE / NODE_RELATION
    edge_type  [N, N] int32   edge_type[i, j] = how node i sees neighbour j (EDGE_*; 0 = not adjacent)
    node_mask  [M, N] bool    node present in scene graph m
    step_mask  [M]    bool    scene graph m exists (consecutive identical graphs are merged first)
    step_time  [M]    int32   start time t of scene graph m (in units of v)
    frame_step [F]    int32   index m of the scene graph each video frame shows (aligned by time)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dysen_jax.dsg.schema import DSG, DSGError, SceneGraph
from dysen_jax.dsg.vocab import WordVocab

NODE_PAD, NODE_OBJECT, NODE_ATTRIBUTE, NODE_RELATION = 0, 1, 2, 3
NUM_NODE_TYPES = 4
(EDGE_NONE, EDGE_SELF, EDGE_REL_TO_SUBJECT, EDGE_SUBJECT_TO_REL, EDGE_REL_TO_OBJECT,
 EDGE_OBJECT_TO_REL, EDGE_ATTR_TO_OBJECT, EDGE_OBJECT_TO_ATTR) = range(8)
NUM_EDGE_TYPES = 8

FEATURE_KEYS = ("node_words", "node_type", "edge_type", "node_mask", "step_mask", "step_time", "frame_step")


@dataclasses.dataclass(frozen=True)
class DSGShape:
    """Padded sizes: M scene graphs, N node slots, W words per label, F video frames."""

    max_steps: int
    max_nodes: int
    max_label_words: int
    num_frames: int

    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        m, n, w, f = self.max_steps, self.max_nodes, self.max_label_words, self.num_frames
        return {"node_words": (n, w), "node_type": (n,), "edge_type": (n, n), "node_mask": (m, n),
                "step_mask": (m,), "step_time": (m,), "frame_step": (f,)}

    def array_dtypes(self) -> dict[str, type]:
        return {k: (np.bool_ if k.endswith("_mask") else np.int32) for k in FEATURE_KEYS}


Slot = tuple[int, tuple]  # (node type, key): key is (name,), (s, p, o) or (obj, attr)


def node_slots(dsg: DSG) -> list[Slot]:
    """Stable slot table: objects, then relations, then attributes, each by first appearance."""
    objects, relations, attributes = [], [], []
    for g in dsg.graphs:
        objects.extend((o,) for o in g.objects)
        relations.extend(g.triplets)
        attributes.extend(g.attributes)
    return ([(NODE_OBJECT, k) for k in dict.fromkeys(objects)]
            + [(NODE_RELATION, k) for k in dict.fromkeys(relations)]
            + [(NODE_ATTRIBUTE, k) for k in dict.fromkeys(attributes)])


def frame_steps(dsg: DSG, num_frames: int) -> np.ndarray:
    """Scene-graph index shown by each of `num_frames` frames spread evenly over the plan."""
    taus = (np.arange(num_frames) * dsg.duration) // num_frames
    return np.asarray([dsg.step_index(int(t)) for t in taus], np.int32)


def tensorize(dsg: DSG, vocab: WordVocab, shape: DSGShape) -> dict[str, np.ndarray]:
    """Encodes `dsg` (merged first) into the fixed-shape arrays of the module docstring."""
    dsg = dsg.merged()
    if len(dsg) > shape.max_steps:
        raise DSGError(f"the DSG has {len(dsg)} distinct scene graphs but max_steps={shape.max_steps}: "
                       "raise config.dsg.max_steps or plan fewer events")
    slots = node_slots(dsg)
    if len(slots) > shape.max_nodes:
        raise DSGError(f"the DSG needs {len(slots)} node slots (objects + relations + attributes) but "
                       f"max_nodes={shape.max_nodes}: raise config.dsg.max_nodes or plan a smaller scene")
    arrays = {k: np.zeros(s, shape.array_dtypes()[k]) for k, s in shape.array_shapes().items()}
    index = {slot: i for i, slot in enumerate(slots)}
    obj = lambda name: index[(NODE_OBJECT, (name,))]
    for i, (kind, key) in enumerate(slots):
        label = key[0] if kind == NODE_OBJECT else key[1]
        arrays["node_words"][i] = vocab.encode(label, shape.max_label_words)
        arrays["node_type"][i] = kind
        arrays["edge_type"][i, i] = EDGE_SELF
        if kind == NODE_RELATION:
            s, _, o = key
            arrays["edge_type"][i, obj(s)] = EDGE_REL_TO_SUBJECT
            arrays["edge_type"][obj(s), i] = EDGE_SUBJECT_TO_REL
            if o is not None:
                arrays["edge_type"][i, obj(o)] = EDGE_REL_TO_OBJECT
                arrays["edge_type"][obj(o), i] = EDGE_OBJECT_TO_REL
        elif kind == NODE_ATTRIBUTE:
            arrays["edge_type"][i, obj(key[0])] = EDGE_ATTR_TO_OBJECT
            arrays["edge_type"][obj(key[0]), i] = EDGE_OBJECT_TO_ATTR
    for m, g in enumerate(dsg.graphs):
        arrays["step_mask"][m] = True
        arrays["step_time"][m] = g.t
        present = [(NODE_OBJECT, (o,)) for o in g.objects]
        present += [(NODE_RELATION, t) for t in g.triplets]
        present += [(NODE_ATTRIBUTE, a) for a in g.attributes]
        for slot in present:
            arrays["node_mask"][m, index[slot]] = True
    arrays["frame_step"][:] = frame_steps(dsg, shape.num_frames)
    return arrays


def detensorize(arrays: dict[str, np.ndarray], slots: list[Slot], duration: int) -> DSG:
    """Inverse of `tensorize` given its slot table: rebuilds the merged DSG from masks and edges."""
    edge = arrays["edge_type"]
    graphs = []
    for m in range(int(np.sum(arrays["step_mask"]))):
        triplets, attributes = [], []
        for i in np.flatnonzero(arrays["node_mask"][m]):
            kind, key = slots[i]
            if kind == NODE_RELATION:
                subject = [slots[j][1][0] for j in np.flatnonzero(edge[i] == EDGE_REL_TO_SUBJECT)]
                obj = [slots[j][1][0] for j in np.flatnonzero(edge[i] == EDGE_REL_TO_OBJECT)]
                triplets.append((subject[0], key[1], obj[0] if obj else None))
            elif kind == NODE_ATTRIBUTE:
                holder = [slots[j][1][0] for j in np.flatnonzero(edge[i] == EDGE_ATTR_TO_OBJECT)]
                attributes.append((holder[0], key[1]))
        graphs.append(SceneGraph(int(arrays["step_time"][m]), tuple(triplets), tuple(attributes)))
    return DSG(tuple(graphs), duration)
