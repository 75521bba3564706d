"""The task registry (schemas/tasks.py): its tables agree with the config, the workers and the schemas,
and every task's pure functions give what analytics, recommendations and the dashboard expect."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from schemas.events import SCHEMAS, ClassificationResult, TextEvent
from schemas.tasks import EVENT_KINDS, TASKS, TOPIC_SCHEMAS, event_schema
from schemas.topology import TOPIC_ALIASES, TopicsConfig
from tests.fixtures.examples import VALID
from topologies.host.live import LiveState
from topologies.state.recommend import engagement_weight, item_labels
from workers.registry import MODEL_CLASSES, model_class


def _example(task: str) -> dict:
    """The task-specific part of the first valid example of the task's result schema."""
    base = set(SCHEMAS["sentiment.v1"].model_fields) - {"label", "score"}
    return {k: v for k, v in VALID[TASKS[task].result_schema][0].items() if k not in base}


def test_every_task_has_a_worker_and_the_worker_says_so() -> None:
    assert set(MODEL_CLASSES) == set(TASKS)
    for name in TASKS:
        assert model_class(name).task == name


def test_topics_schemas_and_kinds_are_known() -> None:
    assert set(TOPIC_SCHEMAS) == set(TOPIC_ALIASES), "every TopicsConfig alias carries one known schema"
    assert set(TOPIC_SCHEMAS.values()) <= set(SCHEMAS)
    for spec in TASKS.values():
        assert spec.output in TOPIC_ALIASES and spec.accepts <= set(EVENT_KINDS)
        assert spec.result_schema is None or spec.result_model is SCHEMAS[spec.result_schema]
    for kind in EVENT_KINDS.values():
        assert kind.topic in TOPIC_ALIASES and kind.model is SCHEMAS[kind.schema]
    assert TopicsConfig().resolve(TASKS["classification"].output) == "inference.classes"


def test_event_schema_names_input_models_only() -> None:
    assert event_schema(TextEvent(event_id="e", ts=1, text="hi")) == "text.v1"
    with pytest.raises(TypeError, match="not an input event"):
        event_schema(object())


@pytest.mark.parametrize(("task", "deltas"), [
    ("sentiment", [("sentiment", "r", "count.POSITIVE", 1.0), ("sentiment", "r", "score_sum.POSITIVE", 0.98)]),
    ("detection", [("detections", "r", "cat", 1.0), ("detections_stream", "cam-1", "cat", 1.0)]),
    ("tagging", [("tags", "r", "cat", 1.0), ("tags", "r", "animal", 1.0)]),
    ("classification", [("classes", "r", "tabby, tabby cat", 1.0)]),
])
def test_analytics_deltas_of_one_result(task: str, deltas: list) -> None:
    assert TASKS[task].deltas(_example(task), "r", "cam-1") == deltas
    assert TASKS["echo"].deltas({"label": "echo", "score": 1.0}, "r", None) == []


def test_detection_counts_per_stream_only_for_frames() -> None:
    assert [d[0] for d in TASKS["detection"].deltas(_example("detection"), "r", None)] == ["detections"]


def test_recommendation_labels_and_weights() -> None:
    assert item_labels("classification", _example("classification")) == {
        "class:tabby, tabby cat": 0.83, "class:tiger cat": 0.11}
    assert item_labels("tagging", _example("tagging")) == {"tag:cat": 0.7, "tag:animal": 0.2}
    assert item_labels("sentiment", _example("sentiment")) == {}
    assert engagement_weight("classification", _example("classification")) == 1.0
    assert engagement_weight("sentiment", {"label": "NEGATIVE", "score": 0.6}) == -0.6


def test_dashboard_shows_a_classification_by_its_brief() -> None:
    live = LiveState()
    ev = SimpleNamespace(event_id="i-1", ts=0, item_id="item-1", user_id=None)
    result = _example("classification")
    ClassificationResult.model_validate({**VALID["classification.v1"][0], **result})  # the example is a real result
    live.observe("image", 1, 0, [("classification", ev, result)])
    route = live.snapshot()["routes"]["image"]
    assert route["latest"][0]["result"] == {"top": "tabby, tabby cat", "score": 0.83,
                                            "labels": ["tabby, tabby cat", "tiger cat"]}
    assert route["labels"] == {"classification": {"tabby, tabby cat": 1}}
    assert live.snapshot()["detections"] == []  # only tasks that show their image keep it
