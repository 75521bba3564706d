"""The task registry: every fact about a model task and an event kind, in one table each.

The topology config (allowed ``task`` and ``kind`` values, default output topics),
the route engine (result schema, analytics deltas), recommendations (item labels,
engagement weight), the dashboard (a one-line brief) and the CLI (topic schemas)
all read these tables, so adding a task is one :class:`TaskSpec` here, one model
class in ``workers/`` (named in ``workers.registry``) and its topic in
``TopicsConfig``. See ``docs/extending.md``.

Every function here is pure over a reply's ``result`` payload (plain JSON types).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.events import SCHEMAS

__all__ = [
    "EVENT_KINDS",
    "TASKS",
    "TOPIC_SCHEMAS",
    "Delta",
    "EventKindSpec",
    "TaskSpec",
    "event_schema",
]

Result = dict[str, Any]
#: One analytics addition: ``(metric, key, field, amount)``; ``key`` is the route or a stream id.
Delta = tuple[str, str, str, float]


@dataclass(frozen=True)
class EventKindSpec:
    """An input event kind (a route's ``kind``).

    Args:
        name: the route kind (``text``).
        schema: the value schema of its events (``text.v1``).
        topic: the ``TopicsConfig`` alias of its default input topic.
    """

    name: str
    schema: str
    topic: str

    @property
    def model(self) -> type:
        return SCHEMAS[self.schema]


EVENT_KINDS: dict[str, EventKindSpec] = {
    "text": EventKindSpec("text", "text.v1", "text"),
    "image": EventKindSpec("image", "image.v1", "image"),
    "video": EventKindSpec("video", "video_frame.v1", "video"),
}


def _no_deltas(result: Result, route: str, stream_id: str | None) -> list[Delta]:
    return []


def _no_labels(result: Result) -> dict[str, float]:
    return {}


def _weight_one(result: Result) -> float:
    return 1.0


@dataclass(frozen=True)
class TaskSpec:
    """Everything the system knows about one model task, besides its model class.

    Args:
        name: the ``task`` value in a model's config.
        result_schema: schema of its results (``sentiment.v1``); ``None`` when the shape follows the input (echo).
        output: ``TopicsConfig`` alias of the topic its results go to unless a route says otherwise.
        accepts: event kinds a route of this task may carry.
        needs_model: whether ``model:`` (a checkpoint) is required.
        deltas: ``(result, route, stream_id) -> [(metric, key, field, amount)]`` added to the analytics windows.
        item_labels: ``result -> {label: weight}``, the item's profile for recommendations.
        engagement_weight: ``result -> weight`` of a user's engagement with the item.
        brief: ``result -> small dict`` the dashboard shows for a latest result.
        labels: ``result -> [label]`` the dashboard counts per route; the first is the top label
            (what a rollout comparison calls agreement).
        score: ``result -> score of the top label``, or ``None`` where the task has none (rollout comparisons).
        shows_image: the dashboard keeps the input image with the result (drawn with its boxes).
    """

    name: str
    result_schema: str | None
    output: str
    accepts: frozenset[str]
    needs_model: bool = True
    deltas: Callable[[Result, str, str | None], list[Delta]] = _no_deltas
    item_labels: Callable[[Result], dict[str, float]] = _no_labels
    engagement_weight: Callable[[Result], float] = _weight_one
    brief: Callable[[Result], dict[str, Any]] = lambda result: {}
    labels: Callable[[Result], list[str]] = lambda result: []
    score: Callable[[Result], float | None] = lambda result: None
    shows_image: bool = False

    @property
    def result_model(self) -> type | None:
        return SCHEMAS[self.result_schema] if self.result_schema else None


# -- sentiment -----------------------------------------------------------------------

def _sentiment_deltas(result: Result, route: str, stream_id: str | None) -> list[Delta]:
    label = result["label"]
    return [("sentiment", route, f"count.{label}", 1.0),
            ("sentiment", route, f"score_sum.{label}", float(result["score"]))]


def _sentiment_weight(result: Result) -> float:
    """+score when the label reads positive, -score when negative, 0 otherwise."""
    label = str(result.get("label", "")).upper()
    score = float(result.get("score", 0.0))
    if label.startswith("POS") or label in {"LABEL_1", "1"}:
        return score
    if label.startswith("NEG") or label in {"LABEL_0", "0"}:
        return -score
    return 0.0


# -- detection -----------------------------------------------------------------------

def _detection_deltas(result: Result, route: str, stream_id: str | None) -> list[Delta]:
    out: list[Delta] = []
    for box in result.get("boxes", []):
        out.append(("detections", route, box["label"], 1.0))
        if stream_id:
            out.append(("detections_stream", stream_id, box["label"], 1.0))
    return out


def _best_per_label(pairs: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in pairs:
        k = f"{prefix}{p['label']}"
        out[k] = max(out.get(k, 0.0), float(p["score"]))
    return out


def _box_labels(result: Result) -> list[str]:
    return [str(b.get("label")) for b in result.get("boxes", [])]


# -- tagging -------------------------------------------------------------------------

def _tag_labels(result: Result) -> list[str]:
    return [str(t.get("label")) for t in result.get("tags", [])]


def _tagging_deltas(result: Result, route: str, stream_id: str | None) -> list[Delta]:
    return [("tags", route, label, 1.0) for label in _tag_labels(result)]


# -- classification ------------------------------------------------------------------

def _top_class(result: Result) -> list[str]:
    return [str(result["labels"][0]["label"])] if result.get("labels") else []


def _classification_deltas(result: Result, route: str, stream_id: str | None) -> list[Delta]:
    return [("classes", route, label, 1.0) for label in _top_class(result)]


def _first_score(key: str) -> Callable[[Result], float | None]:
    """The score of the first entry of ``result[key]`` (best first), ``None`` when it is empty."""
    def score(result: Result) -> float | None:
        items = result.get(key) or []
        return float(items[0]["score"]) if items else None
    return score


def _classification_brief(result: Result) -> dict[str, Any]:
    labels = result.get("labels", [])
    return {"top": labels[0]["label"] if labels else None, "score": labels[0]["score"] if labels else None,
            "labels": [c.get("label") for c in labels][:3]}


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec(
        "sentiment", "sentiment.v1", "sentiment", frozenset({"text"}),
        deltas=_sentiment_deltas, engagement_weight=_sentiment_weight,
        brief=lambda r: {"label": r.get("label"), "score": r.get("score")},
        labels=lambda r: [str(r.get("label"))], score=lambda r: float(r["score"]),
    ),
    TaskSpec(
        "detection", "detections.v1", "detections", frozenset({"image", "video"}),
        deltas=_detection_deltas, item_labels=lambda r: _best_per_label(r.get("boxes", []), "class:"),
        brief=lambda r: {"boxes": len(r.get("boxes", [])), "labels": sorted(set(_box_labels(r)))[:5]},
        labels=_box_labels, score=_first_score("boxes"), shows_image=True,
    ),
    TaskSpec(
        "tagging", "tags.v1", "tags", frozenset({"text", "image", "video"}),
        deltas=_tagging_deltas, item_labels=lambda r: _best_per_label(r.get("tags", []), "tag:"),
        brief=lambda r: {"tags": _tag_labels(r)[:5]}, labels=_tag_labels, score=_first_score("tags"),
    ),
    TaskSpec(
        "classification", "classification.v1", "classes", frozenset({"image", "video"}),
        deltas=_classification_deltas, item_labels=lambda r: _best_per_label(r.get("labels", []), "class:"),
        brief=_classification_brief, labels=_top_class, score=_first_score("labels"),
    ),
    # Model-free: answers at once so benchmarks see the system's own overhead; its result
    # is shaped like the input's natural result, so it has no schema of its own.
    TaskSpec("echo", None, "sentiment", frozenset(EVENT_KINDS), needs_model=False),
)}

#: Topic alias (a ``TopicsConfig`` field) -> the value schema it carries (DESIGN.md, "Topics").
TOPIC_SCHEMAS: dict[str, str] = {
    **{k.topic: k.schema for k in EVENT_KINDS.values()},
    **{t.output: t.result_schema for t in TASKS.values() if t.result_schema},
    "recommendations": "recommendation.v1",
    "analytics": "analytics.v1",
    "dlq": "dead_letter.v1",
}

_SCHEMA_OF_MODEL = {k.model: k.schema for k in EVENT_KINDS.values()}


def event_schema(event: Any) -> str:
    """The schema name of an input event model (``TextEvent`` -> ``text.v1``)."""
    try:
        return _SCHEMA_OF_MODEL[type(event)]
    except KeyError:
        raise TypeError(f"{type(event).__name__} is not an input event; use one of "
                        f"{sorted(m.__name__ for m in _SCHEMA_OF_MODEL)}") from None
