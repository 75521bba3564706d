"""Building the output records of one route: results, dead letters and trace headers.

Pure functions over the schema models; no Kafka, Faust or Ray here, so the
shape of everything the agents write is unit-testable.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.codec import encode
from schemas.events import DeadLetter
from schemas.tracing import HEADER, TraceParent
from topologies.state.analytics import now_ms

__all__ = ["InputRecord", "OutRecord", "child_traceparent", "dead_letter", "now_ms", "result_record"]


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
    trace: Any = None  # its spans (topologies.engine.tracing.EventTrace) when the event is traced
    # False: a summary of its previous owner already counted it (a replay after a crash,
    # topologies.engine.replays); processed for results and dead letters, left out of every analytics delta.
    counted: bool = True


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None  # None: by key (Kafka's default partitioner); set: this partition


def child_traceparent(parent: bytes | None) -> bytes | None:
    """A W3C ``traceparent`` for an output record: same trace, new span id, parent's flags."""
    tp = TraceParent.parse(parent)
    return tp.child() if tp is not None else None


def _headers(rec: InputRecord) -> tuple[tuple[str, bytes], ...]:
    """An output record's headers: its event's ``send`` span when traced, else the next hop of its trace."""
    tp = rec.trace.out_header() if rec.trace is not None else child_traceparent(rec.headers.get(HEADER))
    return ((HEADER, tp),) if tp else ()


def dead_letter(
    rec: InputRecord, *, topic: str, route: str, stage: str, error: BaseException | str, attempts: int = 1,
    error_class: str | None = None, max_bytes: int = 1_000_000,
) -> OutRecord:
    """The ``dead_letter.v1`` record of an input that could not be processed; key + value never over ``max_bytes``
    (unless the letter without its original is already bigger).

    A poison record must not stop a route because its dead letter is too big to produce: beyond
    the cap the original is cut (``truncated``), and the letter keeps the original's size, sha256,
    topic, partition and offset, so the whole record can be fetched again.
    """
    event_id = getattr(rec.event, "event_id", None)
    message = str(error)[:4000]
    raw = rec.value or b""
    key = rec.key
    if key is not None and len(key) > _MAX_KEY:  # a key counts toward the record's size too
        key = hashlib.sha256(key).hexdigest().encode()
    fields: dict[str, Any] = dict(
        event_id=event_id,
        key=base64.b64encode(key).decode() if key is not None else None,
        topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        route=route,
        stage=stage,
        error_class=error_class or (type(error).__name__ if isinstance(error, BaseException) else "Error"),
        error=message or "(no message)",
        attempts=attempts,
        ts=now_ms(),
        original_size=len(raw),
        original_sha256=hashlib.sha256(raw).hexdigest(),
    )
    kept = raw
    if len(raw) * 4 // 3 + _LETTER_OVERHEAD + len(key or b"") > max_bytes:  # measured only when it may not fit
        bare = len(encode(DeadLetter(**fields, original="", truncated=True)))
        kept = raw[:max(0, (max_bytes - bare - _RECORD_OVERHEAD - len(key or b"")) * 3 // 4)]
    dl = DeadLetter(**fields, original=base64.b64encode(kept).decode(), truncated=len(kept) < len(raw))
    return OutRecord(topic, key, encode(dl), _headers(rec))


_MAX_KEY = 1024
# Everything in a letter but the original, at most: ids, the error (<= 4,000 chars, up to 4 bytes
# each in UTF-8 and 6 when JSON-escaped), the key (<= 1 KiB, base64). Below this the letter fits
# without measuring; above it, the letter without its original is encoded and measured.
_LETTER_OVERHEAD = 32 * 1024
# The record's own framing and headers (traceparent) beside key and value.
_RECORD_OVERHEAD = 512


def result_record(rec: InputRecord, *, topic: str, reply: dict[str, Any], queue_ms: float,
                  produced: int | None = None) -> OutRecord:
    """The result record (``sentiment.v1`` / ``detections.v1`` / ``tags.v1``) of one successful reply.

    Built as a plain dict and encoded once: the event was validated on decode and the reply's
    ``result`` follows the task's schema (workers build it; the contract tests check both), so
    no model is re-validated per event on the hot path. ``None`` fields are left out.
    """
    ev = rec.event
    produced = now_ms() if produced is None else produced
    doc: dict[str, Any] = {"event_id": ev.event_id, "ts": ev.ts}
    for name in _optional_ids(type(ev)):
        value = getattr(ev, name)
        if value is not None:
            doc[name] = value
    doc["model"] = reply["model"]
    doc["timings"] = {"inference_ms": max(0.0, float(reply.get("inference_ms", 0.0))),
                      "queue_ms": max(0.0, queue_ms), "e2e_ms": float(produced - ev.ts)}
    doc["produced_ts"] = produced
    doc.update(reply["result"])
    if (variant := reply.get("variant")) is not None:  # routes with a rollout: who answered
        doc["variant"] = variant
    return OutRecord(topic, rec.key, orjson.dumps(doc), _headers(rec))


_OPTIONAL_IDS = ("user_id", "item_id", "source", "stream_id", "frame_index", "pts_ms")
_IDS_OF: dict[type, tuple[str, ...]] = {}


def _optional_ids(event_type: type) -> tuple[str, ...]:
    """The optional id fields an event type has (a missing attribute on a pydantic model costs an exception)."""
    ids = _IDS_OF.get(event_type)
    if ids is None:
        fields = getattr(event_type, "model_fields", {})
        ids = _IDS_OF[event_type] = tuple(n for n in _OPTIONAL_IDS if n in fields)
    return ids
