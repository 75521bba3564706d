"""Typed models of every event and result on the wire, one per schema name and version.

These pydantic models are the source of truth; ``schemas/*.schema.json`` are
generated from them (``python -m schemas.generate``) and a test checks the two
agree. Every model forbids unknown keys, so a typo in a producer fails loudly.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.summary import BatchSummary

__all__ = [
    "SCHEMAS",
    "AnalyticsRecord",
    "BaseEvent",
    "Box",
    "ClassLabel",
    "ClassificationResult",
    "DeadLetter",
    "DetectionsResult",
    "ImageEvent",
    "ImageRef",
    "ModelInfo",
    "RecommendedItem",
    "Recommendation",
    "ResultBase",
    "SentimentResult",
    "Tag",
    "TagsResult",
    "TextEvent",
    "Timings",
    "VariantInfo",
    "VideoFrameEvent",
]

Id = Annotated[str, Field(min_length=1, max_length=256)]
TimestampMs = Annotated[int, Field(ge=0, le=253402300799999, description="milliseconds since the epoch")]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
_BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"
_URI = r"^(file|https?|s3)://\S+$"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Input(_Wire):
    """Input events tolerate fields they do not know: a newer producer may add one. The codec
    counts them, and a route with ``strict_fields`` rejects them instead."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class BaseEvent(_Input):
    """Fields every input event carries."""

    event_id: Id
    ts: TimestampMs
    user_id: Id | None = None
    item_id: Id | None = None
    source: Annotated[str, Field(max_length=256)] | None = None


class TextEvent(BaseEvent):
    """``text.v1``: a piece of text to classify (a review, a comment, a caption)."""

    text: Annotated[str, Field(min_length=1)]
    lang: Annotated[str, Field(max_length=16)] | None = None


class ImageRef(_Input):
    """An image inline (base64 in ``data``) or by reference (``uri``): exactly one of them."""

    # The same rule for JSON Schema users: exactly one of the two is a (non-null) string.
    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["data"], "properties": {"data": {"type": "string"}}},
        {"required": ["uri"], "properties": {"uri": {"type": "string"}}},
    ]})

    data: Annotated[str, Field(pattern=_BASE64, description="base64 of the encoded image")] | None = None
    uri: Annotated[str, Field(pattern=_URI, max_length=2048)] | None = None
    mime: Annotated[str, Field(pattern=r"^image/[a-z0-9.+-]+$")] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        if (self.data is None) == (self.uri is None):
            raise ValueError("exactly one of image.data (base64) or image.uri must be set")
        return self


class ImageEvent(BaseEvent):
    """``image.v1``: one image for detection and tagging."""

    image: ImageRef


class VideoFrameEvent(BaseEvent):
    """``video_frame.v1``: one frame of a stream; keyed by ``stream_id`` to keep order."""

    stream_id: Id
    frame_index: Annotated[int, Field(ge=0)]
    pts_ms: Annotated[int, Field(ge=0, description="presentation time within the stream")]
    image: ImageRef


class ModelInfo(_Wire):
    name: Id
    version: Annotated[str, Field(min_length=1, max_length=256)]


class Timings(_Wire):
    """Milliseconds spent in each stage; ``e2e_ms`` is result produce time minus event ``ts``."""

    inference_ms: Annotated[float, Field(ge=0)]
    queue_ms: Annotated[float, Field(ge=0)] | None = None
    e2e_ms: float | None = None


class VariantInfo(_Wire):
    """Which variant of a rollout answered (``routes[].rollout``); the version is ``model.version``."""

    name: Annotated[str, Field(min_length=1, max_length=64, description="the variant's name in the rollout")]
    model_key: Annotated[str, Field(min_length=1, max_length=256, description="its key under `models:`")]
    checkpoint: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="one of the model's `multiplex.checkpoints`, when it answered with one")
    role: Literal["base", "variant", "shadow"] = Field(
        description="base: the route's own model; variant: a canary / A/B share; shadow: never live")


