"""``limits.image_uris``: prefixes compared by parsed parts, and config errors that name the key and the fix."""

from __future__ import annotations

import pytest
import yaml

from schemas.image_uris import parse_prefix, url_parts
from schemas.topology import ConfigError, default_topology_path, parse_topology
from workers.app import model_user_config


@pytest.mark.parametrize(("prefix", "url", "ok"), [
    ("https://img.example.com/", "https://img.example.com/a/b.png", True),
    ("https://img.example.com", "https://IMG.example.com./a.png", True),
    ("https://img.example.com/", "https://img.example.com:443/a.png", True),
    ("https://img.example.com/", "http://img.example.com/a.png", False),
    ("https://img.example.com/", "https://img.example.com:8443/a.png", False),
    ("https://img.example.com/", "https://img.example.com.evil.net/a.png", False),
    ("https://img.example.com/pub/", "https://img.example.com/pub/x.png", True),
    ("https://img.example.com/pub", "https://img.example.com/pub/x.png", True),
    ("https://img.example.com/pub", "https://img.example.com/public/x.png", False),
    ("https://img.example.com/pub/", "https://img.example.com/pub/../priv/x.png", False),
    ("https://img.example.com/pub/", "https://img.example.com/pub/%2E%2E/priv/x.png", False),
])
def test_prefixes_match_by_parts(prefix: str, url: str, ok: bool) -> None:
    assert parse_prefix(prefix).matches(url_parts(url)) is ok


def test_urls_with_user_info_are_not_urls_here() -> None:
    with pytest.raises(ValueError, match="user info"):
        url_parts("https://img.example.com@evil.net/x.png")


def _default() -> dict:
    return yaml.safe_load(default_topology_path().read_text())


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_topology(data, "t.yaml")
    return str(err.value)


def test_off_by_default_and_filled_into_every_models_options() -> None:
    topology = parse_topology(_default(), "t.yaml")
    assert topology.limits.image_uris.file_root is None and topology.limits.image_uris.allowed_prefixes == ()
    data = _default()
    data["limits"]["image_uris"] = {"file_root": "/srv/images", "allowed_prefixes": ["https://img.example.com/"]}
    topology = parse_topology(data, "t.yaml")
    uris = model_user_config(topology, "detection")["options"]["image_uris"]
    assert uris["file_root"] == "/srv/images" and uris["allowed_prefixes"] == ["https://img.example.com/"]


@pytest.mark.parametrize(("image_uris", "says"), [
    ({"allowed_prefixes": ["file://"]}, "limits.image_uris.allowed_prefixes: 'file://': file URIs are allowed by "
                                        "directory, not by prefix; set limits.image_uris.file_root"),
    ({"allowed_prefixes": ["images.example.com"]}, "write an http(s) prefix such as"),
    ({"allowed_prefixes": ["https://u@images.example.com/"]}, "user info"),
    ({"file_root": "images/"}, "limits.image_uris.file_root: file_root must be an absolute directory"),
    ({"max_redirect": 1}, "limits.image_uris.max_redirect: unknown key; did you mean 'max_redirects'?"),
])
def test_config_errors_name_the_key_and_the_fix(image_uris: dict, says: str) -> None:
    data = _default()
    data["limits"]["image_uris"] = image_uris
    assert says in _error(data)


def test_the_older_per_model_key_is_checked_the_same_way() -> None:
    data = _default()
    data["models"]["detection"]["options"]["allowed_uri_prefixes"] = ["file://"]
    message = _error(data)
    assert "models.detection.options: allowed_uri_prefixes: 'file://'" in message
    assert "limits.image_uris.file_root" in message
