"""The Faust app built from the topology: the route consumer, the analytics and recommendation folds, web views.

``create_app(topology)`` returns a configured ``faust.App``; ``run_worker``
joins Ray, builds the app and runs a Faust worker in this process.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import logging
import os
import signal
import socket
import ssl
import sys
import time
import traceback
from typing import Any

import faust
from mode import Service

from schemas.topology import Topology
from topologies.host import heap
from topologies.host.live import LiveState
from topologies.host.topics import InternalTopics
from topologies.engine.pipeline import InferFn
from topologies.engine.routes import RouteConsumer
from topologies.state.event_analytics import analytics_windows
from topologies.state.recommendations import Recommendations
from topologies.state.windows import AnalyticsWindows
import topologies.rollout  # noqa: F401  # registers the ``rollout`` window finalizer (topologies.state.analytics)

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
        infer: the model call; defaults to Serve handles (:class:`topologies.engine.serve_client.ServeInfer`).
        web_host: where the web server binds (``INFERTIDE_WEB_HOST``; 127.0.0.1 by default).
        settle_heap: once started, freeze the process's heap out of the cyclic collector's passes
            (:mod:`topologies.host.heap`); the worker process sets it, an app built inside another process not.
    """

    def __init__(self, topology: Topology, *, infer: InferFn | None = None, web_host: str | None = None,
                 settle_heap: bool = False) -> None:
        if infer is None:
            from topologies.engine.serve_client import ServeInfer

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
            broker_commit_interval=k.commit_every_s(False),
            producer_linger=k.producer_linger_s,
            consumer_auto_offset_reset="earliest",
            web_port=topology.web_port,
            web_host=web_host or os.environ.get("INFERTIDE_WEB_HOST", "127.0.0.1"),
            web_bind=web_host or os.environ.get("INFERTIDE_WEB_HOST", "127.0.0.1"),
            web_in_thread=False,
        )
        self.internal = InternalTopics(self.app, topology)
        self.app.service(self.internal.declarer())  # type: ignore[arg-type]  # first: before any summary is sent
        summaries = self.internal.summary.get_topic_name()
        self.live = LiveState()
        self.started = time.time()
        self.fatal: BaseException | None = None
        self.routes = RouteConsumer(topology, infer=infer, summary_topic=summaries, observe=self.live.observe,
                                    on_fatal=self._fatal)
        self.app.service(_Started(self.routes))  # type: ignore[arg-type]  # an instance is accepted
        self.windows: AnalyticsWindows | None = None
        if topology.analytics.enabled:
            self.windows = analytics_windows(topology, summaries)
            self.app.service(_Started(self.windows))  # type: ignore[arg-type]
        self.recommendations: Recommendations | None = None
        if topology.recommendations.enabled:
            worker_id = os.environ.get("INFERTIDE_WORKER_ID") or socket.gethostname()
            self.recommendations = Recommendations(topology, summaries, on_fatal=self._fatal, worker_id=worker_id)
            self.app.service(_Started(self.recommendations))  # type: ignore[arg-type]
        if settle_heap:  # last: once every client above has started
            self.app.service(_HeapSettled())  # type: ignore[arg-type]
        from topologies.host.web import register_views

        register_views(self)

    def _fatal(self, err: BaseException) -> None:
        # Stop without committing what was not produced: /readyz and /healthz go 503 at once, and the
        # process exits non-zero shortly after, so the supervisor (infertide up / Kubernetes) restarts
        # it and it resumes from the last commit. Exiting hard is deliberate: a graceful stop would
        # try to drain and commit, and Faust's own crash path can leave the process spinning.
        if self.fatal is not None:
            return
        self.fatal = err
        log.critical("stopping worker (exit %d in %.0fs): %r", FATAL_EXIT_CODE, FATAL_GRACE_S, err)
        asyncio.get_running_loop().call_later(FATAL_GRACE_S, _exit_now)

    def ready(self) -> tuple[bool, int]:
        """Whether this worker takes traffic (joined, not rebalancing, not failed), and its partitions."""
        ok = self.routes.started and self.fatal is None and not self.routes.rebalancing
        return ok, self.routes.assigned()

    def stalled(self, after_s: float = 120.0) -> str | None:
        """Why the worker looks stuck (a failed route, or lag with no commit progress), or None."""
        if self.fatal is not None:
            return f"fatal: {self.fatal!r}"
        if not self.routes.started:
            return None
        lag = self.routes.lag()
        if lag > 0 and self.routes.stalled_for() > after_s:
            return f"lag {lag} with no commit progress for {after_s:.0f}s"
        return None


