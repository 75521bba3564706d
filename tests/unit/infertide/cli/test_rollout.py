"""``infertide rollout status`` against a stand-in worker serving ``/api/rollout``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import yaml
from typer.testing import CliRunner

from infertide.cli import app
from topologies.rollout import fold, report

VIEW = {"rollouts": {"text/sentiment": {"route": "text", "model": "sentiment", "current": None, "closed": {
    "window_start": 0, "window_end": 2000,
    **report(fold("sentiment", answers=[("canary", {"label": "POSITIVE", "score": 0.9}, 12.0)] * 3,
                  pairs=[("next", {"label": "POSITIVE", "score": 0.9}, {"label": "NEGATIVE", "score": 0.2})] * 2))}}}}


def test_status_prints_variants_and_shadows_from_a_worker(tmp_path: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps(VIEW).encode() if self.path == "/api/rollout" else b"{}"
            self.send_response(200 if self.path == "/api/rollout" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({"models": {"sentiment": {"task": "sentiment", "model": "x"}},
                                      "routes": [{"name": "text", "input": "text", "kind": "text",
                                                  "models": ["sentiment"]}]}))
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        out = CliRunner().invoke(app, ["rollout", "status", "--worker", url, "--config", str(config)],
                                 env={"COLUMNS": "200"})
        assert out.exit_code == 0, out.output
        assert "text/sentiment" in out.output and "canary" in out.output and "next" in out.output
        assert "0.00%" in out.output  # the shadow's agreement
        js = CliRunner().invoke(app, ["rollout", "status", "--worker", url, "--json", "--config", str(config)])
        assert json.loads(js.output)["rollouts"]["text/sentiment"]["closed"]["shadows"]["next"]["pairs"] == 2
    finally:
        server.shutdown()
    down = CliRunner().invoke(app, ["rollout", "status", "--worker", "http://127.0.0.1:9", "--config", str(config)])
    assert down.exit_code == 1 and "--from-topic" in down.output
