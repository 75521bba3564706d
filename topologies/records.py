"""Building the output records of one route: results, dead letters and trace headers.

Pure functions over the schema models; no Kafka, Faust or Ray here, so the
shape of everything the agents write is unit-testable.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from typing import Any

from schemas.codec import encode
from schemas.events import DeadLetter, ModelInfo, SentimentResult, TagsResult, Timings
from schemas.tasks import TASKS

__all__ = ["InputRecord", "OutRecord", "child_traceparent", "dead_letter", "now_ms", "result_record"]

RESULT_MODELS = {name: spec.result_model for name, spec in TASKS.items() if spec.result_model}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class InputRecord:
    """One consumed Kafka record, as the agent saw it (raw bytes; decoding comes later)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)
    event: Any = None  # the decoded event model, once valid


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def child_traceparent(parent: bytes | None) -> bytes | None:
    """A W3C ``traceparent`` for an output record: same trace, new span id, parent's flags."""
    if not parent:
        return None
    try:
        version, trace_id, _span, flags = parent.decode("ascii").split("-")
    except (ValueError, UnicodeDecodeError):
        return None
    if len(trace_id) != 32 or version != "00":
        return None
    return f"00-{trace_id}-{os.urandom(8).hex()}-{flags}".encode()


def _headers(rec: InputRecord) -> tuple[tuple[str, bytes], ...]:
    tp = child_traceparent(rec.headers.get("traceparent"))
    return (("traceparent", tp),) if tp else ()


def dead_letter(
    rec: InputRecord, *, topic: str, route: str, stage: str, error: BaseException | str, attempts: int = 1,
    error_class: str | None = None,
) -> OutRecord:
    """The ``dead_letter.v1`` record of an input that could not be processed."""
    event_id = getattr(rec.event, "event_id", None)
    message = str(error)[:4000]
    dl = DeadLetter(
        event_id=event_id,
        original=base64.b64encode(rec.value or b"").decode(),
        key=base64.b64encode(rec.key).decode() if rec.key is not None else None,
        topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        route=route,
        stage=stage,  # type: ignore[arg-type]
        error_class=error_class or (type(error).__name__ if isinstance(error, BaseException) else "Error"),
        error=message or "(no message)",
        attempts=attempts,
        ts=now_ms(),
    )
    return OutRecord(topic, rec.key, encode(dl), _headers(rec))


def result_record(rec: InputRecord, *, topic: str, task: str, reply: dict[str, Any], queue_ms: float) -> OutRecord:
    """The result record (``sentiment.v1`` / ``detections.v1`` / ``tags.v1``) of one successful reply."""
    ev = rec.event
    produced = now_ms()
    common: dict[str, Any] = {
        "event_id": ev.event_id,
        "ts": ev.ts,
        "user_id": ev.user_id,
        "item_id": ev.item_id,
        "source": ev.source,
        "stream_id": getattr(ev, "stream_id", None),
        "frame_index": getattr(ev, "frame_index", None),
        "pts_ms": getattr(ev, "pts_ms", None),
        "model": ModelInfo(**reply["model"]),
        "timings": Timings(inference_ms=max(0.0, float(reply.get("inference_ms", 0.0))),
                           queue_ms=max(0.0, queue_ms), e2e_ms=float(produced - ev.ts)),
        "produced_ts": produced,
    }
    model_cls = RESULT_MODELS.get(task)
    if model_cls is None:  # echo: shaped like the route's natural result
        model_cls = SentimentResult if "label" in reply["result"] else TagsResult
    result = model_cls(**common, **reply["result"])
    return OutRecord(topic, rec.key, encode(result), _headers(rec))