FATAL_EXIT_CODE = 70  # EX_SOFTWARE
FATAL_GRACE_S = 1.0
EXIT_HANG_S = 30.0  # still there this long after the worker ended on an error other than SystemExit: dump threads, exit 1
#: After the worker stopped (offsets committed, producers flushed, groups left), what is left of its exit (Ray's
#: disconnect, the tracer's last export) gets this long; then the process ends anyway. Its exit takes 1-2 s here;
#: once, in a loaded clean-clone run, it took over 28 s and the test's 30 s grace SIGKILLed the worker.
EXIT_HOOKS_S = 10.0


def _exit_now(code: int = FATAL_EXIT_CODE) -> None:
    """End the process at once with ``code``, the log handlers and standard streams flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


class _Started(Service):
    """Runs a client with ``start()``/``stop()`` (the route consumer, the analytics and recommendation folds)
    inside the Faust worker's lifecycle: started after the app, stopped before."""

    def __init__(self, client: RouteConsumer | AnalyticsWindows | Recommendations, **kwargs: Any) -> None:
        self.client = client
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self.client.start()
        if isinstance(self.client, RouteConsumer):
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)

    async def on_stop(self) -> None:
        await self.client.stop()


class _HeapSettled(Service):
    """Freezes the started worker's heap out of the cyclic collector's passes (:mod:`topologies.host.heap`)."""

    async def on_start(self) -> None:
        heap.settle_heap()


def dump_tasks() -> None:
    """``kill -USR1 <worker pid>``: every asyncio task's stack and every thread's, to the log (a stuck route
    shows where it waits)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"--- task {task.get_name()}\n")
        task.print_stack(limit=12, file=out)
    out.write(_thread_stacks())
    log.warning("SIGUSR1: tasks and threads\n%s", out.getvalue())


def _thread_stacks() -> str:
    return "".join(f"--- thread {ident}\n" + "".join(traceback.format_stack(frame, limit=8))
                   for ident, frame in sys._current_frames().items())


def create_app(topology: Topology, **kwargs: Any) -> InfertideApp:
    return InfertideApp(topology, **kwargs)


def run_worker(topology: Topology, *, ray_address: str | None = None, loglevel: str = "info",
               settle_heap: bool = True) -> None:
    """Join Ray, build the app and run a Faust worker in this process until it stops.

    ``settle_heap``: see :class:`InfertideApp`; False keeps Python's collector as it is."""
    from faust.worker import Worker

    from topologies.engine.serve_client import connect_ray

    connect_ray(ray_address)
    infertide_app = create_app(topology, settle_heap=settle_heap)
    try:
        Worker(infertide_app.app, loglevel=loglevel).execute_from_commandline()
    except SystemExit as stopped:
        _exit_within(EXIT_HOOKS_S, stopped.code if isinstance(stopped.code, int) else int(stopped.code is not None))
    finally:  # an exit that hangs (a thread inside a native client, an atexit hook) says where, and ends
        faulthandler.dump_traceback_later(EXIT_HANG_S, exit=True)


def _exit_within(bound_s: float, code: int) -> None:
    """End the stopped worker's process with ``code`` once Ray is disconnected and the last spans are exported,
    or after ``bound_s`` with every thread's stack logged, whichever comes first. ``os._exit``: what else the
    interpreter's exit does (join the executors' threads, run the other atexit hooks) has no work left once the
    worker stopped, and is unbounded."""
    import threading

    import ray

    from schemas.tracing import shutdown_tracing

    def hooks() -> None:
        ray.shutdown()
        shutdown_tracing()

    runner = threading.Thread(target=hooks, name="exit-hooks", daemon=True)
    runner.start()
    runner.join(bound_s)
    if runner.is_alive():
        log.warning("exit: Ray's disconnect or the last span export still running after %.0fs; exiting "
                    "anyway. Threads:\n%s", bound_s, _thread_stacks())
    _exit_now(code)
