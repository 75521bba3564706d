"""The Kubernetes path on one machine: a Ray head started the way KubeRay starts it (``ray start --head``
with the RayService's rayStartParams), the generated ``serveConfigV2`` deployed with ``serve deploy``
through the dashboard's REST API (what KubeRay does), and a stream worker started as the Faust
Deployment starts it (``infertide worker``, ``RAY_ADDRESS`` = the head's GCS port): events in, results out.

Where this differs from the cluster, and why: the head keeps 2 CPUs (on Kubernetes a worker group hosts
the replicas; here there is one machine), and the stream worker connects as a driver on the head's node
instead of joining as a zero-CPU node (``INFERTIDE_RAY_JOIN=1``): Ray 2.60 refuses ``ray start --address``
while ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps it on loopback, and with it on, it rewrites
127.0.0.1 to the host's address and retries forever. The test also times the handle against Serve's
HTTP ingress on the same items (``infertide.bench.transport``), the transport that needs no join.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from infertide.clients.admin import ensure_topics
from infertide.local.broker import free_port
from infertide.clients.produce import produce_texts
from infertide.local.runtime import WorkerProcess, local_env
from infertide.demo.tiny_models import tiny_topology_dict
from infertide.demo.topology import on_own_topics
from schemas.topology import parse_topology
from tests.e2e.conftest import read_topic
from workers.app import serve_deploy_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(360)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Head:
    gcs: str
    dashboard: str
    temp_dir: str
    env: dict[str, str]


def _cluster_procs(temp_dir: str) -> list[psutil.Process]:
    """Every process of the cluster: those naming its temp dir, and their descendants (replicas, agents)."""
    roots = []
    for p in psutil.process_iter(["cmdline"]):
        if any(temp_dir in arg for arg in p.info["cmdline"] or []):
            roots.append(p)
    found = {p.pid: p for p in roots}
    for p in roots:
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return list(found.values())


def _stop_cluster(temp_dir: str) -> None:
    procs = _cluster_procs(temp_dir)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=10)


def _start_head(env: dict[str, str]) -> tuple[Head | None, str]:
    # Short: Ray's unix socket paths live under it (108-byte limit); own: /tmp/ray is shared.
    temp_dir = tempfile.mkdtemp(prefix="kr", dir="/tmp")
    gcs, dash = free_port(), free_port()
    # k8s/base/rayservice.yaml rayStartParams: dashboard on (serveConfigV2 goes through its REST API),
    # metrics export port; here on loopback, with CPUs for the replicas.
    cmd = [str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--node-ip-address=127.0.0.1",
           f"--metrics-export-port={free_port()}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        return None, proc.stdout[-2000:] + proc.stderr[-2000:]
    return Head(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", temp_dir, env), ""


@pytest.fixture(scope="module")
def ray_head(offline_model_env: dict[str, str]) -> Iterator[Head]:
    env = local_env({**offline_model_env, "PYTHONPATH": str(ROOT), "PATH": f"{BIN}:{os.environ['PATH']}"})
    head, why = _start_head(env)
    if head is None:  # once: free_port() can race with other processes on a shared machine
        head, why = _start_head(env)
    assert head is not None, f"ray start --head failed twice:\n{why}"
    try:
        yield head
    finally:
        _stop_cluster(head.temp_dir)
        assert not _cluster_procs(head.temp_dir), "Ray processes left running"
        shutil.rmtree(head.temp_dir, ignore_errors=True)


def _app_status(dashboard: str, app: str) -> str:
    try:
        with urllib.request.urlopen(f"{dashboard}/api/serve/applications/", timeout=5) as resp:  # noqa: S310
            return json.loads(resp.read())["applications"].get(app, {}).get("status", "ABSENT")
    except OSError:
        return "UNREACHABLE"


def test_kuberay_style_head_serve_deploy_and_stream_worker(ray_head: Head, kafka_bootstrap: str,
                                                           tiny_models_dir: Path, tmp_path: Path) -> None:
    prefix = f"kr{uuid.uuid4().hex[:8]}"
    d = tiny_topology_dict(tiny_models_dir)
    d["models"] = {"sentiment": d["models"]["sentiment"]}
    d["routes"] = [r for r in d["routes"] if r["name"] == "text"]
    d = on_own_topics(d, prefix=prefix, bootstrap=kafka_bootstrap, partitions=2, group=prefix)
    d["web_port"] = free_port()
    config = tmp_path / "topology.yaml"  # what the ConfigMap mounts at /etc/infertide/topology.yaml
    config.write_text(yaml.safe_dump(d, sort_keys=False))
    topology = parse_topology(d, str(config))
    ensure_topics(topology)

    # serveConfigV2 from the same generator as k8s/base/rayservice-serve-config.yaml.
    http_port = free_port()
    serve_cfg = serve_deploy_config(topology, str(config)) | {"http_options": {"host": "127.0.0.1",
                                                                                  "port": http_port}}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve_cfg))
    t0 = time.monotonic()
    deploy = subprocess.run([str(BIN / "serve"), "deploy", str(tmp_path / "serve.yaml"), "--address",
                             ray_head.dashboard], env=ray_head.env, capture_output=True, text=True, timeout=120)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    deadline = time.monotonic() + 180
    while (status := _app_status(ray_head.dashboard, topology.serve_app_name)) != "RUNNING":
        assert status not in ("DEPLOY_FAILED", "UNHEALTHY"), status
        assert time.monotonic() < deadline, f"Serve app {status} after 180 s"
        time.sleep(1)
    deployed_s = time.monotonic() - t0

    # The stream worker as the Faust Deployment runs it: `infertide worker`, RAY_ADDRESS from the env.
    t1 = time.monotonic()
    worker = WorkerProcess(config, ray_head.gcs, topology.web_port, tmp_path / "worker.log",
                           env={**ray_head.env, "RAY_ADDRESS": ray_head.gcs}).start()
    try:
        worker.wait_ready(120)
        ready_s = time.monotonic() - t1
        texts = [f"event {i}: a great film" for i in range(200)]
        produce_texts(topology, texts)
        results = read_topic(kafka_bootstrap, topology.topics.sentiment, until=lambda r: len(r) >= len(texts),
                             timeout=90)
        assert len({r[2]["event_id"] for r in results}) == len(texts), worker.tail()
        assert {r[2]["label"] for r in results} <= {"POSITIVE", "NEGATIVE"}
        worker_rss_mb = psutil.Process(worker.proc.pid).memory_info().rss / 1e6
    finally:
        assert worker.stop(30) == 0, worker.tail()

    bench = subprocess.run([sys.executable, "-m", "infertide.bench.transport", "--ray-address", ray_head.gcs,
                            "--http", f"http://127.0.0.1:{http_port}", "--calls", "100", "--batch", "32"],
                           env=ray_head.env, capture_output=True, text=True, timeout=180)
    assert bench.returncode == 0, bench.stderr
    timing = json.loads(bench.stdout.strip().splitlines()[-1])
    assert timing["http"]["items_per_s"] > 0 and timing["handle"]["items_per_s"] > 0
    print(json.dumps({"serve_deploy_to_running_s": round(deployed_s, 1), "worker_ready_s": round(ready_s, 1),
                      "worker_rss_mb": round(worker_rss_mb), "transport": timing}))
