"""The handle contract between the model workers and the route engine: one reply per item.

A TypedDict, not a pydantic model: a batch carries thousands of replies a second
and nothing on that path should validate each one. The worker builds them
(``workers.base``), the route engine reads them (``topologies``)::

    {"ok": True, "result": {...}, "model": {"name": ..., "version": ...}, "inference_ms": 1.2}
    {"ok": False, "error_class": "ImageTooLarge", "error": "..."}

``result`` is the task's payload: the fields its result schema adds to
``schemas.events.ResultBase`` (see ``schemas.tasks.TaskSpec.result_schema``).
"""

from __future__ import annotations

from typing import Any, Required, TypedDict

__all__ = ["ModelRef", "Reply"]


class ModelRef(TypedDict):
    """Which model answered: its configured id or path, and its version (revision or weights hash)."""

    name: str
    version: str


class Reply(TypedDict, total=False):
    """One item's answer; ``ok`` says which of the two shapes it is."""

    ok: Required[bool]
    result: dict[str, Any]
    model: ModelRef
    inference_ms: float
    error: str
    error_class: str
