"""The ``rollout:`` section of a route: canary / A/B variants of a model, shadows, and per-event checkpoints.

A route's ``rollout`` maps a model the route calls (a key in its ``models``) to how that model's
traffic is shared out::

    routes:
      - name: text
        input: text
        kind: text
        models: [sentiment]
        rollout:
          sentiment:                 # the live model of this route that is being rolled out
            sticky_key: user_id      # user_id | item_id | stream_id | event_id
            variants:                # each takes a share; the rest stays on `sentiment` itself
              - {name: canary, model: sentiment_v2, percent: 10}
            shadows:                 # also answer (a share of) the events, never live
              - {name: next, model: sentiment, checkpoint: ft-3, percent: 100, queue_size: 1000}

Split rules (``topologies.rollout`` implements them; they are the contract):

- An event's key (``sticky_key``; ``event_id`` when the event has no such value) is hashed with the
  rollout's ``salt`` into a bucket 0..9999. Variants own consecutive ranges of buckets in the order
  listed (``percent`` x 100 buckets each); the remaining buckets stay on the route's model, the
  *base* variant. So one key always gets one variant, and raising the last variant's percent only
  moves keys from the base into it.
- A shadow with ``percent: p`` sees the events whose bucket (under the salt ``<salt>#shadow:<name>``)
  is below ``p`` x 100. Its results go to its own topic (``output``; default ``<live topic>.shadow``),
  never to a live result topic, recommendations or analytics.
- ``checkpoint`` (base, variant or shadow) names one of that model's ``multiplex.checkpoints``: the call
  carries it as Serve's multiplexed model id. ``checkpoint_by`` instead chooses the base's checkpoint
  per event from an event field (a tenant, a source).

Every check here names the key and the fix; they run when the topology loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from schemas.config_base import PositiveInt, Strict, did_you_mean
from schemas.tasks import EVENT_KINDS

if TYPE_CHECKING:
    from schemas.topology import RouteConfig, Topology

__all__ = [
    "BUCKETS",
    "CheckpointBy",
    "ModelRollout",
    "ShadowConfig",
    "StickyKey",
    "VariantConfig",
    "changed_rollout",
    "check_rollouts",
    "control_topic",
    "rollout_topics",
    "shadow_output",
]

#: The split's resolution: a percent is a whole number of hundredths (10,000 buckets).
BUCKETS = 10_000
StickyKey = Literal["user_id", "item_id", "stream_id", "event_id"]
#: Variant names appear in analytics field names (``variant|<name>|...``): no ``|`` or spaces.
VariantName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
Percent = Annotated[float, Field(ge=0, le=100)]


def _hundredths(p: float) -> float:
    if abs(p * 100 - round(p * 100)) > 1e-6:
        raise ValueError(f"percent {p} is finer than 0.01 (the split has {BUCKETS:,} buckets); round it, "
                         f"e.g. {round(p, 2)}")
    return p


class _Answerer(Strict):
    """What a variant and a shadow share: a model (optionally one of its checkpoints), a share of the
    events in hundredths of a percent, and the name results and analytics know it by."""

    name: VariantName | None = None
    model: str
    checkpoint: str | None = None
    percent: Percent

    @field_validator("percent")
    @classmethod
    def _whole(cls, p: float) -> float:
        return _hundredths(p)

    @property
    def label(self) -> str:
        """The name: ``name``, else ``model`` or ``model:checkpoint``."""
        return self.name or (f"{self.model}:{self.checkpoint}" if self.checkpoint else self.model)


class VariantConfig(_Answerer):
    """A canary or A/B variant: ``percent`` of the keys go to ``model`` (optionally one of its checkpoints)."""


class ShadowConfig(_Answerer):
    """A model that also answers (``percent`` of) the route's events on its own bounded queue, off the live path."""

    percent: Percent = 100.0
    # Events waiting for the shadow; when full, new shadow work is shed (and counted), live never waits.
    queue_size: PositiveInt = 1000
    # Topic alias or name for the shadow's results; default ``<live result topic>.shadow``.
    output: str | None = None


class CheckpointBy(Strict):
    """The base variant's checkpoint chosen per event: ``map`` from the value of event field ``field``
    to a checkpoint id of the model; other values get ``default`` (``None``: the model's own weights)."""

    field: str
    map: dict[str, str] = Field(min_length=1)
    default: str | None = None


