"""One route's batch logic, pure: decode and sample the records, then turn the model replies into
output records (results, dead letters, one analytics/recommendation summary per batch).

No Kafka, Faust or Ray here, and nothing awaits: :class:`BatchProcessor` is called by the
route engine (:mod:`topologies.engine.pipeline`) around the Serve calls, and by unit tests directly.
Per event it does the minimum (one decode, one result encode); counting and metrics are per batch.

Summaries say what they cover: ``topic`` (the route's input topic) and ``ranges``
(``{"<partition>": [first offset, last offset + 1]}`` over every record of the batch). A record
with ``counted=False`` (already in a summary of its partition's previous owner, see
:mod:`topologies.engine.replays`) still gets its results and dead letters, but adds nothing to the
summary (events in/out/dlq/dropped, latency, task deltas, engagements, items), so a replay after
a crash is not counted twice. Prometheus metrics still count it: they are this process's work.

With event-time windows (``analytics.window.time: event``) the summary also files each counted
event's deltas under the windows of its ``ts`` (``windows``) and gives each input partition's largest
event ``ts`` in the batch (``max_ts``; :mod:`topologies.state.event_windows` folds them). A record with no
readable ``ts`` (dead-lettered at decode) and a batch-wide delta (rollout sums) are filed under the
largest ``ts`` of the batch's events (of its partition when it has one; the route's last seen ts when the
batch has none; the batch's build time when the route has seen none), so they land in an open window.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.codec import SCHEMA_HEADER, EventDecodeError, Limits, check_schema_header, decode
from schemas.summary import SUMMARY_PARTITION
from schemas.tasks import EVENT_KINDS, TASKS
from schemas.topology import RouteConfig, Topology
from topologies.state.analytics import Deltas, EventDeltas
from topologies.metrics import METRICS
from topologies.state.recommend import engagement_weight, item_labels
from topologies.engine.records import InputRecord, OutRecord, dead_letter, now_ms, result_record
from topologies.engine.sampling import FrameSampler
from topologies.engine.topic_limits import record_cap

__all__ = ["SCHEMA_OF_KIND", "BatchOutput", "BatchProcessor", "Decoded", "InferenceFailed", "Observed"]

log = logging.getLogger(__name__)

SCHEMA_OF_KIND = {kind: spec.schema for kind, spec in EVENT_KINDS.items()}

# (task, event, result) of each successful reply: what the dashboard's live state keeps.
Observed = list[tuple[str, Any, dict[str, Any]]]


class InferenceFailed(Exception):
    """A model call that failed on every attempt; its batch's events are dead-lettered with it."""

    def __init__(self, model: str, attempts: int, cause: BaseException) -> None:
        self.model, self.attempts, self.cause = model, attempts, cause
        super().__init__(f"{model}: {type(cause).__name__}: {cause} (after {attempts} attempts)")


@dataclass
class BatchOutput:
    """What one batch produces; ``ok``/``dead`` hold the offsets of events with a result / a dead letter."""

    records: list[OutRecord] = field(default_factory=list)
    results: int = 0
    ticket: Any = None  # what the route consumer submitted it with (topologies.engine.ledger.Ticket)
    ok: set[tuple[int, int]] = field(default_factory=set)
    dead: set[tuple[int, int]] = field(default_factory=set)
    dropped: int = 0
    observed: Observed = field(default_factory=list)
    dlq_reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    traces: list[Any] = field(default_factory=list)  # the traced events' spans (topologies.engine.tracing)
    done_at: float | None = None  # perf_counter when it was ready to publish (the engine's stage timings)


@dataclass
class Decoded:
    """A batch after decoding and sampling: the events to infer, and what is already decided."""

    size: int
    valid: list[InputRecord]
    out: BatchOutput
    deltas: Deltas
    ranges: dict[int, list[int]] = field(default_factory=dict)  # partition -> [first offset, last + 1]
    uncounted: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset) of counted=False records
    # Event-time windows only: (partition, offset) -> the ts the record is filed under; partition -> largest ts.
    times: dict[tuple[int, int], int] = field(default_factory=dict)
    max_ts: dict[int, int] = field(default_factory=dict)


