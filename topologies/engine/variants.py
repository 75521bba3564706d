"""Rollouts in the route engine: variants answer live events, shadows answer them again off the live path.

The pure rules (the sticky split, shadow sampling, the shadow queue, the comparison sums) live in
:mod:`topologies.rollout`; this module calls them from a route's engine (:mod:`topologies.engine.pipeline`).

Live (:meth:`RouteRollout.call`): for a model of the route with a rollout, a batch's valid events are
split by :meth:`topologies.rollout.RoutePlan.split_batch`; one Serve call per variant (a checkpoint goes
as Serve's multiplexed model id), all in flight together; the replies are put back in event order, each
with its ``variant`` (the result's ``variant`` field). Everything live goes through the batch's records
as before (so, with exactly-once, into the batch's transaction), and the per-variant sums
(:class:`topologies.rollout.RolloutDeltas`) go into the batch's summary (metric ``rollout``). A variant
whose call fails on every attempt dead-letters its own events only; when every variant failed the
model's call failed (the batch's events are dead-lettered as without a rollout).

Shadows (:meth:`RouteRollout.after_batch`): once a batch is answered, the events a shadow samples are
offered, with their live reply, to that shadow's :class:`topologies.rollout.ShadowQueue`; ``offer``
never waits, so a slow or dead shadow never holds a live batch or commit: a full queue sheds, counted in
``infertide_shadow_shed_total`` and in the batch's rollout sums. One task per shadow drains its queue: it
calls the shadow model, writes its results to the shadow's own topic (never a live topic) and one summary
record with the comparison sums (pairs, agreement, confusion, errors) to the summary topic, both with a
plain (non-transactional) producer of its own: shadow work is best effort, outside the delivery guarantee
(queued work is dropped when the worker stops; a replayed event may be shadowed again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from schemas.summary import SUMMARY_PARTITION
from schemas.topology import RouteConfig, Topology
from topologies.engine.batch import Decoded, InferenceFailed
from topologies.engine.records import InputRecord, OutRecord, now_ms, result_record
from topologies.engine.serve_client import call_with_retries
from topologies.metrics import METRICS
from schemas.rollout import changed_rollout, control_topic
from topologies.rollout import (METRIC, ModelPlan, RolloutDeltas, RoutePlan, ShadowPlan, ShadowQueue, Variant,
                                metric_key)

__all__ = ["RouteRollout", "ShadowDrain", "shadow_producer_for", "variant_infer"]

log = logging.getLogger(__name__)

# ``await call(model, items) -> (replies, call_ms)``: the pipeline's model call (retries, tracing).
CallFn = Callable[[str, list[Any]], Awaitable[tuple[list[Any], float]]]


def shadow_producer_for(topology: Topology, bootstrap: str | None = None) -> Callable[[], Any]:
    """The factory of a route's shadow producer: plain (never transactional), idempotent, acks=all."""

    def build() -> Any:
        from topologies.engine.producer import BatchProducer
        from topologies.kafka_settings import route_producer_config

        return BatchProducer(route_producer_config(topology, bootstrap))

    return build


def variant_infer(infer: Any, variant: Variant) -> Any:
    """``infer`` bound to ``variant``'s checkpoint (Serve's multiplexed model id); ``infer`` itself when it has none.

    The model infer callables take ``checkpoint=`` only when a rollout names one
    (:class:`topologies.engine.serve_client.ServeInfer` does)."""
    if not variant.checkpoint:
        return infer
    checkpoint = variant.checkpoint

    def call(model: str, items: list[Any], trace: list[str] | None = None) -> Awaitable[Any]:
        return infer(model, items, trace, checkpoint=checkpoint)

    return call


