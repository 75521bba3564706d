"""The demo clip through the detection model, loaded like any checkpoint: the TorchScript shape
detector finds every drawn box exactly, and tracking its output over the clip, with the worker
replaced mid-clip, gives 0 id switches, the true crossings, and dwell times within one frame."""

from __future__ import annotations

import base64
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from infertide.demo.shapes import build_shape_detector, demo_clip
from schemas.topology import ModelConfig
from schemas.video import VideoConfig
from tests.fixtures.video import id_switches, shape_at
from topologies.video import VideoStreams
from workers.checkpoints import Checkpoint, locate

CLIP = demo_clip()
DT = 1000 / CLIP.fps


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shape_detector(tmp_path_factory.mktemp("shapes") / "shapes.torchscript")


@pytest.fixture(scope="module")
def replies(detector_path: Path, offline_model_env: dict[str, str]) -> list[dict[str, Any]]:
    """Every frame of the clip through the detection model's batch entry point (what a replica runs)."""
    from workers.detection import DetectionModel

    model = DetectionModel(ModelConfig(task="detection", model=str(detector_path), options={"imgsz": 320}))
    items = [{"data": base64.b64encode(CLIP.png(f)).decode(), "uri": None} for f in range(CLIP.frames)]
    out: list[dict[str, Any]] = []
    for i in range(0, len(items), 16):
        out += model.run_batch(items[i:i + 16])
    return out


def test_preflight_takes_a_torchscript_export(detector_path: Path) -> None:
    found = locate(Checkpoint("detection", "detection", str(detector_path)))
    assert found.ok and found.version and found.version.startswith("sha256:"), found.problem


def test_detector_finds_every_shape_exactly(replies: list[dict[str, Any]]) -> None:
    assert all(r["ok"] for r in replies)
    assert replies[0]["model"]["version"].startswith("sha256:")
    for f, r in enumerate(replies):
        got = sorted((tuple(b["xyxy"]), b["label"]) for b in r["result"]["boxes"])
        want = sorted((tuple(float(v) for v in box), CLIP.names[next(s.class_id for s in CLIP.shapes if s.name == n)])
                      for n, box in CLIP.truth(f))
        assert got == want, f
        assert all(b["score"] == pytest.approx(0.9) for b in r["result"]["boxes"])


def test_tracked_clip_with_a_worker_replaced_mid_clip(replies: list[dict[str, Any]]) -> None:
    cfg = VideoConfig.model_validate(CLIP.video_config())
    ids: defaultdict[str, list[int | None]] = defaultdict(list)
    crossings, visits = [], []
    vs = VideoStreams(cfg)
    for f, r in enumerate(replies):
        if f == 64:  # the worker dies between commits; a new one restores the stream's last snapshot
            snap = vs.snapshot("cam")
            vs = VideoStreams(cfg)
            vs.restore("cam", snap)
        vf = vs.process("cam", f, CLIP.pts_ms(f), 1_700_000_000_000 + CLIP.pts_ms(f), r["result"]["boxes"])
        owner = {}
        for b in vf.boxes:
            ids[shape_at(CLIP, f, b["xyxy"])].append(b["track_id"])
            owner[b["track_id"]] = shape_at(CLIP, f, b["xyxy"])
        crossings += [(f, owner[c.track_id], c.direction) for c in vf.zones.crossings]
        visits += vf.zones.visits
    assert id_switches(dict(ids)) == 0
    assert crossings == CLIP.crossings()
    truth = {name: (last - first) * DT for name, first, last in CLIP.visits()}
    name_of = {tid: n for n, seq in ids.items() for tid in seq if tid is not None}
    dwell = {name_of[v.track_id]: v.dwell_ms for v in visits + vs.zones.open_visits("cam")}
    assert dwell.keys() == truth.keys() and len(visits) == len(truth)
    assert all(abs(dwell[n] - truth[n]) <= DT for n in truth), (dwell, truth)