class BatchProcessor:
    """The pure part of a route: records in, output records out.

    Args:
        topology: the validated topology.
        route: the route this processor serves.
        summary_topic: where the per-batch analytics/recommendation summary goes (None: no summary).
    """

    def __init__(self, topology: Topology, route: RouteConfig, summary_topic: str | None) -> None:
        self.route = route
        self.name = route.name
        self.summary_topic = summary_topic
        self.input_topic = topology.input_topic(route)
        self.schema = SCHEMA_OF_KIND[route.kind]
        self.limits = Limits.from_config(topology.limits)
        self.configured_dead_letter_bytes = self.max_dead_letter_bytes = topology.limits.max_dead_letter_bytes
        self.result_caps: dict[str, int] = {}  # output topic -> largest record it takes (set_topic_limits)
        self.strict_fields = route.strict_fields
        self._unknown_seen: set[str] = set()
        self.known_schemas = {spec.schema for spec in EVENT_KINDS.values()}
        self.dlq_topic = topology.topics.dlq
        self.tasks = {m: topology.models[m].task for m in route.models}
        self.outputs = {m: topology.output_topic(route, m) for m in route.models}
        self.sampler = FrameSampler(route.sampling) if route.kind == "video" and route.sampling else None
        self._e2e = METRICS.e2e_latency.labels(route.name)
        self.has_stream = route.kind == "video"  # events with a stream_id
        ew = topology.analytics.event_time
        self.window = (ew.size_s * 1000, (ew.step_s or ew.size_s) * 1000) if ew is not None else None
        self._last_ts: int | None = None  # event time: the largest ts this route has seen (a fallback)

    def output_topics(self) -> set[str]:
        """The topics this route's results and dead letters go to."""
        return {self.dlq_topic, *self.outputs.values()}

    def set_topic_limits(self, limits: dict[str, int]) -> None:
        """Size outputs against what the topics accept (``{topic: max.message.bytes}``, read from the broker)."""
        caps = {t: c for t in self.output_topics() if (c := record_cap(limits, t)) is not None}
        dlq_cap = caps.pop(self.dlq_topic, None)
        self.max_dead_letter_bytes = (self.configured_dead_letter_bytes if dlq_cap is None
                                      else min(self.configured_dead_letter_bytes, dlq_cap))
        self.result_caps = caps

    # -- before the model calls ----------------------------------------------------------

    def decode(self, records: list[InputRecord]) -> Decoded:
        """Decode (and for video, sample) each record; invalid ones become dead letters."""
        now = now_ms()
        out, valid = BatchOutput(), []
        deltas = Deltas() if self.window is None else EventDeltas(*self.window, default_at=now)
        ranges: dict[int, list[int]] = {}
        uncounted: set[tuple[int, int]] = set()
        schema, limits, sampler, strict = self.schema, self.limits, self.sampler, self.strict_fields
        unknown: list[str] = []
        for rec in records:
            span = ranges.get(rec.partition)
            if span is None:
                ranges[rec.partition] = [rec.offset, rec.offset + 1]
            elif rec.offset < span[0]:
                span[0] = rec.offset
            elif rec.offset >= span[1]:
                span[1] = rec.offset + 1
            if not rec.counted:
                uncounted.add((rec.partition, rec.offset))
            try:
                declared = rec.headers.get(SCHEMA_HEADER) if rec.headers else None
                if declared is not None:
                    check_schema_header(declared, schema)
                rec.event = decode(rec.value, schema, limits, strict_fields=strict, unknown=unknown)
            except EventDecodeError as err:
                self.dead_letter(out, rec, "decode", err)
                continue
            if sampler is not None:
                ev = rec.event
                decision = sampler.decide(ev.stream_id, ev.frame_index, ev.pts_ms, ev.ts, now)
                if decision != "keep":
                    reason = "lag" if decision == "lag" else "sampled"
                    METRICS.frames_dropped.labels(self.name, reason).inc()
                    if rec.counted:
                        deltas.add("events", self.name, f"dropped_{reason}", at=ev.ts)
                    out.dropped += 1
                    continue
            valid.append(rec)
        if unknown:  # tolerated (a newer producer); counted, and each new name logged once, so drift shows
            METRICS.unknown_fields.labels(self.name).inc(len(unknown))
            for name in set(unknown) - self._unknown_seen:
                if len(self._unknown_seen) < 100:  # names come from producers: bounded
                    self._unknown_seen.add(name)
                    log.info("route %s: events carry field %r, not in %s; ignored (strict_fields: off)",
                             self.name, name, self.schema)
        times: dict[tuple[int, int], int] = {}
        max_ts: dict[int, int] = {}
        if isinstance(deltas, EventDeltas):
            times, max_ts = self._event_times(records, deltas, now)
            for rec in records:
                if rec.counted:
                    deltas.add("events", self.name, "in", 1.0, at=times[(rec.partition, rec.offset)])
        elif len(records) > len(uncounted):
            deltas.add("events", self.name, "in", len(records) - len(uncounted))
        if uncounted:  # Prometheus counts replayed events as work done (events_in etc.); this says how many
            METRICS.replayed_uncounted.labels(self.name).inc(len(uncounted))
        return Decoded(len(records), valid, out, deltas, ranges, uncounted, times, max_ts)

    def _event_times(self, records: list[InputRecord], deltas: EventDeltas, now: int
                     ) -> tuple[dict[tuple[int, int], int], dict[int, int]]:
        """Each record's event time (its ts; without one, the fallback in the module docstring) and the
        largest ts per partition."""
        max_ts: dict[int, int] = {}
        for rec in records:
            if rec.event is not None and rec.event.ts > max_ts.get(rec.partition, -1):
                max_ts[rec.partition] = rec.event.ts
        top = max(max_ts.values(), default=None)
        if top is not None and (self._last_ts is None or top > self._last_ts):
            self._last_ts = top
        fallback = top if top is not None else self._last_ts if self._last_ts is not None else now
        deltas.default_at = fallback
        times = {(rec.partition, rec.offset): rec.event.ts if rec.event is not None
                 else max_ts.get(rec.partition, fallback) for rec in records}
        return times, max_ts

    def items(self, valid: list[InputRecord]) -> list[Any]:
        """The request items for the models: texts, or image references."""
        if self.route.kind == "text":
            return [rec.event.text for rec in valid]
        return [rec.event.image.model_dump(include={"data", "uri"}) for rec in valid]

    # -- after the model calls -----------------------------------------------------------

    def finish(self, batch: Decoded, replies: dict[str, tuple[list[dict[str, Any]], float] | InferenceFailed]
               ) -> BatchOutput:
        """Results, dead letters and the summary, from each model's ``(replies, call_ms)`` or its failure."""
        out, deltas, valid = batch.out, batch.deltas, batch.valid
        engagements: list[dict[str, Any]] = []
        items: dict[str, dict[str, float]] = {}
        latencies: list[float] = []
        lat_at: list[int] = []  # event time: each latency sample's ts
        primary = self.route.models[0]
        produced = now_ms()
        for model in self.route.models if valid else ():
            answer = replies[model]
            if isinstance(answer, InferenceFailed):
                for rec in valid:
                    self.dead_letter(out, rec, "infer", answer, attempts=answer.attempts,
                                     error_class=type(answer.cause).__name__)
                continue
            task, topic = self.tasks[model], self.outputs[model]
            cap = self.result_caps.get(topic)
            reply_list, call_ms = answer
            n_ok = 0
            for rec, reply in zip(valid, reply_list):
                if not reply.get("ok"):
                    self.dead_letter(out, rec, "infer", reply.get("error", "model error"),
                                     error_class=reply.get("error_class", "ModelError"))
                    continue
                # Time in Serve beyond the model itself: batching wait, queueing, transport.
                queue_ms = call_ms - float(reply.get("inference_ms", 0.0))
                result = result_record(rec, topic=topic, reply=reply, queue_ms=queue_ms, produced=produced)
                if cap is not None and len(result.value) + len(result.key or b"") > cap:
                    self.dead_letter(out, rec, "produce", f"its {model} result is {len(result.value):,} bytes, over "
                                     f"what topic {topic} takes ({cap:,}: its max.message.bytes less framing); "
                                     "raise the topic's max.message.bytes or limit the model's output",
                                     error_class="RecordTooLarge")
                    continue
                out.records.append(result)
                out.ok.add((rec.partition, rec.offset))
                out.observed.append((task, rec.event, reply["result"]))
                if rec.counted:  # a replayed event was counted by its partition's previous owner
                    if model == primary:  # one latency sample and one engagement per event, not per model
                        latencies.append(float(produced - rec.event.ts))
                        lat_at.append(rec.event.ts)
                    self._account(rec, task, reply["result"], deltas, engagements, items, primary=model == primary)
                n_ok += 1
            out.results += n_ok
            if n_ok:
                METRICS.results_out.labels(self.name, topic).inc(n_ok)
        if latencies:
            if isinstance(deltas, EventDeltas):
                by_pane: dict[int, list[float]] = {}
                for ms, ts in zip(latencies, lat_at):
                    by_pane.setdefault(ts - ts % deltas.step_ms, []).append(ms)
                for pane, values in by_pane.items():
                    deltas.latencies(self.name, values, at=pane)
            else:
                deltas.latencies(self.name, latencies)
            observe = self._e2e.observe
            for ms in latencies:
                observe(max(0.0, ms / 1000))
        # Counted per event: "out" has at least one result, "dlq" at least one dead letter
        # (an image can have both when one of its two models fails). Replayed events are not.
        skip = batch.uncounted
        if batch.times:  # event time: each event under its own ts
            for fld, done in (("out", out.ok), ("dlq", out.dead)):
                for po in done - skip if skip else done:
                    deltas.add("events", self.name, fld, 1.0, at=batch.times[po])
        else:
            if n_out := len(out.ok - skip if skip else out.ok):
                deltas.add("events", self.name, "out", n_out)
            if n_dlq := len(out.dead - skip if skip else out.dead):
                deltas.add("events", self.name, "dlq", n_dlq)
        for (stage, reason), n in out.dlq_reasons.items():
            METRICS.dlq.labels(self.name, stage, reason).inc(n)
        if self.summary_topic:
            # Sent also when nothing in it is counted: its ranges tell a later owner what was summarized.
            # The batch_summary.v1 contract (schemas/summary.py), built as a dict on the hot path and
            # checked against the model by the contract tests.
            summary = {"route": self.name, "ts": produced, "topic": self.input_topic,
                       "ranges": {str(p): span for p, span in batch.ranges.items()},
                       "metrics": deltas.as_dict(), "engagements": engagements,
                       "items": [{"item_id": k, "labels": v} for k, v in items.items()]}
            if isinstance(deltas, EventDeltas):
                summary["windows"] = deltas.as_windows()
                summary["max_ts"] = {str(p): ts for p, ts in batch.max_ts.items()}
            out.records.append(OutRecord(self.summary_topic, self.name.encode(), orjson.dumps(summary),
                                           partition=SUMMARY_PARTITION))
        return out

    def fail_all(self, records: list[InputRecord], err: BaseException) -> BatchOutput:
        """Every record dead-lettered with ``err`` (a bug must not lose events)."""
        out = BatchOutput()
        for rec in records:
            self.dead_letter(out, rec, "infer", err)
        for (stage, reason), n in out.dlq_reasons.items():
            METRICS.dlq.labels(self.name, stage, reason).inc(n)
        return out

    def dead_letter(self, out: BatchOutput, rec: InputRecord, stage: str, error: BaseException | str, *,
                    attempts: int = 1, error_class: str | None = None) -> None:
        """The one place a record becomes a dead letter (record, offset bookkeeping and metric reason)."""
        record = dead_letter(rec, topic=self.dlq_topic, route=self.name, stage=stage, error=error,
                             attempts=attempts, error_class=error_class, max_bytes=self.max_dead_letter_bytes)
        out.records.append(record)
        out.dead.add((rec.partition, rec.offset))
        reason = error_class or (type(error).__name__ if isinstance(error, BaseException) else "Error")
        out.dlq_reasons[(stage, reason)] += 1

    def _account(self, rec: InputRecord, task: str, result: dict[str, Any], deltas: Deltas,
                 engagements: list[dict[str, Any]], items: dict[str, dict[str, float]], *, primary: bool) -> None:
        """Analytics deltas and recommendation signals of one successful result."""
        ev, name = rec.event, self.name
        add = deltas.add
        for delta in TASKS[task].deltas(result, name, ev.stream_id if self.has_stream else None):
            add(*delta, at=ev.ts)
        labels = item_labels(task, result)
        if ev.item_id and labels:
            merged = items.setdefault(ev.item_id, {})
            for k, v in labels.items():
                merged[k] = max(merged.get(k, 0.0), v)
        if primary and ev.user_id and ev.item_id:
            engagements.append({"user_id": ev.user_id, "item_id": ev.item_id, "event_id": ev.event_id,
                                "weight": engagement_weight(task, result)})
