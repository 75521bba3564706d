"""The live dashboard in headless Chromium during a real run: numbers appear, change between two
bursts of events, detections are drawn on their images; a screenshot is left in ``artifacts/``."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from infertide.clients.produce import now_ms, produce_events
from schemas.events import ImageEvent, ImageRef, TextEvent
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(400)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is needed: apt-get install -y chromium (make system-deps installs it)")


def _browse(url: str, tmp: Path, *extra: str, timeout: float = 90) -> str:
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}",
           "--virtual-time-budget=5000", *extra, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _photo_jpeg(i: int) -> str:
    from skimage import data

    img = Image.fromarray([data.astronaut, data.coffee, data.chelsea][i % 3]()).resize((256, 256))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode()


def _burst(topology: Any, n: int, start: int) -> None:
    texts = [TextEvent(event_id=f"dash-t-{i}", ts=now_ms(), user_id=f"u{i % 4}", item_id=f"photo-{i % 6}",
                       text=("loved it, wonderful" if i % 3 else "awful and boring") + f" #{i}")
             for i in range(start, start + n)]
    images = [ImageEvent(event_id=f"dash-i-{i}", ts=now_ms(), user_id=f"u{i % 4}", item_id=f"photo-{i % 6}",
                         image=ImageRef(data=_photo_jpeg(i), mime="image/jpeg"))
              for i in range(start, start + n // 10)]
    produce_events(topology, "text", texts)
    produce_events(topology, "image", images)


def _route_numbers(dom: str, route: str) -> dict[str, str]:
    return {k: m.group(1) for k in ("in", "out", "dlq", "p50")
            if (m := re.search(rf'id="{k}-{route}"[^>]*>([^<]*)<', dom))}


def _wait_out(worker: Any, route: str, n: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = worker.get("/api/summary", timeout=10)
        except OSError:  # a busy worker on shared cores: ask again
            continue
        if status == 200:
            summary = orjson.loads(body)
            if summary["routes"].get(route, {}).get("out", 0) >= n:
                return summary
        time.sleep(0.5)
    pytest.fail(f"route {route} did not reach {n} results in {timeout}s:\n{worker.tail()}")


def test_dashboard_shows_live_numbers(stack: Stack, tmp_path: Path) -> None:
    topology, path = stack.topology("dash")
    worker = stack.worker(topology, path, "dash-worker").start()
    try:
        worker.wait_ready()
        status, html = worker.get("/dashboard")
        assert status == 200 and b"/api/summary" in html

        _burst(topology, 100, 0)
        first = _wait_out(worker, "text", 100)
        assert first["routes"]["text"]["latency_ms"]["p50"] is not None
        dom1 = _browse(worker.url + "/", tmp_path, "--dump-dom")
        n1 = _route_numbers(dom1, "text")
        assert n1.get("in") and int(n1["in"]) >= 100, dom1[-3000:]
        assert "poll " in dom1 and "live" in dom1

        _burst(topology, 200, 100)
        summary = _wait_out(worker, "text", 300)
        _wait_out(worker, "image", 30)
        dom2 = _browse(worker.url + "/dashboard", tmp_path, "--dump-dom")
        n2 = _route_numbers(dom2, "text")
        assert int(n2["in"]) >= 300 and int(n2["in"]) > int(n1["in"]), (n1, n2)
        assert _route_numbers(dom2, "image").get("out"), dom2[-3000:]
        assert 'class="det-count"' in dom2, "no detection drawn"
        assert summary["detections"] and summary["detections"][-1]["image"]["data"]

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        shot.unlink(missing_ok=True)
        _browse(worker.url + "/", tmp_path, f"--screenshot={shot}", "--window-size=1400,1000")
        assert shot.is_file() and shot.stat().st_size > 10_000
    finally:
        worker.stop()


def _wait_total(worker: Any, route: str, n: int, timeout: float = 120) -> dict[str, Any]:
    """The summary once the all-worker totals of ``route`` reached ``n`` results (then settled 2 s)."""
    _wait_out(worker, route, n, timeout)
    time.sleep(2)  # a late duplicate would show now
    return _wait_out(worker, route, n, 30)


def test_dashboard_totals_across_two_workers(stack: Stack, tmp_path: Path) -> None:
    from infertide.local.broker import free_port
    from infertide.local.runtime import WorkerProcess

    topology, path = stack.topology("dash2")
    w0 = stack.worker(topology, path, "dash2-w0").start()
    w1 = WorkerProcess(path, stack.ray_address, free_port(), stack.workdir / "dash2-w1.log", env=stack.env).start()
    try:
        w0.wait_ready()
        w1.wait_ready()  # both hold partitions of the same consumer group now
        n = 300
        produce_events(topology, "text", [TextEvent(event_id=f"two-{i}", ts=now_ms(), user_id=f"u{i % 4}",
                                                    text=f"a fine film #{i}") for i in range(n)])
        s0, s1 = _wait_total(w0, "text", n), _wait_total(w1, "text", n)
        for s in (s0, s1):
            text = s["routes"]["text"]
            assert (text["in"], text["out"], text["dlq"]) == (n, n, 0), text
            assert text["latency_ms"]["samples"] == n
        mine = (s0["routes"]["text"]["worker"]["in"], s1["routes"]["text"]["worker"]["in"])
        assert all(0 < m < n for m in mine) and sum(mine) == n, f"the work was not split: {mine}"
        users = [r["user_id"] for r in s0["recommendations"]]
        assert len(users) == len(set(users)), users
        dom = _browse(w0.url + "/", tmp_path, "--dump-dom")
        shown = _route_numbers(dom, "text")
        assert (shown.get("in"), shown.get("out"), shown.get("dlq")) == (str(n), str(n), "0"), shown
    finally:
        w0.stop()
        w1.stop()