class RouteRollout:
    """One route's rollouts: its compiled plan, the live variant calls, its shadows' queues and drain tasks.

    Args:
        topology: the validated topology.
        route: the route (``route.rollout`` non-empty).
        infer: the model call (``infer(model, items[, trace], checkpoint=...)``).
        summary_topic: where the shadows' comparison sums go (None: not counted).
        producer_factory: builds the shadows' plain producer (``() -> BatchProducer``), called when the first
            shadow work is queued; None: shadow results are computed and compared but not written (tests).
        control: follow the rollout control topic (``schemas.rollout.control_topic``): variants changed
            while events flow (``infertide rollout set|promote|rollback|reset``).
    """

    def __init__(self, topology: Topology, route: RouteConfig, *, infer: Any, summary_topic: str | None,
                 producer_factory: Callable[[], Any] | None = None, control: bool = False) -> None:
        self.topology = topology
        self.route = route
        self.plan = RoutePlan.of(topology, route)
        self.infer = infer
        self.summary_topic = summary_topic
        self.input_topic = topology.input_topic(route)
        self.tasks = {m: topology.models[m].task for m in route.models}
        self.producer_factory = producer_factory
        self.models = {m for m, p in self.plan.models.items()
                       if p.ranges or p.shadows or p.checkpoint_field or p.base.checkpoint or p.base.name != p.model}
        self.drains: dict[tuple[str, str], ShadowDrain] = {
            (m, s.variant.name): ShadowDrain(self, m, s)
            for m in self.models for s in self.plan.models[m].shadows}
        self._producer: Any = None
        # Changes from the control topic: the plan in force has ``version``; each change is logged with the
        # offset at which it took effect in each input partition (the first batch that used it).
        self.version = 0
        self.changes: list[dict[str, Any]] = []
        self._used: dict[int, int] = {}  # partition -> the version its last batch used
        self.follower = ControlFollower(self) if control else None
        # per batch (by id of its Decoded): model -> per-event (variant, call_ms) of the live answers
        self._answered: dict[int, dict[str, list[tuple[Variant, float] | None]]] = {}

    @classmethod
    def of(cls, topology: Topology, route: RouteConfig, **kwargs: Any) -> RouteRollout | None:
        """The route's rollout engine, or None when no model of it has a rollout."""
        if not route.rollout:
            return None
        ro = cls(topology, route, **kwargs)
        return ro if ro.models else None

    def handles(self, model: str) -> bool:
        return model in self.models

    # -- live ---------------------------------------------------------------------------

    async def call(self, batch: Decoded, model: str, items: list[Any],
                   call: Callable[..., Awaitable[tuple[list[Any], float]]]) -> tuple[list[Any], float]:
        """One model's live answer for the batch, by variant: ``(replies in event order, call_ms)``
        (``call_ms``: the slowest variant's call).

        ``call(infer, model, items, records)``: the pipeline's call with retries (and tracing). Raises
        :class:`InferenceFailed` when every variant's call failed.
        """
        if self.follower is not None:
            await self.follower.caught_up()  # a restarted worker splits as the latest change says, from its first batch
        valid = batch.valid
        self._took_effect(valid)
        groups = self.plan.split_batch(model, [rec.event for rec in valid])
        answers = await asyncio.gather(*(call(variant_infer(self.infer, v), v.model, [items[i] for i in idx],
                                              [valid[i] for i in idx])
                                         for v, idx in groups), return_exceptions=True)
        replies: list[Any] = [None] * len(items)
        answered: list[tuple[Variant, float] | None] = [None] * len(items)
        longest, failed = 0.0, None
        for (variant, idx), answer in zip(groups, answers):
            if isinstance(answer, BaseException):
                if not isinstance(answer, InferenceFailed):
                    raise answer
                failed = answer
                for i in idx:
                    replies[i] = {"ok": False, "error": f"variant {variant.name}: {answer}",
                                  "error_class": type(answer.cause).__name__}
                    answered[i] = (variant, 0.0)
                continue
            reply_list, ms = answer
            longest = max(longest, ms)
            field = variant.result_field()
            for i, reply in zip(idx, reply_list):
                if isinstance(reply, dict):
                    reply = {**reply, "variant": field}
                replies[i] = reply
                answered[i] = (variant, ms)
        if failed is not None and all(isinstance(a, BaseException) for a in answers):
            raise failed
        self._answered.setdefault(id(batch), {})[model] = answered
        while len(self._answered) > 4 * self.route.max_in_flight:  # batches that failed before after_batch
            self._answered.pop(next(iter(self._answered)))
        return replies, longest

    def after_batch(self, batch: Decoded, replies: dict[str, Any]) -> None:
        """Once every model answered: the rollout sums into the batch's summary, shadow work into the queues."""
        answered = self._answered.pop(id(batch), {})
        valid = batch.valid
        for model in self.models:
            answer = replies.get(model)
            if answer is None:
                continue
            deltas = RolloutDeltas(self.tasks[model])
            live = [None] * len(valid) if isinstance(answer, InferenceFailed) else answer[0]
            who = answered.get(model)
            if who is not None:
                for rec, reply, w in zip(valid, live, who):
                    if w is not None and rec.counted:
                        ok = isinstance(reply, dict) and reply.get("ok")
                        deltas.answered(w[0].name, reply["result"] if ok else None, w[1])
            for shadow, idx in self.plan.shadow_batch(model, [rec.event for rec in valid]):
                drain = self.drains[(model, shadow.variant.name)]
                drain.start()
                work = [(valid[i], live[i]["result"] if isinstance(live[i], dict) and live[i].get("ok") else None)
                        for i in idx]
                shed = len(work) - drain.queue.offer(work)
                if shed:
                    drain.shed.inc(shed)
                    deltas.shed(shadow.variant.name, shed)
            key = metric_key(self.route.name, model)
            for fld, amount in deltas.as_dict().items():
                batch.deltas.add(METRIC, key, fld, amount)

    def forget(self, batch: Decoded) -> None:
        self._answered.pop(id(batch), None)

    # -- changes while events flow ------------------------------------------------------

    def apply(self, key: str, value: dict[str, Any] | None, offset: int) -> bool:
        """One control record (``key`` ``<route>/<model>``; ``value`` None: back to the config). Returns whether
        it changed this route's plan; a change that fails the config's checks is logged and ignored."""
        route, _, model = key.partition("/")
        if route != self.route.name or model not in self.models:
            return False
        try:
            ro = changed_rollout(self.topology, route, model, None if value is None else value.get("variants", []))
        except ValueError as err:
            log.error("route %s: rollout change of %s at control offset %d ignored: %s", route, model, offset, err)
            return False
        old = self.plan.models[model]
        plan = ModelPlan.compile(route, model, ro, {s.variant.name: s.topic for s in old.shadows})
        self.plan = RoutePlan(self.plan.route, {**self.plan.models, model: plan})
        self.version += 1
        variants = [{"name": v.name, "model": v.model, "checkpoint": v.checkpoint, "percent": v.percent}
                    for v in ro.variants]
        self.changes.append({"version": self.version, "model": model, "control_offset": offset,
                             "action": (value or {}).get("action", "reset"), "variants": variants,
                             "applied_ts": now_ms(), "effective": {}})
        log.info("route %s: rollout of %s changed (control offset %d, version %d): variants %s", route, model,
                 offset, self.version, variants)
        return True

    def _took_effect(self, valid: list[InputRecord]) -> None:
        """Log, per input partition, the first offset answered under each plan version."""
        if not self.changes:
            return
        first: dict[int, int] = {}
        for rec in valid:
            if self._used.get(rec.partition) != self.version and rec.partition not in first:
                first[rec.partition] = rec.offset
        for partition, offset in first.items():
            self._used[partition] = self.version
            change = self.changes[-1]
            change["effective"][str(partition)] = offset
            log.info("route %s: rollout version %d in effect on %s[%d] from offset %d", self.route.name,
                     self.version, self.input_topic, partition, offset)

    # -- shadows ------------------------------------------------------------------------

    def producer(self) -> Any:
        if self._producer is None and self.producer_factory is not None:
            self._producer = self.producer_factory()
        return self._producer

    def stats(self) -> dict[str, Any]:
        return {f"{m}/{name}": d.queue.stats() for (m, name), d in self.drains.items()}

    async def close(self) -> None:
        """Stop the shadows (queued work is dropped: best effort) and close their producer."""
        if self.follower is not None:
            await self.follower.close()
        await asyncio.gather(*(d.close() for d in self.drains.values()))
        if self._producer is not None:
            await self._producer.close()
            self._producer = None


