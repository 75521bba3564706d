"""Round trips through the real broker: ``infertide produce`` -> ``infertide tail``, and Debian's kcat both ways.

Each test uses its own topic names (a temp topology config), so tests do not see
each other's records.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import orjson
import pytest
import yaml

from infertide.clients.tail import read_topic
from schemas.codec import decode, encode
from schemas.events import TextEvent
from schemas.topology import TOPIC_ALIASES, default_topology_path, load_topology

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

CLI = str(Path(sys.executable).with_name("infertide"))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A copy of the default topology whose topics are unique to this test."""
    data = yaml.safe_load(default_topology_path().read_text())
    prefix = f"t{uuid.uuid4().hex[:8]}"
    data["topics"] = {**data.get("topics", {}), **{a: f"{prefix}.{a}" for a in TOPIC_ALIASES}, "partitions": 2}
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(config: Path, bootstrap: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CLI, "--config", str(config), *args, "--bootstrap", bootstrap],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"infertide {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def tail_raw(config: Path, bootstrap: str, topic: str, n: int) -> list[dict]:
    out = cli(config, bootstrap, "tail", topic, "--from-beginning", "--raw", "--max", str(n), "--timeout", "15")
    return [orjson.loads(line) for line in out.stdout.splitlines() if line.strip()]


def kcat() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.fail("kcat is required (an independent Kafka client): apt-get install -y kcat, or make system-deps")
    return path


def test_topics_create_is_idempotent_and_listed(config: Path, kafka_bootstrap: str) -> None:
    n = len(TOPIC_ALIASES)  # every topic the topology names
    first = cli(config, kafka_bootstrap, "topics", "create")
    assert f"created {n}:" in first.stdout
    second = cli(config, kafka_bootstrap, "topics", "create")
    assert "created 0" in second.stdout and f"already there {n}" in second.stdout
    listed = cli(config, kafka_bootstrap, "topics", "list")
    assert "missing" not in listed.stdout and listed.stdout.count(" 2 ") >= n


def test_text_roundtrip(config: Path, kafka_bootstrap: str, tmp_path: Path) -> None:
    cli(config, kafka_bootstrap, "topics", "create")
    lines = tmp_path / "lines.txt"
    lines.write_text("from a file\n\nsecond line, ünïcode ✓\n")
    cli(config, kafka_bootstrap, "produce", "text", "great film", "awful plot", "--user", "u1", "--count", "2")
    cli(config, kafka_bootstrap, "produce", "text", "--file", str(lines), "--item", "item-9")
    got = tail_raw(config, kafka_bootstrap, "text", 6)
    assert len(got) == 6
    events = [decode(orjson.dumps(e), "text.v1") for e in got]
    assert sorted(e.text for e in events) == sorted(
        ["great film", "awful plot"] * 2 + ["from a file", "second line, ünïcode ✓"])
    assert {e.user_id for e in events if e.item_id is None} == {"u1"}
    assert {e.item_id for e in events if e.user_id is None} == {"item-9"}
    assert len({e.event_id for e in events}) == 6


