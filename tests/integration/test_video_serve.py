"""The demo clip through the Serve application built from a topology with a video route: the shape
detector is named by path like any checkpoint, and its boxes, tracked per stream, give 0 id
switches and the clip's true crossings."""

from __future__ import annotations

import base64
import os
import socket
from collections import defaultdict

import pytest
import yaml

from infertide.demo.shapes import build_shape_detector, demo_clip
from tests.fixtures.video import id_switches, shape_at

pytestmark = pytest.mark.ray

CLIP = demo_clip()


@pytest.fixture(scope="module")
def video_app(tmp_path_factory, offline_model_env):
    ray = pytest.importorskip("ray")
    from ray import serve

    from schemas.topology import load_topology
    from workers.app import build_app

    root = tmp_path_factory.mktemp("video")
    detector = build_shape_detector(root / "shapes.torchscript")
    path = root / "video.yaml"
    path.write_text(yaml.safe_dump({
        "name": "infertide-video",
        "models": {"detection": {"task": "detection", "model": str(detector), "options": {"imgsz": 320},
                                 "num_cpus": 0.5, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}}},
        "routes": [{"name": "cameras", "input": "video", "kind": "video", "models": ["detection"],
                    "video": CLIP.video_config()}],
    }))
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False, log_to_driver=False)
    topo = load_topology(path)
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"config": str(path)}), name=topo.serve_app_name, route_prefix="/")
        yield topo
    finally:
        serve.shutdown()
        ray.shutdown()


async def test_clip_through_the_deployment_is_tracked_and_counted(video_app) -> None:
    from ray import serve

    from topologies.video import VideoStreams

    handle = serve.get_deployment_handle("detection", app_name=video_app.serve_app_name)
    events = [CLIP.event(f, "cam-1") for f in range(CLIP.frames)]
    replies = []
    for i in range(0, len(events), 16):  # one call per micro-batch, as the route engine sends them
        replies += await handle.infer.remote([{"data": e["image"]["data"], "uri": None} for e in events[i:i + 16]])
    assert all(r["ok"] for r in replies)
    video = VideoStreams(video_app.routes[0].video)
    ids: defaultdict[str, list] = defaultdict(list)
    crossings = []
    for e, r in zip(events, replies):
        vf = video.process(e["stream_id"], e["frame_index"], e["pts_ms"], e["ts"], r["result"]["boxes"])
        owner = {}
        for b in vf.boxes:
            name = shape_at(CLIP, e["frame_index"], b["xyxy"])
            ids[name].append(b["track_id"])
            owner[b["track_id"]] = name
        crossings += [(e["frame_index"], owner[c.track_id], c.direction) for c in vf.zones.crossings]
    assert id_switches(dict(ids)) == 0
    assert crossings == CLIP.crossings()
    assert base64.b64decode(events[0]["image"]["data"])[:4] == b"\x89PNG"
