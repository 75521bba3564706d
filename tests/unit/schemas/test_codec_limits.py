"""The codec's inline-image limit counts base64 padding out, so an image of exactly the limit passes."""

from __future__ import annotations

import base64

import orjson
import pytest

from schemas.codec import EventDecodeError, Limits, decode


@pytest.mark.parametrize("limit", [3000, 3001, 3002])  # every padding length
def test_inline_image_at_the_limit_passes_and_one_byte_over_fails(limit: int) -> None:
    limits = Limits(max_image_bytes=limit)

    def event(n: int) -> bytes:
        return orjson.dumps({"event_id": "e", "ts": 1, "image": {"data": base64.b64encode(b"x" * n).decode()}})

    assert decode(event(limit), "image.v1", limits).event_id == "e"
    with pytest.raises(EventDecodeError, match="image.data"):
        decode(event(limit + 1), "image.v1", limits)
