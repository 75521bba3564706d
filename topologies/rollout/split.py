"""The sticky split: which variant of a model answers an event, and which shadows also see it.

Pure and deterministic: the same config and the same event give the same answer in every worker,
process and restart, so a key stays on one variant while partitions move. The rules are the
contract in ``schemas/rollout.py``; in short:

- ``bucket(key, salt)`` = the first 8 bytes of BLAKE2b(``salt`` NUL ``key``) as an integer, mod
  10,000. The key is the event's ``sticky_key`` field, or its ``event_id`` when that is missing.
- Variants own consecutive bucket ranges in the order listed (``percent`` x 100 each); the rest
  stay on the base. Raising the last variant's percent only moves keys from the base into it.
- A shadow at ``percent`` p takes the events whose bucket under ``<salt>#shadow:<name>`` is below
  p x 100 (independent of the live split, so a shadow's sample is not one variant's users).

Usage (what the route engine calls per event)::

    plan = RoutePlan.of(topology, route)               # once per topology
    variant = plan.choose("sentiment", event)          # -> Variant (base, variant)
    for variant, idx in plan.split_batch("sentiment", events):      # one call per variant per batch
        handle.options(**variant.call_options()).infer.remote([items[i] for i in idx])
    doc["variant"] = variant.result_field()            # on its result record
    for shadow in plan.shadows_for("sentiment", event): ...   # ShadowPlan: queue, topic, variant
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.rollout import BUCKETS, ModelRollout, StickyKey, shadow_output
from schemas.topology import RouteConfig, Topology

__all__ = [
    "ModelPlan",
    "RoutePlan",
    "ShadowPlan",
    "Variant",
    "bucket",
    "choose_variant",
    "sticky_value",
]

Role = Literal["base", "variant", "shadow"]


def bucket(key: str, salt: str) -> int:
    """The key's bucket, 0..9999: stable across processes and versions (not Python's ``hash``)."""
    digest = hashlib.blake2b(salt.encode() + b"\x00" + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _field(event: Any, name: str) -> Any:
    return event.get(name) if isinstance(event, Mapping) else getattr(event, name, None)


def sticky_value(event: Any, sticky_key: StickyKey) -> tuple[str, bool]:
    """``(key, fell_back)``: the event's ``sticky_key`` value, or its ``event_id`` when it has none."""
    value = _field(event, sticky_key)
    if value is None or value == "":
        return str(_field(event, "event_id")), sticky_key != "event_id"
    return str(value), False


@dataclass(frozen=True, slots=True)
class Variant:
    """Who answers: a model (its key under ``models:``), optionally one of its checkpoints, in a role."""

    name: str
    model: str
    checkpoint: str | None
    role: Role

    def call_options(self) -> dict[str, str]:
        """Keyword arguments for ``handle.options(...)``: the checkpoint as Serve's multiplexed model id."""
        return {"multiplexed_model_id": self.checkpoint} if self.checkpoint else {}

    def result_field(self) -> dict[str, Any]:
        """The result's ``variant`` field (``schemas.events.VariantInfo``)."""
        out: dict[str, Any] = {"name": self.name, "model_key": self.model, "role": self.role}
        if self.checkpoint:
            out["checkpoint"] = self.checkpoint
        return out

    def with_checkpoint(self, checkpoint: str | None) -> Variant:
        return Variant(self.name, self.model, checkpoint, self.role)


