"""What every config model shares: strict models, positive numbers, and errors that name the key and the fix."""

from __future__ import annotations

import difflib
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ConfigError", "PositiveFloat", "PositiveInt", "Strict", "did_you_mean", "explain"]

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class ConfigError(ValueError):
    """A topology config that cannot be used; the message names the key and the fix."""


class Strict(BaseModel):
    """A config section: unknown keys are errors (with a 'did you mean'), values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at a location, for 'did you mean' on unknown keys."""
    model: Any = root
    for part in loc[:-1]:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:  # a dict key (a model's name): the value type is already current
            continue
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            inner = [a for c in args for a in getattr(c, "__args__", ())]
            model = next((c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(model.model_fields) if model is not None and hasattr(model, "model_fields") else []


def explain(err: ValidationError, source: str, root: type[BaseModel]) -> str:
    """A validation error as one line per key: what is wrong there and the fix."""
    lines = [f"invalid topology config {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(str(e["loc"][-1]), _fields_at(root, e["loc"]))
            lines.append(f"  {key}: unknown key{hint or '; remove it'}")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing; add it")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            # a whole section as "got" buries the message; show scalars only
            lines.append(f"  {key}: {msg}" + ("" if isinstance(got, (dict, list)) else f" (got {got!r})"))
    return "\n".join(lines)
