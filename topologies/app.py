"""The Faust app built from the topology: one routing agent per route, the aggregator, web views.

``create_app(topology)`` returns a configured ``faust.App``; ``run_worker``
joins Ray, builds the app and runs a Faust worker in this process.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections import deque
from typing import Any

import faust

from schemas.topology import RouteConfig, Topology
from topologies.aggregator import Aggregator
from topologies.live import LiveState
from topologies.metrics import METRICS
from topologies.pipeline import InferFn, RoutePipeline
from topologies.records import InputRecord, OutRecord

__all__ = ["InfertideApp", "create_app", "run_worker"]

log = logging.getLogger(__name__)


def _credentials(topology: Topology) -> Any:
    k = topology.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    ctx = None
    if k.security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=k.ssl_cafile)
        if k.ssl_certfile:
            ctx.load_cert_chain(k.ssl_certfile, k.ssl_keyfile)
    if k.security_protocol == "SSL":
        return faust.SSLCredentials(ctx)
    return faust.SASLCredentials(username=k.sasl_username, password=k.sasl_password(),
                                 mechanism=k.sasl_mechanism, ssl_context=ctx)


class InfertideApp:
    """The Faust app plus the live state the web views and dashboard read.

    Args:
        topology: the validated topology.
        infer: the model call; defaults to Serve handles (:class:`topologies.serve_client.ServeInfer`).
        web_host: where the web server binds (``INFERTIDE_WEB_HOST``; 127.0.0.1 by default).
    """

    def __init__(self, topology: Topology, *, infer: InferFn | None = None, web_host: str | None = None) -> None:
        if topology.delivery.processing_guarantee == "exactly-once":
            raise NotImplementedError(
                "delivery.processing_guarantee: exactly-once is not supported by the batched agents yet; "
                "use at-least-once (results carry event_id for de-duplication)"
            )
        if infer is None:
            from topologies.serve_client import ServeInfer

            infer = ServeInfer(topology)
        self.topology = topology
        self.infer = infer
        k = topology.kafka
        # The Faust app id is the consumer group id and prefixes internal topics and changelogs.
        self.app = faust.App(
            k.consumer_group,
            broker=[f"kafka://{b.strip()}" for b in k.bootstrap_servers.split(",")],
            broker_credentials=_credentials(topology),
            key_serializer="raw",
            value_serializer="raw",
            store="memory://",
            topic_partitions=topology.topics.partitions,
            topic_replication_factor=topology.topics.replication_factor,
            broker_session_timeout=k.session_timeout_s,
            broker_heartbeat_interval=k.heartbeat_interval_s,
            broker_commit_interval=k.commit_interval_s,
            producer_linger=k.producer_linger_s,
            consumer_auto_offset_reset="earliest",
            table_cleanup_interval=max(0.5, min(topology.analytics.window_s / 2, 5.0)),
            web_port=topology.web_port,
            web_host=web_host or os.environ.get("INFERTIDE_WEB_HOST", "127.0.0.1"),
            web_bind=web_host or os.environ.get("INFERTIDE_WEB_HOST", "127.0.0.1"),
            web_in_thread=False,
        )
        self.aggregator = Aggregator(self.app, topology)
        self.pipelines: dict[str, RoutePipeline] = {}
        self.source_topics = {topology.input_topic(r) for r in topology.routes}
        self.source_topics.add(self.aggregator.summary_topic.get_topic_name())
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        self.live = LiveState()
        self.started = time.time()
        self.last_commit_progress = time.monotonic()
        self._committed_seen: dict[Any, int] = {}
        for route in topology.routes:
            self._add_route(route)
        self.app.timer(interval=2.0)(self._watch_lag)
        from topologies.web import register_views

        register_views(self)

    async def _send(self, rec: OutRecord) -> Any:
        return await self.app.producer.send(rec.topic, rec.key, rec.value, None, None, list(rec.headers) or None)

    def _fatal(self, err: BaseException) -> None:
        # Stop the worker without committing what was not produced; the supervisor
        # (infertide up / Kubernetes) restarts it and it resumes from the last commit.
        log.critical("stopping worker: %r", err)
        self.app._crash(err)  # noqa: SLF001 - Faust's own way to crash the worker

    def _add_route(self, route: RouteConfig) -> None:
        topic = self.app.topic(self.topology.input_topic(route), key_serializer="raw", value_serializer="raw")
        pipe = RoutePipeline(self.topology, route, infer=self.infer, send=self._send,
                             summary_topic=self.aggregator.summary_topic.get_topic_name(), on_fatal=self._fatal,
                            observe=self.live.observe)
        self.pipelines[route.name] = pipe
        self.recent[route.name] = deque(maxlen=20)

        async def route_agent(stream: Any) -> None:
            async for events in stream.noack_take(route.batch_size, within=route.batch_within_s):
                records = [_input_record(e.message) for e in events]

                async def ack(evs: list[Any] = events) -> None:
                    for e in evs:
                        await stream.ack(e)

                await pipe.submit(records, ack)

        route_agent.__name__ = f"route_{route.name}"
        self.app.agent(topic, name=f"route-{route.name}")(route_agent)

    async def _watch_lag(self) -> None:
        """Consumer lag and commit progress per assigned partition, for /metrics and /healthz."""
        consumer = self.app.consumer
        committed_map = getattr(consumer, "_committed_offset", {})
        for tp in consumer.assignment():
            if tp.topic not in self.source_topics:
                continue  # table changelogs are read only during recovery
            high = consumer.highwater(tp)
            committed = committed_map.get(tp)
            if high is None:
                continue
            lag = high - (committed or 0)
            METRICS.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(lag, 0))
            if committed is not None:
                if self._committed_seen.get(tp) != committed:
                    self._committed_seen[tp] = committed
                    self.last_commit_progress = time.monotonic()
                METRICS.committed.labels(tp.topic, str(tp.partition)).set(committed)

    def stalled(self, after_s: float = 120.0) -> str | None:
        """Why the worker looks stuck (a failed pipeline, or lag with no commit progress), or None."""
        for name, pipe in self.pipelines.items():
            if pipe.failed is not None:
                return f"route {name} failed: {pipe.failed!r}"
        lag = sum(s.value for m in METRICS.consumer_lag.collect() for s in m.samples)
        if lag > 0 and time.monotonic() - self.last_commit_progress > after_s:
            return f"lag {int(lag)} with no commit progress for {after_s:.0f}s"
        return None


def _input_record(message: Any) -> InputRecord:
    headers = message.headers or {}
    if not isinstance(headers, dict):
        headers = {k: v for k, v in headers}
    return InputRecord(topic=message.topic, partition=message.partition, offset=message.offset,
                       key=message.key, value=message.value, headers=headers)


def create_app(topology: Topology, **kwargs: Any) -> InfertideApp:
    return InfertideApp(topology, **kwargs)


def run_worker(topology: Topology, *, ray_address: str | None = None, loglevel: str = "info") -> None:
    """Join Ray, build the app and run a Faust worker in this process until it stops."""
    from faust.worker import Worker

    from topologies.serve_client import connect_ray

    connect_ray(ray_address)
    infertide_app = create_app(topology)
    Worker(infertide_app.app, loglevel=loglevel).execute_from_commandline()
