"""Image input for the image models: inline base64 or a URI, with size, pixel and URI limits.

An item is the wire ``ImageRef`` as a dict: ``{"data": <base64> | None, "uri": <str> | None}``.
Every failure raises ``InputError`` (or a subclass) so the caller gets a per-item
error it can route to the dead-letter topic; the rest of the batch still runs.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from schemas.image_uris import ImageUrisConfig
from workers.base import BatchedModel, InputError
from workers.fetch import FetchTimeout, ImageTooLarge, UnsupportedUri, UriNotAllowed, fetch_uri

# ultralytics replaces PIL.Image.open with a wrapper that tries to pip-check pi-heif on
# every unidentified file; undecodable bytes are common input here, so keep Pillow's own.
_pil_open = Image.open
if not getattr(_pil_open, "__module__", "PIL").startswith("PIL"):
    import sys

    _pil_open = getattr(sys.modules.get(_pil_open.__module__), "_image_open", _pil_open)

__all__ = [
    "FetchTimeout",
    "ImageLimits",
    "ImageModel",
    "ImageTooLarge",
    "UnsupportedUri",
    "UriNotAllowed",
    "blank_image_item",
    "decode_image",
    "load_image_bytes",
]


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every image.

    Args:
        max_bytes: encoded size limit (inline after base64 decoding, or fetched).
        max_pixels: width * height limit, checked from the header before decoding.
        max_aspect: longest side / shortest side limit, checked from the header too.
        uris: where ``image.uri`` may point and the fetch time limits (``limits.image_uris``);
            the default refuses every URI.
        uri_prefixes: this model's own http(s) prefixes (``options.allowed_uri_prefixes``),
            used instead of ``uris.allowed_prefixes`` when set.
    """

    max_bytes: int = 5 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_aspect: float = 50.0
    uris: ImageUrisConfig = field(default_factory=ImageUrisConfig)
    uri_prefixes: tuple[str, ...] | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ImageLimits:
        """Limits from a model's ``options``: ``max_image_bytes`` / ``max_image_pixels`` and
        ``image_uris`` as the app fills them from ``limits:`` (``max_bytes`` / ``max_pixels`` also
        accepted), plus the older per-model ``allowed_uri_prefixes`` and ``fetch_timeout_s``."""
        uris = ImageUrisConfig.model_validate(options.get("image_uris") or {})
        if "fetch_timeout_s" in options:
            t = float(options["fetch_timeout_s"])
            uris = ImageUrisConfig.model_validate({**uris.model_dump(), "read_timeout_s": t, "total_timeout_s": t})
        own = options.get("allowed_uri_prefixes")
        return cls(
            max_bytes=int(options.get("max_bytes", options.get("max_image_bytes", cls.max_bytes))),
            max_pixels=int(options.get("max_pixels", options.get("max_image_pixels", cls.max_pixels))),
            max_aspect=float(options.get("max_image_aspect", cls.max_aspect)),
            uris=uris,
            uri_prefixes=None if own is None else tuple(str(p) for p in own),
        )


def load_image_bytes(item: Any, limits: ImageLimits) -> bytes:
    """The encoded bytes of one image item (inline base64 or fetched by URI)."""
    if not isinstance(item, dict):
        raise InputError(f"an image item must be a dict {{'data': ..., 'uri': ...}}, got {type(item).__name__}")
    data, uri = item.get("data"), item.get("uri")
    if (data is None) == (uri is None):
        raise InputError("exactly one of image 'data' (base64) or 'uri' must be set")
    if data is not None:
        if not isinstance(data, str):
            raise InputError("image 'data' must be a base64 string")
        if len(data) > (limits.max_bytes * 4) // 3 + 4:
            raise ImageTooLarge(f"inline image is over the limit of {limits.max_bytes} bytes")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"image 'data' is not valid base64: {exc}") from None
        if len(raw) > limits.max_bytes:
            raise ImageTooLarge(f"inline image is {len(raw)} bytes, over the limit of {limits.max_bytes}")
        return raw
    return fetch_uri(str(uri), limits.uris, limits.max_bytes, limits.uri_prefixes)


def decode_image(item: Any, limits: ImageLimits) -> Image.Image:
    """One image item -> an RGB PIL image, checking the pixel count before decoding pixels.

    Args:
        item: ``{"data": base64 | None, "uri": str | None}``.
        limits: byte / pixel / URI limits.
    """
    raw = load_image_bytes(item, limits)
    try:
        img = _pil_open(io.BytesIO(raw))  # lazy: reads the header only
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except Image.UnidentifiedImageError:
        raise InputError("image bytes are not a recognised image format (JPEG, PNG, WebP, ...)") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises several types for garbage
        raise InputError(f"image bytes cannot be decoded ({type(exc).__name__}: {exc})") from None
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ImageTooLarge(f"image is {w}x{h} = {w * h} pixels, over the limit of {limits.max_pixels}")
    if max(w, h) > limits.max_aspect * max(1, min(w, h)):
        raise ImageTooLarge(f"image is {w}x{h}, a side ratio over the limit of {limits.max_aspect:g} "
                            "(limits.max_image_aspect)")
    try:
        img.load()
        return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt data
        raise InputError(f"image bytes cannot be decoded ({type(exc).__name__}: {exc})") from None


def blank_image_item(w: int = 64, h: int = 48) -> dict[str, Any]:
    """A grey PNG as a wire item, for warming image models up at load."""
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (127, 127, 127)).save(buf, format="PNG")
    return {"data": base64.b64encode(buf.getvalue()).decode(), "uri": None}


class ImageModel(BatchedModel):
    """Base of the image models: wire image items decoded under ``self.limits`` (set it in
    ``apply_options``, e.g. ``ImageLimits.from_options(options)``), warm-up on a blank image."""

    input_kind = "image"
    limits: ImageLimits

    def decode(self, item: Any) -> Image.Image:
        return decode_image(item, self.limits)

    def warmup_items(self) -> list[Any]:
        return [blank_image_item()]