@dataclass(frozen=True, slots=True)
class ShadowPlan:
    """One shadow of a model on a route: who answers, where its results go, its queue bound and sample."""

    variant: Variant
    topic: str
    queue_size: int
    below: int  # takes events whose shadow bucket is below this (percent x 100)
    salt: str


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """One model's rollout on one route, compiled for the per-event choice."""

    model: str
    sticky_key: StickyKey
    salt: str
    base: Variant
    ranges: tuple[tuple[int, Variant], ...]  # (bucket upper bound, exclusive; variant), ascending
    shadows: tuple[ShadowPlan, ...] = ()
    checkpoint_field: str | None = None
    checkpoint_map: Mapping[str, str] = field(default_factory=dict)
    checkpoint_default: str | None = None

    @classmethod
    def compile(cls, route: str, model: str, ro: ModelRollout | None,
                shadow_topics: Mapping[str, str] | None = None) -> ModelPlan:
        """The plan of ``model`` on route ``route``; ``ro`` ``None``: no rollout (the base answers all).

        Args:
            shadow_topics: shadow label -> result topic (``RoutePlan.of`` fills it from the topology).
        """
        if ro is None:
            return cls(model, "event_id", f"{route}/{model}", Variant(model, model, None, "base"), ())
        salt = ro.salt or f"{route}/{model}"
        upper, ranges = 0, []
        for v in ro.variants:
            upper += round(v.percent * 100)
            ranges.append((upper, Variant(v.label, v.model, v.checkpoint, "variant")))
        shadows = tuple(
            ShadowPlan(Variant(s.label, s.model, s.checkpoint, "shadow"),
                       (shadow_topics or {}).get(s.label, ""), s.queue_size, round(s.percent * 100),
                       f"{salt}#shadow:{s.label}")
            for s in ro.shadows)
        by = ro.checkpoint_by
        return cls(model, ro.sticky_key, salt, Variant(ro.name or model, model, ro.checkpoint, "base"),
                   tuple(ranges), shadows,
                   by.field if by else None, dict(by.map) if by else {}, by.default if by else None)

    def choose(self, event: Any) -> Variant:
        """The live variant that answers ``event``."""
        if self.ranges:
            key, _ = sticky_value(event, self.sticky_key)
            b = bucket(key, self.salt)
            for upper, variant in self.ranges:
                if b < upper:
                    return variant
        if self.checkpoint_field is not None:
            value = _field(event, self.checkpoint_field)
            return self.base.with_checkpoint(self.checkpoint_default if value is None
                                             else self.checkpoint_map.get(str(value), self.checkpoint_default))
        return self.base

    def shadows_for(self, event: Any) -> list[ShadowPlan]:
        """The shadows that also answer ``event`` (each by its own sample of keys)."""
        if not self.shadows:
            return []
        key, _ = sticky_value(event, self.sticky_key)
        return [s for s in self.shadows if s.below >= BUCKETS or bucket(key, s.salt) < s.below]


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Every model of one route, compiled: ``choose(model, event)`` and ``shadows_for(model, event)``."""

    route: str
    models: Mapping[str, ModelPlan]

    @classmethod
    def of(cls, topology: Topology, route: RouteConfig) -> RoutePlan:
        plans = {}
        for model in route.models:
            ro = route.rollout.get(model)
            topics = {s.label: shadow_output(topology, route, model, s) for s in ro.shadows} if ro else {}
            plans[model] = ModelPlan.compile(route.name, model, ro, topics)
        return cls(route.name, plans)

    def choose(self, model: str, event: Any) -> Variant:
        return self.models[model].choose(event)

    def shadows_for(self, model: str, event: Any) -> list[ShadowPlan]:
        return self.models[model].shadows_for(event)

    def split_batch(self, model: str, events: Sequence[Any]) -> list[tuple[Variant, list[int]]]:
        """A micro-batch's events by the live variant that answers them: ``[(variant, [index, ...])]``,
        variants in order of first appearance, indexes ascending. One Serve call per entry (a variant
        is one model and at most one checkpoint, so no call mixes checkpoints)."""
        plan = self.models[model]
        groups: dict[Variant, list[int]] = {}
        for i, event in enumerate(events):
            groups.setdefault(plan.choose(event), []).append(i)
        return list(groups.items())

    def shadow_batch(self, model: str, events: Sequence[Any]) -> list[tuple[ShadowPlan, list[int]]]:
        """For each shadow of ``model``, the indexes of the batch's events it also answers (empty ones left out)."""
        plan = self.models[model]
        out: dict[str, tuple[ShadowPlan, list[int]]] = {}
        for i, event in enumerate(events):
            for shadow in plan.shadows_for(event):
                out.setdefault(shadow.variant.name, (shadow, []))[1].append(i)
        return list(out.values())

    @property
    def has_rollout(self) -> bool:
        """Whether any model of the route has variants, shadows or checkpoints (else results carry no ``variant``)."""
        return any(p.ranges or p.shadows or p.checkpoint_field or p.base.checkpoint or p.base.name != p.model
                   for p in self.models.values())


def choose_variant(route: RouteConfig, model: str, event: Any) -> Variant:
    """The live variant of ``model`` that answers ``event`` on ``route`` (compiles the plan each call;
    the engine keeps a :class:`RoutePlan` instead)."""
    return ModelPlan.compile(route.name, model, route.rollout.get(model)).choose(event)