class ModelRollout(Strict):
    """How one model's traffic on one route is shared out (see the module docstring)."""

    sticky_key: StickyKey = "user_id"
    # Default ``<route>/<model>``; two rollouts with one salt split the same keys alike.
    salt: str | None = None
    # The base variant's name in results and comparisons (default: the model's key).
    name: VariantName | None = None
    checkpoint: str | None = None
    checkpoint_by: CheckpointBy | None = None
    variants: list[VariantConfig] = Field(default_factory=list)
    shadows: list[ShadowConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shares(self) -> ModelRollout:
        total = sum(v.percent for v in self.variants)
        if total > 100 + 1e-9:
            raise ValueError(f"variants' percents add up to {total:g}, over 100; lower them (the base gets "
                             "what is left, here nothing could be)")
        if self.checkpoint and self.checkpoint_by:
            raise ValueError("set `checkpoint` (one checkpoint for the base) or `checkpoint_by` (one per event), "
                             "not both; for a fixed one with exceptions use `checkpoint_by.default`")
        return self


# -- checks that need the whole topology ----------------------------------------------------------

def _fail(key: str, why: str, fix: str) -> None:
    raise ValueError(f"{key}: {why}; fix: {fix}")


def _check_member(topology: Topology, key: str, live: str, model: str, checkpoint: str | None,
                  route: RouteConfig) -> None:
    """A variant or shadow names a model of the live one's task (and kind), and a checkpoint it has."""
    if model not in topology.models:
        _fail(f"{key}.model", f"{model!r} is not under `models:`{did_you_mean(model, topology.models)}",
              f"use one of {sorted(topology.models)} or add it under `models:`")
    mine, theirs = topology.models[model].task, topology.models[live].task
    if mine != theirs:
        _fail(f"{key}.model", f"{model!r} is task {mine!r} but the live model {live!r} is task {theirs!r}; "
              "variants and shadows are compared with it on the same events",
              f"name a model of task {theirs!r}")
    _check_checkpoint(topology, f"{key}.checkpoint", model, checkpoint)


def _check_checkpoint(topology: Topology, key: str, model: str, checkpoint: str | None) -> None:
    if checkpoint is None:
        return
    mux = topology.models[model].multiplex
    if mux is None:
        _fail(key, f"model {model!r} hosts no checkpoints (it has no `multiplex:`)",
              f"add `models.{model}.multiplex.checkpoints.{checkpoint}: <path or hub id>` or remove `checkpoint`")
    elif checkpoint not in mux.checkpoints:
        _fail(key, f"{checkpoint!r} is not under `models.{model}.multiplex.checkpoints`"
              f"{did_you_mean(checkpoint, mux.checkpoints)}",
              f"use one of {sorted(mux.checkpoints)} or add it there")


def shadow_output(topology: Topology, route: RouteConfig, model: str, shadow: ShadowConfig) -> str:
    """The topic a shadow's results go to: its ``output`` (alias or name), else ``<live result topic>.shadow``."""
    if shadow.output:
        return topology.topics.resolve(shadow.output)
    return topology.output_topic(route, model) + ".shadow"


def rollout_topics(topology: Topology) -> list[str]:
    """Every shadow result topic of the topology (to create beside ``topics.names()``), sorted."""
    return sorted({shadow_output(topology, r, m, s) for r in topology.routes
                   for m, ro in r.rollout.items() for s in ro.shadows})


def _live_topics(topology: Topology) -> set[str]:
    t = topology.topics
    live = {topology.input_topic(r) for r in topology.routes}
    live |= {topology.output_topic(r, m) for r in topology.routes for m in r.models}
    live |= {getattr(t, alias) for alias in ("text", "image", "video", "sentiment", "detections", "tags",
                                              "classes", "recommendations", "analytics", "dlq")}
    return live


def check_rollouts(topology: Topology) -> None:
    """Cross-checks of every route's ``rollout`` against the topology; raises ``ValueError`` naming the key and fix."""
    live_topics = _live_topics(topology)
    for i, route in enumerate(topology.routes):
        for live, ro in route.rollout.items():
            base = f"routes[{i}].rollout.{live}"
            if live not in route.models:
                _fail(base, f"{live!r} is not one of this route's models {route.models}"
                      f"{did_you_mean(live, route.models)}",
                      "key a rollout by a model the route calls (its variants and shadows go inside it)")
            if ro.sticky_key == "stream_id" and route.kind != "video":
                _fail(f"{base}.sticky_key", f"{route.kind} events have no stream_id",
                      "use user_id, item_id or event_id (stream_id is for video routes)")
            _check_checkpoint(topology, f"{base}.checkpoint", live, ro.checkpoint)
            names = {ro.name or live: base}
            for j, v in enumerate(ro.variants):
                key = f"{base}.variants[{j}]"
                _check_member(topology, key, live, v.model, v.checkpoint, route)
                if v.model in route.models and v.model != live:
                    _fail(f"{key}.model", f"{v.model!r} is also one of this route's models, so its keys would be "
                          "answered twice", f"remove {v.model!r} from `routes[{i}].models`")
                if v.model == live and v.checkpoint in (None, ro.checkpoint) and ro.checkpoint_by is None:
                    _fail(key, "this variant is the base itself (same model, same checkpoint)",
                          "name another model, or one of its `multiplex.checkpoints` as `checkpoint`")
                _unique(names, v.label, key)
            for j, s in enumerate(ro.shadows):
                key = f"{base}.shadows[{j}]"
                _check_member(topology, key, live, s.model, s.checkpoint, route)
                _unique(names, s.label, key)
                out = shadow_output(topology, route, live, s)
                if out in live_topics:
                    _fail(f"{key}.output", f"{out!r} is a live topic (inputs, results, recommendations, analytics "
                          "and the DLQ are); shadow results must never reach live readers",
                          "leave `output` out (default `<live result topic>.shadow`) or name a topic of its own")
            if ro.checkpoint_by is not None:
                _check_checkpoint_by(topology, f"{base}.checkpoint_by", live, ro.checkpoint_by, route)


def _unique(names: dict[str, str], name: str, key: str) -> None:
    if name in names:
        _fail(f"{key}.name", f"{name!r} is already the name of {names[name]}",
              "give each variant and shadow of a rollout its own `name`")
    names[name] = key


def _check_checkpoint_by(topology: Topology, key: str, live: str, by: CheckpointBy, route: RouteConfig) -> None:
    fields = EVENT_KINDS[route.kind].model.model_fields
    usable = sorted(n for n, f in fields.items() if "str" in repr(f.annotation))
    if by.field not in usable:
        _fail(f"{key}.field", f"{route.kind} events have no text field {by.field!r}{did_you_mean(by.field, usable)}",
              f"use one of {usable}")
    for value, cid in by.map.items():
        _check_checkpoint(topology, f"{key}.map.{value}", live, cid)
    _check_checkpoint(topology, f"{key}.default", live, by.default)



# -- changes while events flow (a compacted control topic) ----------------------------------------


def control_topic(topology: Topology) -> str:
    """The compacted topic of rollout changes (key ``<route>/<model>``; value ``{"variants": [...]}``, a
    tombstone goes back to the config's variants). Created with the others when a route has a rollout."""
    return f"{topology.kafka.consumer_group}-rollout-control"


def changed_rollout(topology: Topology, route: str, model: str, variants: list[dict[str, Any]] | None) -> ModelRollout:
    """The config's rollout of ``model`` on ``route`` with its variants replaced by ``variants`` (None: the
    config's), checked as at load (percents, tasks, checkpoints, names); raises ``ValueError`` naming the fix.
    Only variants change at run time: the sticky key, salt, base and shadows stay the config's."""
    routes = {r.name: r for r in topology.routes}
    if route not in routes:
        raise ValueError(f"route {route!r} is not in the config{did_you_mean(route, list(routes))}")
    r = routes[route]
    if model not in r.rollout:
        raise ValueError(f"route {route!r} has no rollout for {model!r} (it has {sorted(r.rollout)}); fix: add "
                         f"`routes[].rollout.{model}` to the config (a rollout is changed, not created, at run time)")
    current = r.rollout[model]
    if variants is None:
        return current
    ro = ModelRollout.model_validate({**current.model_dump(exclude={"variants"}), "variants": variants})
    changed = r.model_copy(update={"rollout": {**r.rollout, model: ro}})
    check_rollouts(topology.model_copy(update={"routes": [changed if x.name == route else x
                                                          for x in topology.routes]}))
    return ro