def test_image_roundtrip_inline_and_uri(config: Path, kafka_bootstrap: str, tmp_path: Path) -> None:
    cli(config, kafka_bootstrap, "topics", "create")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((32, 48, 3), i * 60, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    cli(config, kafka_bootstrap, "produce", "image", str(folder))
    cli(config, kafka_bootstrap, "produce", "image", str(folder / "img0.png"), "--uri")
    got = [decode(orjson.dumps(e), "image.v1") for e in tail_raw(config, kafka_bootstrap, "image", 4)]
    inline = {e.item_id: e for e in got if e.image.data is not None}
    assert sorted(inline) == ["img0.png", "img1.png", "img2.png"]
    for name, event in inline.items():
        assert base64.b64decode(event.image.data) == (folder / name).read_bytes()
        assert event.image.mime == "image/png"
    [by_ref] = [e for e in got if e.image.uri is not None]
    assert by_ref.image.uri == (folder / "img0.png").resolve().as_uri()


def _video(path: Path, frames: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(frames):
        writer.write(np.full((48, 64, 3), (i * 8) % 256, np.uint8))
    writer.release()
    return path


def test_video_file_sampled_and_frame_folder(config: Path, kafka_bootstrap: str, tmp_path: Path) -> None:
    cli(config, kafka_bootstrap, "topics", "create")
    clip = _video(tmp_path / "clip.mp4", frames=30, fps=30.0)  # 1 s of video
    cli(config, kafka_bootstrap, "produce", "video", str(clip), "--fps", "5", "--stream-id", "cam-1")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"f{i:03d}.png"), np.full((20, 20, 3), i * 50, np.uint8))
    cli(config, kafka_bootstrap, "produce", "video", str(frames), "--stream-id", "cam-2", "--source-fps", "10")
    got = [decode(orjson.dumps(e), "video_frame.v1") for e in tail_raw(config, kafka_bootstrap, "video", 9)]
    cam1 = [e for e in got if e.stream_id == "cam-1"]
    cam2 = [e for e in got if e.stream_id == "cam-2"]
    assert [e.frame_index for e in cam1] == [0, 6, 12, 18, 24]  # keyed by stream: one partition, in order
    assert [e.pts_ms for e in cam1] == [0, 200, 400, 600, 800]
    assert [(e.frame_index, e.pts_ms) for e in cam2] == [(0, 0), (1, 100), (2, 200), (3, 300)]
    for e in got:
        assert e.image.mime == "image/jpeg"
        img = cv2.imdecode(np.frombuffer(base64.b64decode(e.image.data), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[2] == 3


def test_kcat_produces_events_the_codec_decodes(config: Path, kafka_bootstrap: str) -> None:
    cli(config, kafka_bootstrap, "topics", "create")
    topology = load_topology(config).with_bootstrap(kafka_bootstrap)
    events = [TextEvent(event_id=f"k{i}", ts=1735689600000 + i, item_id=f"item-{i % 3}", text=f"from kcat {i}")
              for i in range(20)]
    lines = b"".join(e.item_id.encode() + b"\t" + encode(e) + b"\n" for e in events)
    subprocess.run([kcat(), "-P", "-b", kafka_bootstrap, "-t", topology.topics.text, "-K", "\t"],
                   input=lines, check=True, timeout=60)
    records = read_topic(topology, "text", max_records=20, idle_timeout_s=15)
    assert all(r.error is None for r in records)
    assert sorted((r.event for r in records), key=lambda e: e.ts) == events
    assert all(r.key == r.event.item_id.encode() for r in records)
    assert len(tail_raw(config, kafka_bootstrap, "text", 20)) == 20  # and through the CLI


def test_kcat_consumes_events_from_infertide_produce(config: Path, kafka_bootstrap: str, tmp_path: Path) -> None:
    cli(config, kafka_bootstrap, "topics", "create")
    topology = load_topology(config)
    cli(config, kafka_bootstrap, "produce", "text", "one", "two", "three", "--item", "item-1")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cli(config, kafka_bootstrap, "produce", "image", str(tmp_path / "a.png"))
    for topic, schema, n in [(topology.topics.text, "text.v1", 3), (topology.topics.image, "image.v1", 1)]:
        out = subprocess.run([kcat(), "-C", "-b", kafka_bootstrap, "-t", topic, "-e", "-o", "beginning", "-q",
                              "-f", "%k\t%s\n"], capture_output=True, check=True, timeout=60).stdout
        rows = [line.split(b"\t", 1) for line in out.splitlines() if line]
        assert len(rows) == n
        decoded = [(key, decode(value, schema)) for key, value in rows]
        if schema == "text.v1":
            assert sorted(e.text for _, e in decoded) == sorted(["one", "two", "three"])
            assert {key for key, _ in decoded} == {b"item-1"}
        else:
            [(key, event)] = decoded
            assert key == b"a.png" and base64.b64decode(event.image.data) == (tmp_path / "a.png").read_bytes()


def test_tail_reports_undecodable_records(config: Path, kafka_bootstrap: str) -> None:
    cli(config, kafka_bootstrap, "topics", "create")
    topology = load_topology(config)
    subprocess.run([kcat(), "-P", "-b", kafka_bootstrap, "-t", topology.topics.text],
                   input=b'{"event_id": "x", "ts": "soon", "text": "hi"}\n', check=True, timeout=60)
    proc = cli(config, kafka_bootstrap, "tail", "text", "--from-beginning", "--raw", "--max", "1", "--timeout", "15")
    assert proc.stdout == ""
    assert "undecodable" in proc.stderr and "'ts'" in proc.stderr
