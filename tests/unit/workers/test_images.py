"""Image input: inline/URI decoding, limits, allow-list, bombs and garbage as per-item errors."""

from __future__ import annotations

import base64

import pytest

from tests.fixtures.images import png_bomb
from schemas.image_uris import ImageUrisConfig
from workers.base import InputError
from workers.images import ImageLimits, ImageTooLarge, UnsupportedUri, UriNotAllowed, decode_image


def test_inline_jpeg_decodes(make_image_item):
    img = decode_image(make_image_item(40, 30), ImageLimits())
    assert img.size == (40, 30) and img.mode == "RGB"


def test_file_uri(tmp_path, make_image_item):
    p = tmp_path / "a.jpg"
    p.write_bytes(base64.b64decode(make_image_item(20, 10)["data"]))
    limits = ImageLimits(uris=ImageUrisConfig(file_root=str(tmp_path)))
    assert decode_image({"uri": p.as_uri(), "data": None}, limits).size == (20, 10)


@pytest.mark.parametrize("bomb", [png_bomb(), png_bomb(12_000, 12_000)])
def test_pixel_bomb_rejected_before_decoding(bomb):
    with pytest.raises(ImageTooLarge):
        decode_image({"data": bomb, "uri": None}, ImageLimits(max_pixels=40_000_000))


def test_pixel_limit(make_image_item):
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(make_image_item(200, 200), ImageLimits(max_pixels=10_000))


def test_byte_limit(make_image_item):
    with pytest.raises(ImageTooLarge):
        decode_image(make_image_item(300, 300), ImageLimits(max_bytes=100))


@pytest.mark.parametrize("item", [
    {"data": base64.b64encode(b"\xff\xd8\xff\xe0 definitely not a jpeg").decode(), "uri": None},
    {"data": "not base64!!", "uri": None},
    {"data": None, "uri": None},
    "a string",
])
def test_garbage_is_input_error(item):
    with pytest.raises(InputError):
        decode_image(item, ImageLimits())


def test_truncated_jpeg(make_image_item):
    raw = base64.b64decode(make_image_item(64, 64)["data"])
    with pytest.raises(InputError):
        decode_image({"data": base64.b64encode(raw[: len(raw) // 3]).decode(), "uri": None}, ImageLimits())


def test_uri_refused_by_default_and_schemes():
    # Every refusal in detail, against a real server and real files: tests/unit/workers/test_fetch.py.
    with pytest.raises(UriNotAllowed):
        decode_image({"uri": "https://evil.example.com/x.jpg", "data": None}, ImageLimits())
    with pytest.raises(UnsupportedUri, match="s3://"):
        decode_image({"uri": "s3://bucket/x.jpg", "data": None}, ImageLimits())
    with pytest.raises(UriNotAllowed, match="file_root"):
        decode_image({"uri": "file:///nonexistent/x.jpg", "data": None}, ImageLimits())


def test_limits_from_options():
    lim = ImageLimits.from_options({"max_image_bytes": 10, "max_pixels": 5, "allowed_uri_prefixes": ["https://a/"]})
    assert (lim.max_bytes, lim.max_pixels, lim.uri_prefixes) == (10, 5, ("https://a/",))
