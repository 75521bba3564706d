"""The README's config reference names every leaf key of the topology model (so docs match the code)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from schemas.topology import Topology

README = Path(__file__).resolve().parents[2] / "README.md"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        args = [field.annotation, *typing.get_args(field.annotation)]
        args += [b for a in typing.get_args(field.annotation) for b in typing.get_args(a)]
        sub = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        out += _keys(sub, prefix + name + ".") if sub is not None else [prefix + name]
    return out


def test_config_reference_lists_every_key() -> None:
    text = README.read_text()
    section = text[text.index("<!-- config-reference:start -->"):text.index("<!-- config-reference:end -->")]
    documented = set(re.findall(r"`([a-z_.<>\[\]]+)`", section))
    leaves = {k.split(".")[-1] for k in documented}
    missing = [k for k in _keys(Topology) if k.split(".")[-1] not in leaves and k not in documented]
    assert not missing, f"README config reference lacks: {missing}"
