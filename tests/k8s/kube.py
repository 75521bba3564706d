"""Helpers for the tests that talk to the local API server: apply, read back, compare, wait."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from infertide.k8s.controlplane import ControlPlane

T = TypeVar("T")
FIELD_MANAGER = "infertide"


def kubectl(cp: ControlPlane, *args: str, input: str | None = None, check: bool = True) -> Any:
    from infertide.k8s.operators import kubectl as run

    return run(cp, *args, input=input, check=check)


def apply(cp: ControlPlane, docs: list[dict[str, Any]], *extra: str, check: bool = True) -> Any:
    """Server-side apply with strict field validation (an unknown field is an error, not a silent prune)."""
    return kubectl(cp, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--validate=strict",
                   *extra, "-f", "-", input=yaml.safe_dump_all(docs), check=check)


def get(cp: ControlPlane, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    ns = ["-n", namespace] if namespace else []
    return json.loads(kubectl(cp, "get", kind, name, *ns, "-o", "json").stdout)


def get_all(cp: ControlPlane, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
    sel = ["-l", selector] if selector else []
    return json.loads(kubectl(cp, "get", kind, "-n", namespace, *sel, "-o", "json").stdout)["items"]


def not_kept(want: Any, got: Any, path: str = "") -> list[str]:
    """Every path of ``want`` that ``got`` lacks or holds another value at: what the server pruned, defaulted
    over or changed. Lists are compared item by item (same length); ``got`` may add fields (defaults)."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: want a mapping, got {got!r}"]
        out = []
        for key, value in want.items():
            if key not in got:
                out.append(f"{path}.{key}: missing (pruned?)")
            else:
                out += not_kept(value, got[key], f"{path}.{key}")
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: want {len(want)} items, got {got!r}"]
        return [d for i, (w, g) in enumerate(zip(want, got, strict=True)) for d in not_kept(w, g, f"{path}[{i}]")]
    if want != got and not (isinstance(want, (int, float)) and str(want) == str(got)):
        return [f"{path}: want {want!r}, got {got!r}"]
    return []


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 60, every_s: float = 0.5) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` and the last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as err:  # noqa: BLE001 - not there yet; keep the last reason for the message
            last = err
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")
