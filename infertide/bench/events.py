"""Bench inputs per route kind: texts, small JPEG images, video frames with stream ids; and the bare-model items.

Images are a handful of distinct small JPEGs encoded once and cycled, so producing
is cheap and the work measured is the pipeline's. Video frames are spread over
:data:`STREAMS` streams (keyed by ``stream_id``, as ``infertide produce video`` does)
with increasing ``frame_index`` / ``pts_ms`` per stream.
"""

from __future__ import annotations

import base64
import functools
import io
from typing import Any

from pydantic import BaseModel

__all__ = ["STREAMS", "bare_items", "event", "item_of", "key_of", "sample_texts"]

STREAMS = 8
_WORDS = ("great", "awful", "wonderful", "boring", "loved", "hated", "excellent", "terrible")
_COLOURS = ((90, 140, 30), (200, 40, 40), (30, 60, 200), (240, 240, 240), (20, 20, 20), (120, 90, 160))


def sample_texts(n: int) -> list[str]:
    """Short review-like texts (the same shape every text run sends)."""
    return [f"this film was {_WORDS[i % len(_WORDS)]}, review number {i}" for i in range(n)]


@functools.cache
def _texts() -> list[str]:
    return sample_texts(1000)


@functools.cache
def _jpegs(width: int = 64, height: int = 48) -> tuple[str, ...]:
    from PIL import Image, ImageDraw

    out = []
    for i, colour in enumerate(_COLOURS):
        img = Image.new("RGB", (width, height), colour)
        ImageDraw.Draw(img).rectangle((8 + i, 8, width // 2 + i, height - 8), fill=(255 - colour[0], 128, 64))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        out.append(base64.b64encode(buf.getvalue()).decode())
    return tuple(out)


def _image(i: int, size: tuple[int, int] = (64, 48)) -> dict[str, Any]:
    jpegs = _jpegs(*size)
    return {"data": jpegs[i % len(jpegs)], "uri": None}


def event(kind: str, prefix: str, i: int, ts: int, image_size: tuple[int, int] = (64, 48)) -> BaseModel:
    """Event ``i`` of a run for a route of ``kind`` (``text`` / ``image`` / ``video``); id ``<prefix>-<i>``.

    Images are JPEGs of ``image_size`` (width, height).
    """
    from schemas.events import ImageEvent, ImageRef, TextEvent, VideoFrameEvent

    eid = f"{prefix}-{i}"
    if kind == "text":
        return TextEvent(event_id=eid, ts=ts, source="bench", text=_texts()[i % 1000])
    if kind == "image":
        return ImageEvent(event_id=eid, ts=ts, source="bench", image=ImageRef(**_image(i, image_size)))
    if kind == "video":
        frame = i // STREAMS
        return VideoFrameEvent(event_id=eid, ts=ts, source="bench", stream_id=f"{prefix}-s{i % STREAMS}",
                               frame_index=frame, pts_ms=frame * 40, image=ImageRef(**_image(i, image_size)))
    raise ValueError(f"route kind must be text, image or video, not {kind!r}")


def key_of(ev: BaseModel) -> bytes:
    """The record key: the stream for video frames (order per stream), else the event id."""
    return (getattr(ev, "stream_id", None) or ev.event_id).encode()  # type: ignore[attr-defined]


def bare_items(kind: str, n: int, image_size: tuple[int, int] = (64, 48)) -> list[Any]:
    """What a route hands its models for ``n`` events of ``kind``: texts, or ``{"data", "uri"}`` images."""
    if kind == "text":
        return sample_texts(n)
    return [_image(i, image_size) for i in range(n)]


def item_of(kind: str, decoded: dict[str, Any]) -> Any:
    """The model input inside one decoded event (the naive loop's view of a record)."""
    if kind == "text":
        return decoded["text"]
    return {"data": decoded["image"].get("data"), "uri": decoded["image"].get("uri")}
