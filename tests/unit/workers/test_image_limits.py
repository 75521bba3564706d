"""Image limits found by the hostile-input corpus: side ratio, and the byte cap exact at the limit."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from workers.images import ImageLimits, ImageTooLarge, decode_image


def _png(w: int, h: int, pad: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue() + b"\0" * pad


def _item(raw: bytes) -> dict:
    return {"data": base64.b64encode(raw).decode(), "uri": None}


@pytest.mark.parametrize(("w", "h"), [(1, 200_000), (200_000, 1), (2, 101)])
def test_a_strip_is_refused_by_its_side_ratio(w: int, h: int) -> None:
    with pytest.raises(ImageTooLarge, match="max_image_aspect"):
        decode_image(_item(_png(w, h)), ImageLimits(max_pixels=1_000_000))


def test_ratio_at_the_limit_and_tiny_images_pass() -> None:
    assert decode_image(_item(_png(2, 100)), ImageLimits()).size == (2, 100)
    assert decode_image(_item(_png(1, 1)), ImageLimits()).size == (1, 1)
    assert ImageLimits.from_options({"max_image_aspect": 4}).max_aspect == 4


def test_inline_byte_cap_is_exact() -> None:
    size = len(_png(8, 8))
    at_limit, over = _png(8, 8, pad=1000 - size), _png(8, 8, pad=1001 - size)
    assert decode_image(_item(at_limit), ImageLimits(max_bytes=1000)).size == (8, 8)
    with pytest.raises(ImageTooLarge, match="1001 bytes"):
        decode_image(_item(over), ImageLimits(max_bytes=1000))
