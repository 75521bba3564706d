"""What ``infertide demo`` runs: the topology (the user's, or tiny local models), the sample events, the wait."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from infertide.demo.topology import on_own_topics, video_route
from schemas.topology import Topology, load_topology, parse_topology

__all__ = ["demo_topology", "produce_samples", "wait_for_results"]


def demo_topology(config: Path | None, cache: Path) -> tuple[Topology, dict[str, str], list[str]]:
    """The topology to run, the env for its models, and the models that did not resolve (tiny models then)."""
    from infertide.demo.tiny_models import offline_env, tiny_topology_dict
    from infertide.local.preflight import checkpoint_problems

    if config is not None:
        topology = load_topology(config)
        missing = checkpoint_problems(topology)
        if not missing:
            return topology, {}, []
    else:
        missing = ["topologies/default.yaml models: distilbert SST-2, yolo11n.pt, CLIP ViT-B/32"]
    env = offline_env(cache / "env")
    d = tiny_topology_dict(cache / "models", max_batch_size=16, batch_wait_timeout_s=0.02)
    d["name"] = "infertide-demo"
    d = on_own_topics(d, prefix="demo", bootstrap="127.0.0.1:9092", partitions=2, group=f"demo-{int(time.time())}")
    d["routes"].append(video_route(max_in_flight=2))
    d["analytics"] = {"window_s": 5}
    d["recommendations"] = {"top_k": 3, "item_pool_size": 100}
    return parse_topology(d, "<demo>"), env, missing


def produce_samples(topology: Topology, cache: Path) -> dict[str, int]:
    """Send the sample photos, clip frames and reviews to the routes that take them; events sent per route."""
    from infertide.clients.produce import produce_events, video_frame_events
    from infertide.demo.data import demo_images, demo_texts, demo_video, image_events_for_users

    images = image_events_for_users(demo_images(cache / "demo" / "images"))
    texts = demo_texts()
    frames = list(video_frame_events(demo_video(cache / "demo" / "clip"), stream_id="demo-clip", source_fps=12,
                                     user_id="ana", source="demo"))
    sent = {}
    routes = {r.input: r.name for r in topology.routes}
    for alias, events in (("image", images), ("text", texts), ("video", frames)):
        if alias in routes:
            produce_events(topology, alias, events)
            sent[routes[alias]] = len(events)
    return sent


def wait_for_results(stack: Any, sent: dict[str, int], timeout: float) -> dict[str, Any] | None:
    """Until every route consumed what was sent and answered for it (results, DLQ or sampled out)."""
    deadline = time.monotonic() + timeout
    summary = None
    while time.monotonic() < deadline:
        summary = stack.get_json("/api/summary") or summary
        routes = (summary or {}).get("routes", {})
        if all(routes.get(r, {}).get("in", 0) >= n for r, n in sent.items()) and \
                all(routes[r]["out"] + routes[r]["dlq"] > 0 for r in sent) and (summary or {}).get("recommendations"):
            time.sleep(min(3.0, max(0.0, deadline - time.monotonic())))  # let the last recommendations land
            return stack.get_json("/api/summary") or summary
        time.sleep(0.5)
    return summary
