"""The codec: orjson bytes <-> validated event models, with size limits, and one error type.

``decode`` never raises anything but :class:`EventDecodeError`, whose message
names the schema, the field and the reason, so a bad record can go to the
dead-letter topic with a reason a human can act on.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas.events import SCHEMAS, ImageRef

__all__ = ["SCHEMA_HEADER", "EventDecodeError", "Limits", "check_schema_header", "decode", "decode_image_bytes",
           "encode", "model_for"]

M = TypeVar("M", bound=BaseModel)


class EventDecodeError(ValueError):
    """A record that is not a valid event: ``field`` is a dotted path (or ``""`` for the whole record)."""

    def __init__(self, schema: str, field: str, reason: str) -> None:
        self.schema = schema
        self.field = field
        self.reason = reason
        where = f"field {field!r}" if field else "record"
        super().__init__(f"{schema}: {where}: {reason}")


@dataclass(frozen=True, slots=True)
class Limits:
    """Decode-time limits; the topology's ``limits:`` section builds one."""

    max_event_bytes: int = 8 * 1024 * 1024
    max_image_bytes: int = 5 * 1024 * 1024
    max_text_chars: int = 10_000

    @classmethod
    def from_config(cls, cfg: Any) -> Limits:
        return cls(cfg.max_event_bytes, cfg.max_image_bytes, cfg.max_text_chars)


DEFAULT_LIMITS = Limits()


def model_for(schema: str) -> type[BaseModel]:
    """The model class of a schema name such as ``text.v1``."""
    try:
        return SCHEMAS[schema]
    except KeyError:
        raise KeyError(f"unknown schema {schema!r}; known: {sorted(SCHEMAS)}") from None


def _first_error(schema: str, err: ValidationError) -> EventDecodeError:
    e = err.errors(include_url=False)[0]
    field = ".".join(str(p) for p in e["loc"])
    reason = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        reason = "unknown field (not in the schema)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return EventDecodeError(schema, field, reason + more)


def _check_limits(schema: str, obj: dict[str, Any], limits: Limits) -> None:
    text = obj.get("text")
    if isinstance(text, str) and len(text) > limits.max_text_chars:
        raise EventDecodeError(schema, "text", f"text has {len(text)} characters; the limit is {limits.max_text_chars}")
    image = obj.get("image")
    if isinstance(image, dict) and isinstance(image.get("data"), str):
        data = image["data"]
        # The decoded size, padding counted out: an image of exactly the limit passes.
        size = len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))
        if size > limits.max_image_bytes:
            raise EventDecodeError(
                schema, "image.data", f"inline image is about {size} bytes; the limit is {limits.max_image_bytes}"
            )


SCHEMA_HEADER = "ce_dataschema"
"""The record header that may name an event's schema: CloudEvents' Kafka binding (binary mode),
a URI whose last segment is the schema name, e.g. ``urn:infertide:schema:text.v1``."""


def check_schema_header(value: bytes, expected: str) -> None:
    """Accept a ``ce_dataschema`` header that names ``expected``; anything else is a decode error.

    Raises:
        EventDecodeError: the header names another schema, or a version this build does not know.
    """
    try:
        uri = value.decode("utf-8")
    except UnicodeDecodeError:
        raise EventDecodeError(expected, SCHEMA_HEADER, "header is not UTF-8") from None
    name = uri.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]
    if name == expected:
        return
    family = expected.split(".")[0]
    if name.split(".")[0] == family:
        raise EventDecodeError(expected, SCHEMA_HEADER, f"unknown schema version {name!r} (header {uri!r}); "
                               f"this build reads {expected}: upgrade the workers, or send {expected}")
    raise EventDecodeError(expected, SCHEMA_HEADER, f"header names schema {name!r} ({uri!r}), but this route "
                           f"reads {expected}; send it to the topic of its kind")


def _unknown_fields(cls: type[BaseModel], obj: dict[str, Any]) -> list[str]:
    """Keys of ``obj`` (and of its ``image``) that ``cls`` does not declare; input models ignore them.

    Per event on the hot path: the declared names are a cached frozenset, and the usual case (nothing
    unknown) is one set comparison."""
    fields = _field_names(cls)
    image = obj.get("image")
    nested = isinstance(image, dict) and "image" in fields
    if obj.keys() <= fields and (not nested or image.keys() <= _field_names(ImageRef)):
        return []
    extra = [k for k in obj if k not in fields]
    if nested:
        extra += [f"image.{k}" for k in image if k not in _field_names(ImageRef)]
    return extra


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type[BaseModel]) -> frozenset[str]:
    """The field names ``cls`` declares (``model_fields`` is a deprecated-property lookup on each access)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(cls.model_fields)
    return names


def decode(data: bytes | bytearray | memoryview | str, schema: str, limits: Limits = DEFAULT_LIMITS, *,
           strict_fields: bool = False, unknown: list[str] | None = None) -> Any:
    """Decode and validate one record value into the model of ``schema``.

    Fields the schema does not know are ignored (a newer producer may send them) and their
    names appended to ``unknown`` when given; with ``strict_fields`` they are an error.

    Raises:
        EventDecodeError: for any bytes that are not a valid ``schema`` event.
    """
    cls = model_for(schema)
    if data is None:
        raise EventDecodeError(schema, "", "empty record value (tombstone)")
    size = len(data)
    if size > limits.max_event_bytes:
        raise EventDecodeError(schema, "", f"record is {size} bytes; the limit is {limits.max_event_bytes}")
    try:
        obj = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError) as err:
        raise EventDecodeError(schema, "", f"not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise EventDecodeError(schema, "", f"expected a JSON object, got {type(obj).__name__}")
    _check_limits(schema, obj, limits)
    extra = _unknown_fields(cls, obj)
    if extra:
        if strict_fields:
            raise EventDecodeError(schema, extra[0], "unknown field (not in the schema; this route has strict_fields)")
        if unknown is not None:
            unknown.extend(extra)
    try:
        # strict: the wire types are JSON Schema's, so "ts": "1" or "ts": true is an error, not coerced
        return cls.model_validate(obj, strict=True)
    except ValidationError as err:
        raise _first_error(schema, err) from None
    except (ValueError, TypeError, RecursionError) as err:  # defensive: validators must never leak
        raise EventDecodeError(schema, "", f"{type(err).__name__}: {err}") from None


def encode(model: BaseModel) -> bytes:
    """Serialise a model to compact JSON bytes (``None`` fields omitted)."""
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True))


def decode_image_bytes(ref: ImageRef) -> bytes:
    """The raw bytes of an inline image (``ref.data``); URIs are fetched by the workers."""
    if ref.data is None:
        raise EventDecodeError("image", "image.data", "image is by reference (uri), not inline")
    try:
        return base64.b64decode(ref.data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise EventDecodeError("image", "image.data", f"not valid base64: {err}") from None
