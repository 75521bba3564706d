"""Producers of input events (text, images, video frames) for the CLI, the demo and the benchmarks.

Every event is built as its pydantic model, encoded, and decoded again through
the codec with the topology's limits before it is sent, so nothing leaves here
that a worker would reject. Sending uses aiokafka with batching (BROKER.md:
about 15x kafka-python's rate). Keys follow DESIGN.md: ``item_id`` or
``event_id`` for text and images, ``stream_id`` for video frames.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from pathlib import Path

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from infertide.clients.admin import aiokafka_kwargs, max_message_bytes
from schemas.codec import Limits, decode, encode
from schemas.events import ImageEvent, ImageRef, TextEvent, VideoFrameEvent
from schemas.tasks import event_schema
from schemas.topology import Topology
from schemas.tracing import HEADER, new_traceparent, span_traceparent, tracer

__all__ = [
    "IMAGE_SUFFIXES",
    "Progress",
    "ProduceStats",
    "aproduce_events",
    "image_events",
    "image_paths",
    "now_ms",
    "produce_events",
    "produce_images",
    "produce_texts",
    "produce_video",
    "text_events",
    "video_frame_count",
    "video_frame_events",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
# Called after each acknowledged chunk with (events sent so far, bytes sent so far).
Progress = Callable[[int, int], None]
_CHUNK = 2000  # sends in flight before we wait for their acks


class ProduceStats(int):
    """The number of events sent (it *is* that int), with ``nbytes`` and ``seconds`` for throughput."""

    nbytes: int
    seconds: float

    def __new__(cls, count: int, nbytes: int = 0, seconds: float = 0.0) -> ProduceStats:
        obj = super().__new__(cls, count)
        obj.nbytes, obj.seconds = nbytes, seconds
        return obj

    @property
    def count(self) -> int:
        return int(self)

    @property
    def events_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _key_of(event: BaseModel) -> bytes:
    key = getattr(event, "stream_id", None) or getattr(event, "item_id", None) or event.event_id
    return key.encode()


async def aproduce_events(topology: Topology, topic: str, events: Iterable[BaseModel], *,
                          bootstrap: str | None = None, progress: Progress | None = None) -> ProduceStats:
    """Validate, encode and send input events to ``topic``; wait for every ack.

    Args:
        topology: supplies the client settings and the decode limits.
        topic: a full topic name or an alias (``text``).
        events: ``TextEvent`` / ``ImageEvent`` / ``VideoFrameEvent`` models, consumed lazily.
        bootstrap: overrides ``kafka.bootstrap_servers``.
        progress: called as ``progress(sent, nbytes)`` after each acknowledged chunk.

    Raises:
        schemas.codec.EventDecodeError: an event breaks the schema or the limits (nothing after it is sent).
    """
    topic = topology.topics.resolve(topic)
    limits = Limits.from_config(topology.limits)
    producer = AIOKafkaProducer(
        client_id="infertide-produce", acks="all", enable_idempotence=True, linger_ms=max(int(topology.kafka.producer_linger_s * 1000), 5),
        max_batch_size=512 * 1024, max_request_size=max_message_bytes(topology),
        **aiokafka_kwargs(topology.kafka, bootstrap))
    await producer.start()
    otel = tracer(TRACING_SERVICE)
    sent = nbytes = 0
    start = time.perf_counter()
    try:
        pending: list[asyncio.Future] = []
        for event in events:
            value = encode(event)
            decode(value, event_schema(event), limits)  # the same check a worker makes
            headers = [(HEADER, _traceparent(otel, topic))]
            pending.append(await producer.send(topic, value, key=_key_of(event), headers=headers))
            nbytes += len(value)
            if len(pending) >= _CHUNK:
                await asyncio.gather(*pending)
                sent += len(pending)
                pending.clear()
                if progress:
                    progress(sent, nbytes)
        await producer.flush()
        await asyncio.gather(*pending)
        sent += len(pending)
        if progress:
            progress(sent, nbytes)
    finally:
        await producer.stop()
    return ProduceStats(sent, nbytes, time.perf_counter() - start)


TRACING_SERVICE = "infertide-produce"  # OTEL_SERVICE_NAME wins


def _traceparent(otel: Any, topic: str) -> bytes:
    """Each event starts a trace: a recorded ``send`` span with tracing configured, else a bare context."""
    if otel is None:
        return new_traceparent()
    from opentelemetry.trace import SpanKind

    span = otel.start_span(f"{topic} send", kind=SpanKind.PRODUCER,
                           attributes={"messaging.system": "kafka", "messaging.destination.name": topic})
    span.end()  # the send itself is asynchronous; the span marks the event's creation
    return span_traceparent(span)


def produce_events(topology: Topology, topic: str, events: Iterable[BaseModel], *,
                   bootstrap: str | None = None, progress: Progress | None = None) -> ProduceStats:
    """Blocking :func:`aproduce_events` (runs its own event loop; use the async one inside a loop)."""
    return asyncio.run(aproduce_events(topology, topic, events, bootstrap=bootstrap, progress=progress))


def text_events(texts: Iterable[str], *, user_id: str | None = None, item_id: str | None = None,
                source: str | None = "cli", repeat: int = 1) -> Iterator[TextEvent]:
    """``text.v1`` events, one per text, the whole list ``repeat`` times; blank lines are skipped."""
    items = [t for t in texts if t.strip()]
    for _ in range(repeat):
        for text in items:
            yield TextEvent(event_id=uuid.uuid4().hex, ts=now_ms(), user_id=user_id, item_id=item_id,
                            source=source, text=text)


def image_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Image files among ``paths``; folders are expanded (sorted by name, not recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def image_events(paths: Iterable[Path], *, uri: bool = False, user_id: str | None = None,
                 source: str | None = "cli") -> Iterator[ImageEvent]:
    """``image.v1`` events: inline base64 (default) or ``file://`` references (``uri=True``).

    The item id is the file name, so results can be matched to their files.
    """
    for path in paths:
        mime = mimetypes.guess_type(path.name)[0]
        mime = mime if mime and mime.startswith("image/") else None
        if uri:
            ref = ImageRef(uri=path.resolve().as_uri(), mime=mime)
        else:
            ref = ImageRef(data=base64.b64encode(path.read_bytes()).decode(), mime=mime)
        yield ImageEvent(event_id=uuid.uuid4().hex, ts=now_ms(), user_id=user_id, item_id=path.name,
                         source=source, image=ref)


def produce_texts(topology: Topology, texts: Iterable[str], *, topic: str | None = None,
                  bootstrap: str | None = None, user_id: str | None = None, item_id: str | None = None,
                  source: str | None = "cli", repeat: int = 1, progress: Progress | None = None) -> ProduceStats:
    """Send ``text.v1`` events (to ``topics.text`` unless ``topic``); returns the count sent."""
    events = text_events(texts, user_id=user_id, item_id=item_id, source=source, repeat=repeat)
    return produce_events(topology, topic or topology.topics.text, events, bootstrap=bootstrap, progress=progress)


def produce_images(topology: Topology, paths: Iterable[str | Path], *, topic: str | None = None,
                   bootstrap: str | None = None, uri: bool = False, user_id: str | None = None,
                   source: str | None = "cli", progress: Progress | None = None) -> ProduceStats:
    """Send one ``image.v1`` event per image file (folders expanded); returns the count sent."""
    events = image_events(image_paths(paths), uri=uri, user_id=user_id, source=source)
    return produce_events(topology, topic or topology.topics.image, events, bootstrap=bootstrap, progress=progress)


def _frames(path: Path, source_fps: float) -> Iterator[tuple[int, float, object]]:
    """(frame index, pts in ms, BGR array) of a video file, or of a folder of images sorted by name."""
    import cv2

    if path.is_dir():
        for i, f in enumerate(image_paths([path])):
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"{f}: not an image OpenCV can read")
            yield i, i * 1000.0 / source_fps, img
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video")
    fps = cap.get(cv2.CAP_PROP_FPS) or source_fps
    try:
        i = 0
        while True:
            ok, img = cap.read()
            if not ok:
                return
            yield i, i * 1000.0 / fps, img
            i += 1
    finally:
        cap.release()


def video_frame_count(path: str | Path) -> int | None:
    """Frames in a video file or folder (before sampling); ``None`` when OpenCV cannot tell."""
    path = Path(path)
    if path.is_dir():
        return len(image_paths([path]))
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return n if n > 0 else None
    finally:
        cap.release()


def video_frame_events(path: str | Path, *, stream_id: str | None = None, fps: float | None = None,
                       source_fps: float = 30.0, max_frames: int | None = None, jpeg_quality: int = 85,
                       user_id: str | None = None, source: str | None = "cli") -> Iterator[VideoFrameEvent]:
    """``video_frame.v1`` events of one stream, JPEG-encoded, sampled to at most ``fps`` frames/s.

    Args:
        path: a video file OpenCV can read, or a folder of frames (sorted by name).
        stream_id: defaults to the file or folder name.
        fps: keep at most this many frames per second of stream time (``None``: every frame).
        source_fps: frame rate of a folder of frames (a video file's own rate is used for files).
        max_frames: stop after this many frames are emitted.
    """
    import cv2

    path = Path(path)
    stream_id = stream_id or path.stem or "stream"
    next_pts = 0.0
    emitted = 0
    for index, pts, img in _frames(path, source_fps):
        if fps is not None:
            if pts + 1e-6 < next_pts:
                continue
            next_pts = pts + 1000.0 / fps
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise ValueError(f"{path}: JPEG encoding of frame {index} failed")
        yield VideoFrameEvent(event_id=uuid.uuid4().hex, ts=now_ms(), user_id=user_id, source=source,
                              stream_id=stream_id, frame_index=index, pts_ms=int(round(pts)),
                              image=ImageRef(data=base64.b64encode(buf.tobytes()).decode(), mime="image/jpeg"))
        emitted += 1
        if max_frames is not None and emitted >= max_frames:
            return


def produce_video(topology: Topology, path: str | Path, *, topic: str | None = None, bootstrap: str | None = None,
                  stream_id: str | None = None, fps: float | None = None, source_fps: float = 30.0,
                  max_frames: int | None = None, user_id: str | None = None, source: str | None = "cli",
                  progress: Progress | None = None) -> ProduceStats:
    """Send a video (file or frame folder) as ``video_frame.v1`` events keyed by ``stream_id``; returns the count."""
    events = video_frame_events(path, stream_id=stream_id, fps=fps, source_fps=source_fps, max_frames=max_frames,
                                user_id=user_id, source=source)
    return produce_events(topology, topic or topology.topics.video, events, bootstrap=bootstrap, progress=progress)
