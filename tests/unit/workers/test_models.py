"""Each model class called directly (no Ray): results, identity, per-item errors, options."""

from __future__ import annotations

import base64

import pytest

from schemas.events import ClassificationResult
from tests.fixtures.examples import VALID
from tests.fixtures.images import png_bomb
from workers.classification import ClassificationModel
from workers.detection import DetectionModel
from workers.echo import EchoModel
from workers.sentiment import SentimentModel
from workers.tagging import TaggingModel


def _ok(r):
    assert r["ok"] is True, r
    assert r["model"]["name"] and r["model"]["version"] not in ("", "unloaded")
    assert r["inference_ms"] >= 0
    return r["result"]


def _err(r, cls=None):
    assert r["ok"] is False and r["error"], r
    if cls:
        assert r["error_class"] == cls, r
    return r


@pytest.fixture(scope="module")
def sentiment(tiny_topology):
    return SentimentModel(tiny_topology.models["sentiment"])


@pytest.fixture(scope="module")
def detection(tiny_topology):
    return DetectionModel(tiny_topology.models["detection"])


@pytest.fixture(scope="module")
def tagging(tiny_topology):
    return TaggingModel(tiny_topology.models["tagging"])


def test_sentiment_batch_with_bad_items(sentiment):
    long_ok = "great movie " * 500  # truncated at max_length, not an error
    out = sentiment.run_batch(["i love it", 42, "x" * 20_000, long_ok, "awful"])
    assert len(out) == 5
    for i in (0, 3, 4):
        res = _ok(out[i])
        assert res["label"] in ("NEGATIVE", "POSITIVE") and 0.0 <= res["score"] <= 1.0
    _err(out[1], "InputError")
    _err(out[2], "TextTooLong")
    assert out[0]["model"]["version"].startswith("sha256:")
    assert sentiment.max_length == 64


def test_sentiment_same_text_same_result(sentiment):
    a, b = sentiment.run_batch(["hello there", "hello there"])
    assert a["result"]["label"] == b["result"]["label"]
    assert a["result"]["score"] == pytest.approx(b["result"]["score"], abs=1e-5)


def test_detection_batch_with_corrupt_and_bomb(detection, make_image_item):
    jpeg = make_image_item(96, 64)
    corrupt = {"data": base64.b64encode(base64.b64decode(jpeg["data"])[:40]).decode(), "uri": None}
    out = detection.run_batch([jpeg, corrupt, {"data": png_bomb(), "uri": None}, make_image_item(50, 70, "PNG")])
    res = _ok(out[0])
    assert res["image_size"] == [96, 64]
    for box in res["boxes"]:
        assert len(box["xyxy"]) == 4 and isinstance(box["class_id"], int)
        assert isinstance(box["label"], str) and 0.0 <= box["score"] <= 1.0
    _err(out[1], "InputError")
    _err(out[2], "ImageTooLarge")
    assert _ok(out[3])["image_size"] == [50, 70]
    assert out[0]["model"] == {"name": "yolo11n.yaml", "version": out[0]["model"]["version"]}


def test_detection_options_apply_without_reload(detection, make_image_item):
    model_before = detection.model
    detection.set_options({**detection.cfg.options, "conf": 0.99})
    assert detection.conf == 0.99 and detection.model is model_before
    assert _ok(detection.run_batch([make_image_item()])[0])["boxes"] == []


def test_tagging_images_and_text(tagging, make_image_item):
    out = tagging.run_batch([make_image_item(), "a cat", {"data": "%%%", "uri": None}, make_image_item(33, 33, "PNG")])
    for i in (0, 1, 3):
        tags = _ok(out[i])["tags"]
        assert 1 <= len(tags) <= 3
        assert all(t["label"] in tagging.labels and 0.0 <= t["score"] <= 1.0 for t in tags)
        assert [t["score"] for t in tags] == sorted((t["score"] for t in tags), reverse=True)
    _err(out[2], "InputError")


def test_tagging_label_change_recomputes_embeddings(tagging, make_image_item):
    old = tagging.label_emb
    tagging.set_options({**tagging.cfg.options, "labels": ["sun", "moon"], "top_k": 5, "threshold": 0.0})
    assert tagging.label_emb is not old and tagging.label_emb.shape[0] == 2
    tags = _ok(tagging.run_batch([make_image_item()])[0])["tags"]
    assert {t["label"] for t in tags} == {"sun", "moon"}
    assert sum(t["score"] for t in tags) == pytest.approx(1.0, abs=1e-4)
    tagging.set_options({**tagging.cfg.options, "threshold": 1.01})
    assert _ok(tagging.run_batch([make_image_item()])[0])["tags"] == []


@pytest.fixture(scope="module")
def classification(tiny_topology):
    return ClassificationModel(tiny_topology.models["classification"])


def test_classification_batch_with_bad_items(classification, make_image_item):
    out = classification.run_batch([make_image_item(), "a cat", {"data": png_bomb(), "uri": None},
                                    make_image_item(200, 120, "PNG")])
    names = set(classification.model.config.id2label.values())
    for i in (0, 3):
        res = _ok(out[i])
        assert res["top_k"] == 3 and len(res["labels"]) == 3
        assert all(c["label"] in names and 0.0 <= c["score"] <= 1.0 for c in res["labels"])
        assert [c["score"] for c in res["labels"]] == sorted((c["score"] for c in res["labels"]), reverse=True)
        assert all(classification.model.config.id2label[c["class_id"]] == c["label"] for c in res["labels"])
        # the payload completes a classification.v1 result as the route engine builds it
        ClassificationResult.model_validate({**VALID["classification.v1"][0], **res})
    _err(out[1], "InputError")
    _err(out[2], "ImageTooLarge")
    assert out[0]["model"]["version"].startswith("sha256:")


def test_classification_options_apply_without_reload(classification, make_image_item):
    model_before = classification.model
    classification.set_options({**classification.cfg.options, "top_k": 100, "threshold": 0.0})
    res = _ok(classification.run_batch([make_image_item()])[0])
    assert classification.model is model_before and res["top_k"] == 100
    assert len(res["labels"]) == len(classification.id2label)  # top_k is capped at the class count
    assert sum(c["score"] for c in res["labels"]) == pytest.approx(1.0, abs=1e-4)
    classification.set_options({**classification.cfg.options, "threshold": 1.01})
    assert _ok(classification.run_batch([make_image_item()])[0])["labels"] == []


def test_echo(tiny_topology, make_image_item):
    echo = EchoModel(tiny_topology.models["echo"])
    out = echo.run_batch(["hi", make_image_item(), 3])
    assert _ok(out[0]) == {"label": "echo", "score": 1.0}
    assert _ok(out[1])["tags"] == []
    _err(out[2], "InputError")