class ShadowDrain:
    """One shadow of one model on a route: its bounded queue and the task that answers it."""

    def __init__(self, owner: RouteRollout, model: str, shadow: ShadowPlan) -> None:
        self.owner, self.model, self.shadow = owner, model, shadow
        self.queue: ShadowQueue[tuple[InputRecord, dict[str, Any] | None]] = ShadowQueue(shadow.queue_size)
        route = owner.route.name
        self.shed = METRICS.shadow_shed.labels(route, model, shadow.variant.name)
        self.depth = METRICS.shadow_queue.labels(route, model, shadow.variant.name)
        self.out = METRICS.shadow_results.labels(route, model, shadow.variant.name)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"shadow-{self.owner.route.name}-{self.model}-{self.shadow.variant.name}")

    async def close(self) -> None:
        self.queue.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        size = self.owner.route.batch_size
        while True:
            work = await self.queue.next_batch(size)
            if not work:
                return
            self.depth.set(len(self.queue))
            try:
                await self.answer(work)
            except asyncio.CancelledError:
                raise
            except Exception:  # best effort: a shadow's failure never reaches the live route
                log.exception("route %s: shadow %s of %s failed on %d events", self.owner.route.name,
                              self.shadow.variant.name, self.model, len(work))

    async def answer(self, work: Sequence[tuple[InputRecord, dict[str, Any] | None]]) -> list[OutRecord]:
        """Call the shadow for ``work``; write its results and the comparison sums; returns the records written."""
        owner, shadow = self.owner, self.shadow
        task = owner.tasks[self.model]
        kind = owner.route.kind
        items = [rec.event.text if kind == "text" else rec.event.image.model_dump(include={"data", "uri"})
                 for rec, _ in work]
        deltas = RolloutDeltas(task)
        records: list[OutRecord] = []
        name = shadow.variant.name
        try:
            replies, call_ms = await call_with_retries(variant_infer(owner.infer, shadow.variant),
                                                       shadow.variant.model, items, owner.route)
        except InferenceFailed as err:
            log.warning("route %s: shadow %s failed: %s", owner.route.name, name, err)
            deltas.shadow_error(name, len(work))
            replies, call_ms = [], 0.0
        produced = now_ms()
        field = shadow.variant.result_field()
        for (rec, live), reply in zip(work, replies):
            if not isinstance(reply, dict) or not reply.get("ok"):
                deltas.shadow_error(name)
                continue
            reply = {**reply, "variant": field}
            queue_ms = call_ms - float(reply.get("inference_ms", 0.0))
            records.append(result_record(rec, topic=shadow.topic, reply=reply, queue_ms=queue_ms, produced=produced))
            if live is not None:
                deltas.paired(name, live, reply["result"])
        if owner.summary_topic and deltas.data:
            # A batch summary's shape with no offset ranges: it covers no input (replays skip it), only adds sums.
            summary = {"route": owner.route.name, "ts": produced, "topic": owner.input_topic, "ranges": {},
                       "metrics": {f"{METRIC}|{metric_key(owner.route.name, self.model)}": deltas.as_dict()}}
            records.append(OutRecord(owner.summary_topic, owner.route.name.encode(), orjson.dumps(summary),
                                       partition=SUMMARY_PARTITION))
        producer = owner.producer()
        if producer is not None and records:
            delivered = await producer.send_all(records)
            await delivered
        self.out.inc(len(records) - (1 if owner.summary_topic and deltas.data else 0))
        return records


