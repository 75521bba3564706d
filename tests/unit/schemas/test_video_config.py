"""The ``video:`` section of a route: valid configs load; wrong ones fail naming the key and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.topology import ConfigError, parse_topology
from schemas.video import StreamGeometry, VideoConfig


def _topology(video: Any, kind: str = "video", models: list[str] | None = None) -> dict[str, Any]:
    return {
        "models": {"detection": {"task": "detection", "model": "yolo11n.yaml"},
                   "tagging": {"task": "tagging", "model": "some/clip"}},
        "routes": [{"name": "cams", "input": "video", "kind": kind, "models": models or ["detection"],
                    "video": video}],
    }


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_topology(data, "test.yaml")
    return str(info.value)


GEOMETRY = {"lines": {"door": {"start": [0, 120], "end": [320, 120]}},
            "zones": {"queue": {"polygon": [[10, 10], [150, 10], [150, 110], [10, 110]]}}}


def test_video_section_loads_with_defaults() -> None:
    topo = parse_topology(_topology({"streams": {"cam-1": GEOMETRY}}))
    video = topo.routes[0].video
    assert video is not None
    assert video.tracker.frame_rate == 30.0 and video.tracker.lost_track_seconds == 1.0
    assert video.streams["cam-1"].lines["door"].anchor == "bottom_center"
    assert video.geometry("cam-1").zones["queue"].polygon[2] == (150.0, 110.0)
    assert video.geometry("cam-2") == StreamGeometry()  # no entry, no "*": nothing counted


def test_star_is_every_stream_without_its_own_entry() -> None:
    video = VideoConfig.model_validate({"streams": {"*": GEOMETRY, "cam-9": {}}})
    assert set(video.geometry("anything").lines) == {"door"}
    assert video.geometry("cam-9").lines == {}


def test_routes_without_video_are_unchanged() -> None:
    data = _topology(None)
    del data["routes"][0]["video"]
    assert parse_topology(data).routes[0].video is None


def test_video_on_an_image_route_names_the_fix() -> None:
    msg = _error(_topology({}, kind="image"))
    assert "routes.0" in msg and "set `kind: video` or remove `video:`" in msg


def test_video_needs_a_detection_model() -> None:
    msg = _error(_topology({}, models=["tagging"]))
    assert "no detection model to track" in msg and "models: [detection]" in msg


@pytest.mark.parametrize(("video", "key", "fix"), [
    ({"streams": {"c": {"lines": {"door": {"start": [5, 5], "end": [5, 5]}}}}},
     "routes.0.video.streams.c.lines.door", "a line needs two different points"),
    ({"streams": {"c": {"zones": {"z": {"polygon": [[0, 0], [10, 10], [20, 20]]}}}}},
     "routes.0.video.streams.c.zones.z", "encloses no area"),
    ({"streams": {"c": {"zones": {"z": {"polygon": [[0, 0], [10, 10]]}}}}},
     "routes.0.video.streams.c.zones.z.polygon", "at least 3"),
    ({"streams": {"c": {"lines": {"a.b": {"start": [0, 0], "end": [1, 1]}}}}},
     "routes.0.video.streams.c", "line name 'a.b': use 1-64 letters, digits, '_' or '-'"),
    ({"streams": {"c": {"lines": {"door": {"start": [0, 0], "end": [1, 1], "anchor": "middle"}}}}},
     "routes.0.video.streams.c.lines.door.anchor", "bottom_center"),
    ({"tracker": {"lost_track_bufer": 10}}, "routes.0.video.tracker.lost_track_bufer", "did you mean 'lost_track_buffer'"),
    ({"tracker": {"track_activation_threshold": 1.5}}, "routes.0.video.tracker.track_activation_threshold",
     "less than or equal to 1"),
])
def test_wrong_geometry_names_key_and_fix(video: dict[str, Any], key: str, fix: str) -> None:
    msg = _error(_topology(video))
    assert key in msg and fix in msg, msg


def test_the_example_in_docs_video_md_loads() -> None:
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[3] / "docs" / "video.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    routes = yaml.safe_load(block)["routes"]
    topo = parse_topology({"models": {"detection": {"task": "detection", "model": "yolo11n.yaml"}}, "routes": routes})
    video = topo.routes[0].video
    assert video is not None and video.tracker.frame_rate == 25 and set(video.geometry("cam-1").zones) == {"queue"}
