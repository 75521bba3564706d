"""Checkpoint preflight: where a model comes from, why it cannot load (one line with the fix), and the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from schemas.topology import ModelConfig, default_topology_path, load_topology
from workers.checkpoints import Checkpoint, CheckpointError, locate

ROOT = Path(__file__).resolve().parents[3]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cp(task: str, source: str, name: str = "m") -> Checkpoint:
    return Checkpoint(name, task, source)


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "infertide", *args], capture_output=True, text=True,
                          env=full, timeout=timeout, cwd=ROOT)


def _fake_hub_cache(cache: Path, repo: str, src: Path) -> Path:
    """The Hugging Face cache layout (refs/main -> snapshots/<commit>) holding ``src``'s files."""
    entry = cache / ("models--" + repo.replace("/", "--"))
    snap = entry / "snapshots" / COMMIT
    shutil.copytree(src, snap, ignore=shutil.ignore_patterns(".infertide-*"))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(COMMIT)
    return snap


def test_kinds() -> None:
    assert _cp("echo", "").kind == "none"
    assert _cp("detection", "yolo11n.yaml").kind == "architecture"
    assert _cp("detection", "yolo11n.pt").kind == "ultralytics"
    assert _cp("sentiment", "org/name").kind == "hub"
    assert _cp("sentiment", "./no/such/dir").kind == "path"


def test_offline_hub_id_not_cached_is_one_line_with_the_fix() -> None:
    found = locate(_cp("sentiment", "nobody/not-a-cached-model", "sentiment"))
    assert not found.ok
    line = found.problem
    assert "\n" not in line
    for part in ("'sentiment'", "nobody/not-a-cached-model", "not in the Hugging Face cache", "HF_HUB_OFFLINE=1",
                 "fix:", "infertide models pull", "--tiny"):
        assert part in line, (part, line)


def test_missing_path_and_wrong_kind() -> None:
    assert "does not exist" in locate(_cp("sentiment", "./no/such/checkpoint")).problem
    wrong = locate(_cp("detection", "org/some-bert")).problem
    assert "wrong kind of checkpoint for task detection" in wrong and "ultralytics" in wrong
    assert "wrong kind" in locate(_cp("tagging", "yolo11n.pt")).problem


def test_local_checkpoint_of_the_wrong_task(tiny_models_dir: Path) -> None:
    clip = str(tiny_models_dir / "tiny-clip")
    problem = locate(_cp("sentiment", clip, "sentiment")).problem
    assert "not a sequence classifier" in problem and "fix: set `models.sentiment.model`" in problem
    ok = locate(_cp("tagging", clip))
    assert ok.ok and ok.version.startswith("sha256:") and ok.size > 0


def test_replica_load_error_carries_the_same_line(tiny_models_dir: Path) -> None:
    from workers.sentiment import SentimentModel

    cfg = ModelConfig(task="sentiment", model=str(tiny_models_dir / "tiny-clip"))
    with pytest.raises(CheckpointError, match=r"model 'sentiment' \(sentiment\): .*not a sequence classifier"):
        SentimentModel(cfg, name="sentiment")
    cfg = ModelConfig(task="sentiment", model="nobody/not-cached")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1 forbids downloading; fix:"):
        SentimentModel(cfg, name="sentiment")


def test_models_list_reads_the_hub_cache(tmp_path: Path, tiny_models_dir: Path) -> None:
    snap = _fake_hub_cache(tmp_path / "hub", "acme/tiny-sentiment", tiny_models_dir / "tiny-sentiment")
    cfg = {"name": "t", "models": {"sentiment": {"task": "sentiment", "model": "acme/tiny-sentiment"},
                                   "detection": {"task": "detection", "model": "yolo11n.yaml"}},
           "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"]}]}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = _cli("--config", str(path), "models", "list", env={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert out.returncode == 0, out.stderr
    assert "cached" in out.stdout and COMMIT[:7] in out.stdout and "random-init" in out.stdout
    from workers.sentiment import SentimentModel  # the cached id loads through from_pretrained, offline

    assert SentimentModel(ModelConfig(task="sentiment", model=str(snap)), name="s").run_batch(["good"])[0]["ok"]


def test_up_offline_fails_in_seconds_before_starting_anything() -> None:
    t0 = time.monotonic()
    out = _cli("up", env={"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1"})
    took = time.monotonic() - t0
    assert out.returncode == 1
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("model '")]
    assert {ln.split("'")[1] for ln in lines} == set(load_topology(default_topology_path()).models), out.stderr
    assert all("fix:" in ln for ln in lines)
    assert "Kafka" not in out.stderr and "Ray" not in out.stderr  # nothing was started
    assert took < 20, took


def test_models_pull_offline_fails_cleanly_and_help_is_useful() -> None:
    out = _cli("models", "pull", "sentiment", env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 1
    assert "HF_HUB_OFFLINE=1 is set; fix: run again without HF_HUB_OFFLINE" in out.stderr
    assert "Traceback" not in out.stderr
    assert _cli("models", "pull", "nope").returncode == 2
    help_text = _cli("models", "pull", "--help").stdout
    assert "Hugging Face" in help_text and "ultralytics" in help_text and "Examples" in help_text


def test_with_tiny_models_keeps_topics_and_routes(tiny_models_dir: Path) -> None:
    from infertide.demo.tiny_models import with_tiny_models

    top = load_topology(default_topology_path())
    tiny = with_tiny_models(top, tiny_models_dir)
    assert tiny.routes == top.routes and tiny.topics == top.topics
    assert all(locate(Checkpoint.of(n, m)).ok for n, m in tiny.models.items())
