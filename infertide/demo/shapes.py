"""A synthetic video clip with known ground truth, and a detector that finds its shapes exactly.

The clip: solid rectangles in three colours move on straight-line paths (waypoints, one position per
frame) over a dark background; one may be hidden for a few frames (a missed detection). The
ground truth says, from the paths alone, where each shape is on every frame, when it crosses the
clip's line (and which way) and from which frame to which it is inside the clip's zone.

The detector is a TorchScript file in the format ``YOLO(...).export(format="torchscript")`` writes
(a scripted module plus ``config.txt`` metadata: names, stride, task), so the detection deployment
loads it through the same ``YOLO(path)`` code as any exported checkpoint; ultralytics letterboxes
the image, calls it, and runs its own NMS on the output. The module marks the pixels of each
colour, finds for every pixel the run of its colour along its row and its column (the rectangle's
edges), and emits one YOLO-shaped candidate ``(cx, cy, w, h, score per class)`` per 4x4 cell;
NMS keeps one box per shape. Deterministic, no training, no download.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["CLASS_NAMES", "COLOURS", "Clip", "ShapePath", "build_shape_detector", "demo_clip"]

CLASS_NAMES = {0: "red", 1: "green", 2: "blue"}
COLOURS = {0: (220, 40, 40), 1: (40, 200, 40), 2: (40, 40, 220)}
BACKGROUND = (20, 20, 20)

XYXY = tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapePath:
    """One rectangle: its class (colour), size, and centre at given frames (linear in between).

    Args:
        name: the object's name in the ground truth.
        class_id: 0 red, 1 green, 2 blue.
        size: ``(w, h)`` in pixels (even, so centres stay whole pixels).
        waypoints: ``((frame, cx, cy), ...)``, frames increasing; visible from the first to the last.
        hidden: frames on which it is not drawn (a detector miss, an occlusion).
    """

    name: str
    class_id: int
    size: tuple[int, int]
    waypoints: tuple[tuple[int, int, int], ...]
    hidden: frozenset[int] = frozenset()

    def centre(self, frame: int) -> tuple[int, int] | None:
        """The centre on ``frame`` (``None`` outside the path; hidden frames still have one)."""
        wps = self.waypoints
        if frame < wps[0][0] or frame > wps[-1][0]:
            return None
        for (f0, x0, y0), (f1, x1, y1) in zip(wps, wps[1:]):
            if f0 <= frame <= f1:
                t = (frame - f0) / (f1 - f0)
                return round(x0 + t * (x1 - x0)), round(y0 + t * (y1 - y0))
        return wps[0][1], wps[0][2]

    def box(self, frame: int) -> XYXY | None:
        """The drawn box ``(x0, y0, x1, y1)`` (x1, y1 exclusive), ``None`` when not drawn."""
        c = self.centre(frame)
        if c is None or frame in self.hidden:
            return None
        w, h = self.size
        return c[0] - w // 2, c[1] - h // 2, c[0] + w // 2, c[1] + h // 2


@dataclass(frozen=True)
class Clip:
    """A clip of ``frames`` frames at ``fps``, its shapes, one horizontal line and one rectangular zone.

    The line runs left to right at ``line_y``: a shape whose centre moves from below it to above it
    crosses ``in`` (the left-hand side of start -> end on the image), downwards ``out``. The zone
    is ``zone = (x0, y0, x1, y1)``; a shape is inside when its centre is.
    """

    width: int = 320
    height: int = 240
    fps: float = 25.0
    frames: int = 120
    shapes: tuple[ShapePath, ...] = ()
    line_y: int = 120
    zone: XYXY = (100, 20, 220, 100)
    names: dict[int, str] = field(default_factory=lambda: dict(CLASS_NAMES))

    # -- frames ----------------------------------------------------------------------------

    def pts_ms(self, frame: int) -> int:
        return round(frame * 1000.0 / self.fps)

    def image(self, frame: int) -> Any:
        """The frame as a PIL image."""
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (self.width, self.height), BACKGROUND)
        draw = ImageDraw.Draw(img)
        for s in self.shapes:
            b = s.box(frame)
            if b is not None:
                draw.rectangle([b[0], b[1], b[2] - 1, b[3] - 1], fill=COLOURS[s.class_id])
        return img

    def png(self, frame: int) -> bytes:
        buf = io.BytesIO()
        self.image(frame).save(buf, format="PNG")
        return buf.getvalue()

    def event(self, frame: int, stream_id: str, ts0_ms: int = 1_700_000_000_000) -> dict[str, Any]:
        """The frame as a ``video_frame.v1`` event (PNG inline; ``ts`` = ``ts0_ms`` + pts)."""
        pts = self.pts_ms(frame)
        return {"event_id": f"{stream_id}-{frame}", "ts": ts0_ms + pts, "stream_id": stream_id,
                "frame_index": frame, "pts_ms": pts,
                "image": {"data": base64.b64encode(self.png(frame)).decode(), "mime": "image/png"}}

    # -- ground truth ----------------------------------------------------------------------

    def truth(self, frame: int) -> list[tuple[str, XYXY]]:
        """``(shape name, box)`` of every shape drawn on ``frame``."""
        return [(s.name, b) for s in self.shapes if (b := s.box(frame)) is not None]

    def _seen(self, s: ShapePath, frames: list[int] | None, unseen_first: int) -> list[int]:
        frames = list(range(self.frames)) if frames is None else frames
        return [f for f in frames if s.box(f) is not None][unseen_first:]

    def crossings(self, frames: list[int] | None = None, unseen_first: int = 0
                  ) -> list[tuple[int, str, Literal["in", "out"]]]:
        """``(frame, shape, direction)`` of every crossing of the line seen on ``frames`` (default all):
        the centre is on the other side than on the shape's previous seen frame. ``unseen_first``
        leaves out each shape's first frames (a tracker gives no id before it confirms a track)."""
        out: list[tuple[int, str, Literal["in", "out"]]] = []
        for s in self.shapes:
            last: bool | None = None
            for f in self._seen(s, frames, unseen_first):
                cy = s.centre(f)[1]  # type: ignore[index]
                assert cy != self.line_y, f"{s.name} sits on the line at frame {f}: the truth would be ambiguous"
                above = cy < self.line_y
                if last is not None and above != last:
                    out.append((f, s.name, "in" if above else "out"))
                last = above
        return sorted(out)

    def visits(self, frames: list[int] | None = None, unseen_first: int = 0) -> list[tuple[str, int, int]]:
        """``(shape, first frame, last frame)`` of each stay of a shape's centre inside the zone,
        on the frames seen (default all; ``unseen_first`` as in :meth:`crossings`)."""
        x0, y0, x1, y1 = self.zone
        out = []
        for s in self.shapes:
            first = last = None
            for f in self._seen(s, frames, unseen_first):
                cx, cy = s.centre(f)  # type: ignore[misc]
                if x0 < cx < x1 and y0 < cy < y1:
                    first = f if first is None else first
                    last = f
                elif first is not None:
                    out.append((s.name, first, last))
                    first = last = None
            if first is not None:
                out.append((s.name, first, last))
        return out

    def video_config(self) -> dict[str, Any]:
        """The route's ``video:`` section with this clip's line and zone (centre anchors) for every stream."""
        x0, y0, x1, y1 = self.zone
        return {"tracker": {"frame_rate": self.fps},
                "streams": {"*": {
                    "lines": {"door": {"start": [0, self.line_y], "end": [self.width, self.line_y],
                                       "anchor": "center"}},
                    "zones": {"queue": {"polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "anchor": "center"}},
                }}}


def demo_clip() -> Clip:
    """120 frames at 25 fps, 320 x 240; five shapes:

    - ``a`` (red) crosses the zone left to right, never the line;
    - ``b`` (green) goes down across the line (``out``) from frame 30, hidden on frames 45-46 (above the line);
    - ``c`` (blue) goes up across the line (``in``) from frame 20 to 90;
    - ``d`` (red) comes down across the line (``out``), turns, and goes back up (``in``);
    - ``e`` (blue) comes into the zone from the right, stops there for 25 frames, and leaves.
    """
    return Clip(shapes=(
        ShapePath("a", 0, (30, 30), ((0, 22, 40), (119, 297, 40))),
        ShapePath("b", 1, (24, 24), ((30, 60, 22), (99, 60, 219)), hidden=frozenset({45, 46})),
        ShapePath("c", 2, (28, 20), ((20, 250, 225), (90, 250, 95))),
        ShapePath("d", 0, (26, 26), ((10, 160, 104), (40, 160, 210), (100, 160, 150), (119, 160, 104))),
        ShapePath("e", 2, (20, 20), ((50, 281, 70), (70, 201, 70), (95, 201, 70), (110, 251, 70))),
    ))


# -- the detector ------------------------------------------------------------------------

_DETECTOR_SOURCE = '''
import torch
from torch import Tensor


class ShapeDetector(torch.nn.Module):
    """Solid rectangles of three colours -> YOLO-shaped candidates (B, 4 + 3, cells)."""

    def __init__(self, cell: int = 4, hi: float = 0.6, lo: float = 0.35, score: float = 0.9) -> None:
        super().__init__()
        self.cell, self.hi, self.lo, self.score = cell, hi, lo, score

    def _runs(self, m: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        """First index and last index + 1 of the run of True through each element, along ``dim``."""
        n = m.shape[dim]
        shape = [1, 1, 1, 1]
        shape[dim] = n
        idx = torch.arange(n, device=m.device).view(shape).expand_as(m)
        neg = torch.full_like(idx, -1)
        start = torch.cummax(torch.where(m, neg, idx), dim=dim).values + 1
        back = torch.cummax(torch.where(m.flip([dim]), neg, idx), dim=dim).values
        return start, (n - 1 - back).flip([dim])

    def forward(self, im: Tensor) -> Tensor:
        r, g, b = im[:, 0], im[:, 1], im[:, 2]
        hi, lo = self.hi, self.lo
        m = torch.stack([(r > hi) & (g < lo) & (b < lo), (g > hi) & (r < lo) & (b < lo),
                         (b > hi) & (r < lo) & (g < lo)], 1)
        x1, x2 = self._runs(m, 3)
        y1, y2 = self._runs(m, 2)
        o, s = self.cell // 2, self.cell
        m = m[:, :, o::s, o::s]
        mf = m.float()
        cls = mf.argmax(1, keepdim=True)
        X1 = torch.gather(x1[:, :, o::s, o::s], 1, cls).float()
        X2 = torch.gather(x2[:, :, o::s, o::s], 1, cls).float()
        Y1 = torch.gather(y1[:, :, o::s, o::s], 1, cls).float()
        Y2 = torch.gather(y2[:, :, o::s, o::s], 1, cls).float()
        B = im.shape[0]
        box = torch.cat([(X1 + X2) / 2, (Y1 + Y2) / 2, X2 - X1, Y2 - Y1], 1) * mf.amax(1, keepdim=True)
        return torch.cat([box.reshape(B, 4, -1), (mf * self.score).reshape(B, 3, -1)], 1)
'''


def build_shape_detector(path: str | Path) -> Path:
    """Write the shape detector as an ultralytics TorchScript export to ``path`` (``*.torchscript``).

    Load it as any detection checkpoint: ``models: {detection: {task: detection, model: <path>,
    options: {imgsz: 320}}}``. Boxes score 0.9; labels are ``red``, ``green``, ``blue``.
    """
    import importlib.util
    import sys
    import tempfile
    import warnings

    import torch

    path = Path(path)
    if path.suffix != ".torchscript":
        raise ValueError(f"{path}: ultralytics loads TorchScript exports by the .torchscript suffix; name it so")
    # torch.jit.script needs the class's source in a file (inspect.getsource).
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "infertide_shape_detector.py"
        src.write_text(_DETECTOR_SOURCE)
        spec = importlib.util.spec_from_file_location("infertide_shape_detector", src)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[spec.name] = module  # type: ignore[union-attr]
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still what ultralytics loads
                scripted = torch.jit.script(module.ShapeDetector())
                meta = {"description": "infertide synthetic shape detector", "task": "detect", "stride": 32,
                        "batch": 1, "imgsz": [320, 320], "names": CLASS_NAMES, "channels": 3,
                        "args": {"dynamic": True, "nms": False}, "end2end": False}
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.jit.save(scripted, str(path), _extra_files={"config.txt": json.dumps(meta)})
        finally:
            sys.modules.pop(spec.name, None)  # type: ignore[union-attr]
    return path
