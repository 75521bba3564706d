"""The topology config: the one model that feeds both the Serve app and the Faust app.

A topology YAML names the Kafka connection, the topics, the models (with their
batching and resources) and the routes from input topics through models to
output topics. ``load_topology(path)`` validates it once; a wrong key fails at
load with a message that names the key and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from schemas.config_base import ConfigError, PositiveFloat, PositiveInt, Strict, did_you_mean, explain
from schemas.image_uris import ImageUrisConfig
from schemas.kafka_config import KafkaConfig
from schemas.model_config import (AutoscalingConfig, BatchingConfig, CheckpointSource, ModelConfig, ModelTask,
                                  MultiplexConfig)
from schemas.rollout import ModelRollout, check_rollouts
from schemas.tasks import EVENT_KINDS, TASKS
from schemas.video import VideoConfig

__all__ = [
    "AnalyticsConfig",
    "AutoscalingConfig",
    "BatchingConfig",
    "CheckpointSource",
    "ConfigError",
    "DeliveryConfig",
    "EventKind",
    "ImageUrisConfig",
    "KafkaConfig",
    "LimitsConfig",
    "ModelConfig",
    "ModelTask",
    "MultiplexConfig",
    "ProcessingGuarantee",
    "RecommendationsConfig",
    "RouteConfig",
    "SamplingConfig",
    "TOPIC_ALIASES",
    "TopicsConfig",
    "Topology",
    "WindowConfig",
    "load_topology",
]

# Both read the registry (schemas/tasks.py); a new task or event kind is valid here once it is there.
EventKind = Literal[tuple(EVENT_KINDS)]  # type: ignore[valid-type]
ProcessingGuarantee = Literal["at-least-once", "exactly-once"]


class TopicsConfig(Strict):
    """Topic names (defaults as in DESIGN.md) and how topics are created."""

    text: str = "events.text"
    image: str = "events.image"
    video: str = "events.video"
    sentiment: str = "inference.sentiment"
    detections: str = "inference.detections"
    tags: str = "inference.tags"
    classes: str = "inference.classes"
    recommendations: str = "recommendations"
    analytics: str = "analytics"
    dlq: str = "events.dlq"
    partitions: PositiveInt = 4
    replication_factor: PositiveInt = 1
    # Set on every topic created here (and the summary topic): how many replicas must hold a record before
    # an acks=all write succeeds. None: the broker's default (min.insync.replicas; 1 unless set there).
    min_insync_replicas: PositiveInt | None = None
    retention_ms: int = 7 * 24 * 3600 * 1000

    @model_validator(mode="after")
    def _isr_fits_replication(self) -> TopicsConfig:
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"topics.min_insync_replicas ({self.min_insync_replicas}) exceeds topics.replication_factor "
                f"({self.replication_factor}): every acks=all write would fail; set it to at most the replication "
                "factor, e.g. `replication_factor: 3` with `min_insync_replicas: 2` (one broker may fail)")
        return self

    def topic_configs(self) -> dict[str, str]:
        """Topic-level settings every topic created here carries (whatever its cleanup policy)."""
        return {} if self.min_insync_replicas is None else {"min.insync.replicas": str(self.min_insync_replicas)}

    def names(self) -> list[str]:
        """Every topic the topology uses, inputs first."""
        return [getattr(self, alias) for alias in TOPIC_ALIASES]

    def resolve(self, name_or_alias: str) -> str:
        """A topic name from either its alias (``text``) or its full name."""
        return getattr(self, name_or_alias) if name_or_alias in TOPIC_ALIASES else name_or_alias


#: Every topic alias: the ``str`` fields of TopicsConfig, in order (inputs first).
TOPIC_ALIASES: tuple[str, ...] = tuple(n for n, f in TopicsConfig.model_fields.items() if f.annotation is str)


class SamplingConfig(Strict):
    """Video frame sampling per ``stream_id``: every Nth frame and/or at most F frames/s."""

    every_n: PositiveInt = 1
    max_fps: PositiveFloat | None = None
    max_lag_ms: PositiveInt | None = 30_000


class RouteConfig(Strict):
    """Input topic -> model deployment(s) -> output topic per model."""

    name: str
    input: str
    kind: EventKind
    models: list[str] = Field(min_length=1)
    # model name -> output topic (alias or full name); defaults to the task's result topic.
    outputs: dict[str, str] = Field(default_factory=dict)
    batch_size: PositiveInt = 64
    batch_within_s: PositiveFloat = 0.05
    max_in_flight: PositiveInt = 4
    call_timeout_s: PositiveFloat = 30.0
    max_attempts: PositiveInt = 3
    retry_backoff_s: PositiveFloat = 0.2
    sampling: SamplingConfig | None = None
    # Reject events carrying fields the schema does not know (default: ignore and count them).
    strict_fields: bool = False
    # model name -> its canary / A/B variants, shadows and per-event checkpoints (schemas/rollout.py).
    rollout: dict[str, ModelRollout] = Field(default_factory=dict)
    # Tracking, lines and zones per stream (schemas/video.py); video routes only.
    video: VideoConfig | None = None

    @model_validator(mode="after")
    def _video_on_video_routes(self) -> RouteConfig:
        if self.video is not None and self.kind != "video":
            raise ValueError(f"route {self.name!r} is kind {self.kind!r}; `video:` (tracking, lines, zones) needs "
                             "frames of a stream: set `kind: video` or remove `video:`")
        return self


class WindowConfig(Strict):
    """``analytics.window``: the windows' size and step, and which clock assigns events to them.

    ``time: event``: by each event's ``ts``, closed by a watermark (the smallest, over a route's input
    partitions, of the largest ``ts`` seen, less ``grace_s``); later events are counted ``late``
    (:mod:`topologies.state.event_windows`). ``time: log``: by the order summaries reach the log,
    tumbling only (``step_s`` = ``size_s``; :mod:`topologies.state.windows`).
    """

    size_s: PositiveInt = 10
    step_s: PositiveInt | None = Field(None, description="hop between window starts; default size_s (tumbling)")
    grace_s: Annotated[float, Field(ge=0)] = 0.0
    time: Literal["event", "log"] = "event"
    # A partition whose largest ts is this far behind its route's largest is left out of the watermark
    # (decided from the log alone, so a restart decides the same); None: the watermark waits for it.
    idle_s: PositiveFloat | None = None

    @model_validator(mode="after")
    def _step_divides_size(self) -> WindowConfig:
        step = self.step_s or self.size_s
        if step > self.size_s or self.size_s % step:
            raise ValueError(f"analytics.window.step_s ({step}) must divide size_s ({self.size_s}) (windows are "
                             f"built from step-long panes); e.g. size_s: {self.size_s}, "
                             f"step_s: {_divisor(self.size_s, step)}")
        if self.time == "log" and step != self.size_s:
            raise ValueError("analytics.window.time: log windows are tumbling (by log order); remove step_s "
                             "or set time: event for hopping windows")
        if self.time == "log" and (self.grace_s or self.idle_s):
            raise ValueError("analytics.window.grace_s / idle_s apply to time: event only; remove them or set "
                             "time: event")
        return self


def _divisor(size: int, near: int) -> int:
    return max(d for d in range(1, min(size, near) + 1) if size % d == 0)


class AnalyticsConfig(Strict):
    """Windows over the results, emitted to the analytics topic when they close. By default tumbling
    ``window_s`` windows in log order (:mod:`topologies.state.windows`); ``window:`` sets event-time
    tumbling or hopping windows with a grace (:mod:`topologies.state.event_windows`). Readable in the
    web views while open."""

    enabled: bool = True
    window_s: PositiveInt = 10
    window: WindowConfig | None = None
    # Deprecated and ignored: windows are emitted when they close, not on expiry. Accepted so that
    # older topology files still load.
    expires_s: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_window_key(self) -> AnalyticsConfig:
        if self.window is not None and "window_s" in self.model_fields_set and self.window_s != self.window.size_s:
            raise ValueError(f"analytics.window_s ({self.window_s}) and analytics.window.size_s "
                             f"({self.window.size_s}) disagree; set only analytics.window")
        return self

    @property
    def size_s(self) -> int:
        """The window size in seconds, whichever key set it."""
        return self.window.size_s if self.window is not None else self.window_s

    @property
    def event_time(self) -> WindowConfig | None:
        """The event-time window settings, or None when windows follow the log."""
        return self.window if self.window is not None and self.window.time == "event" else None


class RecommendationsConfig(Strict):
    """Per-user affinity and top-k items from the recent item pool."""

    enabled: bool = True
    top_k: PositiveInt = 5
    item_pool_size: PositiveInt = 500
    affinity_decay: Annotated[float, Field(gt=0, le=1)] = 0.9


class DeliveryConfig(Strict):
    processing_guarantee: ProcessingGuarantee = "at-least-once"


class LimitsConfig(Strict):
    """Enforced when events are decoded."""

    max_event_bytes: PositiveInt = 8 * 1024 * 1024
    max_image_bytes: PositiveInt = 5 * 1024 * 1024
    max_text_chars: PositiveInt = 10_000
    max_image_pixels: PositiveInt = 40_000_000
    # Longest side / shortest side: a 1 x 200,000 strip passes a pixel limit, but a resize to the
    # model's short side (CLIP: 224) turns it into hundreds of millions of pixels (~1 GB measured).
    max_image_aspect: Annotated[float, Field(ge=1)] = 50.0
    # A dead letter never exceeds this: beyond it the original is cut (its size and sha256 kept).
    # Under the broker's default message.max.bytes (1 MiB), so the DLQ works on any cluster's defaults.
    max_dead_letter_bytes: Annotated[int, Field(ge=16 * 1024)] = 1_000_000
    # Where image.uri may point (file:// under a directory, http(s) by prefix); off by default.
    image_uris: ImageUrisConfig = ImageUrisConfig()

    @model_validator(mode="after")
    def _limits_agree(self) -> LimitsConfig:
        if self.max_image_bytes > self.max_event_bytes:
            raise ValueError(f"max_image_bytes ({self.max_image_bytes}) is above max_event_bytes "
                             f"({self.max_event_bytes}): an inline image travels inside an event; lower it")
        return self


class Topology(Strict):
    """The whole topology; see ``topologies/default.yaml`` for an annotated example."""

    name: str = "infertide"
    kafka: KafkaConfig = KafkaConfig()
    topics: TopicsConfig = TopicsConfig()
    models: dict[str, ModelConfig] = Field(min_length=1)
    routes: list[RouteConfig] = Field(min_length=1)
    analytics: AnalyticsConfig = AnalyticsConfig()
    recommendations: RecommendationsConfig = RecommendationsConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    limits: LimitsConfig = LimitsConfig()
    serve_app_name: str = "infertide"
    web_port: PositiveInt = 6066

    @model_validator(mode="after")
    def _routes_name_known_models(self) -> Topology:
        names = set()
        for route in self.routes:
            if route.name in names:
                raise ValueError(f"route name {route.name!r} is used twice; route names must be unique")
            names.add(route.name)
            for model in [*route.models, *route.outputs]:
                if model not in self.models:
                    hint = did_you_mean(model, self.models)
                    raise ValueError(
                        f"route {route.name!r} names model {model!r}, which is not under `models:`"
                        f" (known: {sorted(self.models)}){hint}"
                    )
            ew = self.analytics.event_time
            if route.video is not None and ew is not None and route.video.window_s not in (None, ew.size_s):
                raise ValueError(f"route {route.name!r}: video.window_s ({route.video.window_s}) differs from "
                                 f"analytics.window.size_s ({ew.size_s}); event-time windows file video counts "
                                 "under the analytics windows: remove video.window_s")
            if route.video is not None and not any(self.models[m].task == "detection" for m in route.models):
                raise ValueError(f"route {route.name!r} has `video:` but no detection model to track; add one "
                                 "to its `models:` (e.g. models: [detection])")
            for model in route.models:
                spec = TASKS[self.models[model].task]
                if route.kind not in spec.accepts:
                    raise ValueError(
                        f"route {route.name!r} is kind {route.kind!r} but model {model!r} (task {spec.name!r})"
                        f" takes only {sorted(spec.accepts)}; route it from a topic of that kind"
                    )
        check_rollouts(self)
        return self

    def output_topic(self, route: RouteConfig, model_name: str) -> str:
        """Where a route writes one model's results."""
        if model_name in route.outputs:
            return self.topics.resolve(route.outputs[model_name])
        return self.topics.resolve(TASKS[self.models[model_name].task].output)

    def max_message_bytes(self) -> int:
        """Largest record the topics accept (their ``max.message.bytes``) and the producers send
        (``max_request_size``): the decode limit plus room for headers, and never below a dead letter's cap."""
        return max(self.limits.max_event_bytes + 64 * 1024, self.limits.max_dead_letter_bytes + 64 * 1024)

    def input_topic(self, route: RouteConfig) -> str:
        return self.topics.resolve(route.input)

    def with_bootstrap(self, bootstrap_servers: str) -> Topology:
        """A validated copy pointing at other brokers."""
        return self.model_validate(
            {**self.model_dump(), "kafka": {**self.kafka.model_dump(), "bootstrap_servers": bootstrap_servers}}
        )


def parse_topology(data: dict[str, Any], source: str = "<dict>") -> Topology:
    """Validate a topology from plain data, as given: the environment overrides nothing here.

    The CLI applies ``KAFKA_BOOTSTRAP_SERVERS`` and its flags on top, at the edge
    (``infertide.settings`` says the precedence).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"invalid topology config {source}: expected a mapping at the top level")
    try:
        return Topology.model_validate(data)
    except ValidationError as err:
        raise ConfigError(explain(err, source, Topology)) from None


def load_topology(path: str | os.PathLike[str] | None = None) -> Topology:
    """Load and validate a topology YAML, as written (default: the packaged default topology)."""
    if path is None:
        path = default_topology_path()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"topology config {p} does not exist; pass --config PATH or set INFERTIDE_CONFIG")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"topology config {p} is not valid YAML: {err}") from None
    return parse_topology(data, str(p))


def default_topology_path() -> Path:
    """The packaged default topology (``topologies/default.yaml``), found without importing topologies."""
    return Path(__file__).resolve().parent.parent / "topologies" / "default.yaml"
