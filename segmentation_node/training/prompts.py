"""The prompt mix: what a training image is asked, and what the right answer is.

Detector (stage 1) queries, each with its target instances:
- the ontology's class prompts (what the cell prompts at run time), sometimes a synonym instead;
- attribute phrasing ("defective metal disc") -> only the instances with that attribute;
- visual exemplars: an instance's box as a geometric prompt ("find all like this"), sometimes
  jittered like a sloppy operator click;
- negatives whose target is empty: classes absent from the image, and ambiguous attribute
  prompts no instance matches. Only on exhaustively labelled images, where absence is real.

Tracker (stage 2) conditioning: the GT mask (as run-time keyframes hand over detector masks),
its (jittered) box, or clicks inside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from segmentation_node.perception.ontology import Ontology
from segmentation_node.training.data import AnnotatedObject, mask_box

# sam3's text for a prompt that is geometry only (see Sam3Processor.add_geometric_prompt).
GEOMETRY_ONLY_TEXT = "visual"
# SAM point labels: a positive click, and a box given as its two corners.
POSITIVE_CLICK = 1
BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2, 3


@dataclass(frozen=True)
class PromptMix:
    synonym_rate: float = 0.2            # a class query uses a synonym instead of a prompt
    exemplar_rate: float = 0.25          # per present class: add a box exemplar query
    noisy_box_rate: float = 0.5          # of exemplar and tracker boxes: jitter them
    box_jitter: float = 0.15             # max corner shift, of the box side
    negatives_per_image: int = 2         # absent-class queries
    ambiguous_rate: float = 0.3          # per present pickable class: an unmatched attribute query
    tracker_mask_rate: float = 0.5       # tracker conditioning: GT mask, else box / clicks half each
    max_clicks: int = 3


@dataclass(frozen=True)
class Query:
    text: str
    targets: tuple[int, ...]  # indices of the image's objects that answer it; empty: negative
    kind: str                 # class, synonym, attribute, exemplar, noisy_exemplar, negative, ambiguous
    exemplar_box: tuple[float, float, float, float] | None = None  # xyxy pixels


@dataclass(frozen=True, eq=False)
class TrackerPrompt:
    """Conditioning of the first clip frame: the masks themselves, or SAM points per object."""

    use_masks: bool
    points: np.ndarray | None = None  # K x P x 2 xy pixels
    labels: np.ndarray | None = None  # K x P int32


def training_queries(objects: Sequence[AnnotatedObject], ontology: Ontology, exhaustive: bool,
                     rng: np.random.Generator, mix: PromptMix, width: int, height: int) -> list[Query]:
    queries = []
    by_label = _objects_by_label(objects, ontology)
    for label, indices in by_label.items():
        spec = ontology.classes[label]
        prompt = str(rng.choice(spec.prompts))
        if spec.synonyms and rng.random() < mix.synonym_rate:
            queries.append(Query(str(rng.choice(spec.synonyms)), indices, "synonym"))
        else:
            queries.append(Query(prompt, indices, "class"))
        queries += _attribute_queries(objects, indices, prompt, ontology)
        if rng.random() < mix.exemplar_rate:
            chosen = objects[int(rng.choice(indices))]
            noisy = rng.random() < mix.noisy_box_rate
            box = jitter_box(chosen.box, rng, mix.box_jitter, width, height) if noisy else chosen.box
            queries.append(Query(GEOMETRY_ONLY_TEXT, indices,
                                 "noisy_exemplar" if noisy else "exemplar", box))
        if exhaustive and spec.pickable and rng.random() < mix.ambiguous_rate:
            unmatched = _unmatched_attributes(objects, indices, ontology)
            if unmatched:
                template = ontology.attributes[str(rng.choice(unmatched))].prompt_template
                queries.append(Query(template.format(prompt), (), "ambiguous"))
    if exhaustive:
        absent = [name for name in ontology.classes if name not in by_label]
        for name in rng.permutation(absent)[:mix.negatives_per_image]:
            queries.append(Query(str(rng.choice(ontology.classes[str(name)].prompts)), (), "negative"))
    return queries


def held_out_queries(objects: Sequence[AnnotatedObject], ontology: Ontology, exhaustive: bool
                     ) -> list[Query]:
    """The fixed question set for held-out loss: what the cell asks at run time (each present
    class's first prompt, its attribute phrasing) and every absent class."""
    queries = []
    by_label = _objects_by_label(objects, ontology)
    for label, indices in by_label.items():
        prompt = ontology.classes[label].prompts[0]
        queries.append(Query(prompt, indices, "class"))
        queries += _attribute_queries(objects, indices, prompt, ontology)
    if exhaustive:
        queries += [Query(spec.prompts[0], (), "negative")
                    for name, spec in ontology.classes.items() if name not in by_label]
    return queries


def jitter_box(box: tuple[float, float, float, float], rng: np.random.Generator, amount: float,
               width: int, height: int) -> tuple[float, float, float, float]:
    """Each corner moved by up to `amount` of the box side, kept inside the image and non-empty."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dx0, dx1 = rng.uniform(-amount, amount, 2) * w
    dy0, dy1 = rng.uniform(-amount, amount, 2) * h
    nx0, nx1 = np.clip([x0 + dx0, x1 + dx1], 0, width)
    ny0, ny1 = np.clip([y0 + dy0, y1 + dy1], 0, height)
    if nx1 - nx0 < 1 or ny1 - ny0 < 1:
        return box
    return float(nx0), float(ny0), float(nx1), float(ny1)


def tracker_prompt(masks: np.ndarray, rng: np.random.Generator, mix: PromptMix) -> TrackerPrompt:
    """One conditioning kind for all K objects of a clip (the tracker batches them)."""
    draw = rng.random()
    if draw < mix.tracker_mask_rate:
        return TrackerPrompt(use_masks=True)
    height, width = masks.shape[1:]
    if draw < mix.tracker_mask_rate + (1.0 - mix.tracker_mask_rate) / 2:
        points = []
        for mask in masks:
            box = mask_box(mask)
            if rng.random() < mix.noisy_box_rate:
                box = jitter_box(box, rng, mix.box_jitter, width, height)
            points.append([box[:2], box[2:]])
        labels = np.tile([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], (len(masks), 1))
        return TrackerPrompt(False, np.asarray(points, np.float32), labels.astype(np.int32))
    clicks = int(rng.integers(1, mix.max_clicks + 1))
    points = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        chosen = rng.integers(0, len(rows), clicks)
        # +0.5: the pixel centre, in the same continuous coordinates as box corners.
        points.append(np.stack([cols[chosen] + 0.5, rows[chosen] + 0.5], axis=1))
    labels = np.full((len(masks), clicks), POSITIVE_CLICK, np.int32)
    return TrackerPrompt(False, np.asarray(points, np.float32), labels)


def _objects_by_label(objects: Sequence[AnnotatedObject], ontology: Ontology
                      ) -> dict[str, tuple[int, ...]]:
    by_label: dict[str, list[int]] = {}
    for index, obj in enumerate(objects):
        if obj.label in ontology.classes:
            by_label.setdefault(obj.label, []).append(index)
    return {label: tuple(indices) for label, indices in sorted(by_label.items())}


def _attribute_queries(objects: Sequence[AnnotatedObject], indices: tuple[int, ...], prompt: str,
                       ontology: Ontology) -> list[Query]:
    queries = []
    for name, spec in ontology.attributes.items():
        having = tuple(i for i in indices if name in objects[i].attributes)
        if having:
            queries.append(Query(spec.prompt_template.format(prompt), having, "attribute"))
    return queries


def _unmatched_attributes(objects: Sequence[AnnotatedObject], indices: tuple[int, ...],
                          ontology: Ontology) -> list[str]:
    present = {a for i in indices for a in objects[i].attributes}
    return [name for name in ontology.attributes if name not in present]