class ControlFollower:
    """Reads the rollout control topic (compacted, one partition) from its start for the life of the worker and
    applies each change to its route between two batches: a batch is split by one plan, and batches start in
    offset order, so a change takes effect at one offset per partition (logged, and in ``/api/rollout``).

    The first batch waits (at most ``CATCH_UP_S``) until the topic has been read to the end it had at start,
    so a restarted worker splits as the latest change says. Without the topic (not created), it logs once
    and keeps the config's split."""

    CATCH_UP_S = 15.0

    def __init__(self, owner: RouteRollout) -> None:
        self.owner = owner
        self.topic = control_topic(owner.topology)
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def caught_up(self) -> None:
        if self._ready.is_set():
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"rollout-control-{self.topic}")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready.wait()), self.CATCH_UP_S)
        except asyncio.TimeoutError:
            log.warning("route %s: the rollout control topic %s was not read to its end within %.0fs; splitting "
                        "as configured until it is", self.owner.route.name, self.topic, self.CATCH_UP_S)
            self._ready.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from topologies.kafka_settings import aiokafka_kwargs

        consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                    **aiokafka_kwargs(self.owner.topology.kafka))
        try:
            await consumer.start()
            tp = TopicPartition(self.topic, 0)
            if self.topic not in await consumer.topics():
                log.warning("rollout control topic %s does not exist (infertide topics create makes it); rollouts "
                            "keep their configured split", self.topic)
                self._ready.set()
                return
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            if end == 0:
                self._ready.set()
            while True:
                got = await consumer.getmany(tp, timeout_ms=500)
                for msg in got.get(tp, []):
                    try:
                        value = orjson.loads(msg.value) if msg.value is not None else None
                        self.owner.apply(msg.key.decode() if msg.key else "", value, msg.offset)
                    except Exception:  # a bad record must not stop the follower
                        log.exception("rollout control record at offset %d skipped", msg.offset)
                if not self._ready.is_set() and await consumer.position(tp) >= end:
                    self._ready.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rollout control topic %s: follower stopped; rollouts keep their current split", self.topic)
            self._ready.set()
        finally:
            await consumer.stop()