class ResultBase(_Wire):
    """Every result carries the input's ids, the model and timings; routes with a rollout add ``variant``."""

    event_id: Id
    ts: TimestampMs
    user_id: Id | None = None
    item_id: Id | None = None
    source: Annotated[str, Field(max_length=256)] | None = None
    stream_id: Id | None = None
    frame_index: Annotated[int, Field(ge=0)] | None = None
    pts_ms: Annotated[int, Field(ge=0)] | None = None
    model: ModelInfo
    timings: Timings
    produced_ts: TimestampMs
    variant: VariantInfo | None = None


class SentimentResult(ResultBase):
    """``sentiment.v1``."""

    label: Annotated[str, Field(min_length=1)]
    score: Score


class Box(_Wire):
    xyxy: Annotated[list[float], Field(min_length=4, max_length=4)]
    label: str
    class_id: Annotated[int, Field(ge=0)]
    score: Score
    track_id: Annotated[int, Field(ge=0, description="the object's id within its stream (video routes with "
                                   "tracking; absent until the tracker confirms the object)")] | None = None


class DetectionsResult(ResultBase):
    """``detections.v1``: boxes in pixel coordinates of the original image."""

    boxes: list[Box]
    image_size: Annotated[list[int], Field(min_length=2, max_length=2, description="[width, height]")]


class Tag(_Wire):
    label: str
    score: Score


class TagsResult(ResultBase):
    """``tags.v1``: zero-shot tags, best first."""

    tags: list[Tag]


class ClassLabel(_Wire):
    label: str
    class_id: Annotated[int, Field(ge=0)]
    score: Score


class ClassificationResult(ResultBase):
    """``classification.v1``: an image classifier's top classes, best first."""

    labels: list[ClassLabel]
    top_k: Annotated[int, Field(ge=1, description="how many classes were asked for (labels may hold fewer)")]


class RecommendedItem(_Wire):
    item_id: Id
    score: float
    reasons: list[str]


class Recommendation(_Wire):
    """``recommendation.v1``: top-k items for a user whose affinity changed."""

    user_id: Id
    ts: TimestampMs
    items: list[RecommendedItem]
    affinity: dict[str, float]
    trigger_event_id: Id | None = None


class AnalyticsRecord(_Wire):
    """``analytics.v1``: one closed tumbling window of one metric."""

    metric: Annotated[str, Field(min_length=1)]
    key: str | None = Field(default=None, description="what the metric is about: a route name, or a stream id")
    window_start: TimestampMs
    window_end: TimestampMs
    values: dict[str, float]
    ts: TimestampMs


Stage = Literal["decode", "validate", "sample", "infer", "produce"]


class DeadLetter(_Wire):
    """``dead_letter.v1``: an event that could not be processed, with everything to replay it."""

    event_id: Id | None = None
    original: Annotated[str, Field(pattern=_BASE64, description="base64 of the original record value")]
    key: Annotated[str, Field(pattern=_BASE64)] | None = None
    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    route: str | None = None
    stage: Stage
    error_class: str
    error: str
    attempts: Annotated[int, Field(ge=0)] = 1
    ts: TimestampMs
    # The original's size and digest; beyond ``limits.max_dead_letter_bytes`` ``original`` holds only its
    # first bytes (``truncated``), and topic/partition/offset say where to fetch the whole record again.
    original_size: Annotated[int, Field(ge=0)] | None = None
    original_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    truncated: bool = False


SCHEMAS: dict[str, type[BaseModel]] = {
    "text.v1": TextEvent,
    "image.v1": ImageEvent,
    "video_frame.v1": VideoFrameEvent,
    "sentiment.v1": SentimentResult,
    "detections.v1": DetectionsResult,
    "tags.v1": TagsResult,
    "classification.v1": ClassificationResult,
    "recommendation.v1": Recommendation,
    "analytics.v1": AnalyticsRecord,
    "dead_letter.v1": DeadLetter,
    "batch_summary.v1": BatchSummary,
}

_NAME = re.compile(r"^[a-z_]+\.v\d+$")
assert all(_NAME.match(n) for n in SCHEMAS)
