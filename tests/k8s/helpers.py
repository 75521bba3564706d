"""Helpers shared by the manifest tests (kept out of conftest so test modules can import them)."""

from __future__ import annotations

import os
from typing import Any

import pytest


def missing(what: str, fix: str) -> None:
    """Skip on a developer's machine, fail in CI, with the reason and the fix either way."""
    message = f"{what} -- {fix}"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this cannot be skipped: {message}", pytrace=False)
    pytest.skip(message)


def docs_of(rendered: dict[str, list[dict[str, Any]]], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(overlay, document) for every rendered document of one kind."""
    return [(o, d) for o, docs in rendered.items() for d in docs if d["kind"] == kind]
