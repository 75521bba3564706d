"""The whole local pipeline as one object: Kafka, topics, Ray + Serve, supervised Faust workers.

``infertide up``, ``infertide demo`` and ``infertide bench`` all run a
:class:`LocalStack`; it is a context manager, and stops what it started in the
reverse order (workers with SIGTERM, then Serve and Ray, then Kafka), each by
its own PID.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infertide.local.broker import LocalKafka, free_port, project_cache
from infertide.local.runtime import RayServe, WorkerProcess
from infertide.local.supervise import RestartPolicy
from schemas.topology import Topology, parse_topology

__all__ = ["LocalStack", "StackError", "port_free"]

Say = Callable[[str], None]


class StackError(RuntimeError):
    """A part of the local stack failed to start or died too often."""


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _reason(status: int, body: bytes) -> str:
    """The ``reason`` of a ``/healthz`` JSON answer, else the status and the start of the body (0: no answer)."""
    if status == 0:
        return f"no answer ({body.decode(errors='replace')})"
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        reason = None
    return str(reason) if reason else f"HTTP {status} {body[:200].decode(errors='replace')}"


@dataclass
class LocalStack:
    """Start, supervise and stop the local pipeline for one topology.

    Args:
        topology: the validated topology (its bootstrap/web port are adjusted as needed).
        workers: number of ``infertide worker`` processes (one consumer group).
        bootstrap: an existing Kafka to use; ``None`` starts a local broker.
        workdir: logs, effective config and broker data (``<cache>/stack-run/run-*`` by default, see ``project_cache``).
        env: extra environment for Ray and the workers (e.g. the offline model env).
        num_cpus: CPUs Ray may schedule on.
        say: progress callback (one line per step).
        max_restarts: restarts in a row (without a healthy minute between) before :meth:`supervise` gives up.
        kafka_port: port for the local broker (0: a free one).
        verbose: show Ray/Serve log lines on stderr too (they always go to files in ``workdir``).
    """

    topology: Topology
    workers: int = 1
    bootstrap: str | None = None
    workdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    num_cpus: int | None = None
    say: Say = lambda msg: None  # noqa: E731 - a default no-op callback
    max_restarts: int = 3
    kafka_port: int = 0
    verbose: bool = False
    kafka: LocalKafka | None = None
    serve: RayServe | None = None
    procs: list[WorkerProcess] = field(default_factory=list)
    policies: list[RestartPolicy] = field(default_factory=list)
    _due: dict[int, float] = field(default_factory=dict)  # worker index -> when its restart is due
    _answered: set[int] = field(default_factory=set)  # workers whose /healthz has answered since they started
    config_path: Path | None = None

    # ------------------------------------------------------------------ start
    def start(self, ready_timeout: float = 120.0) -> LocalStack:
        """Kafka -> topics -> Ray + Serve -> workers, waiting for each; stops what started on failure."""
        try:
            self._start(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, ready_timeout: float) -> None:
        from infertide.clients.admin import ensure_topics

        if self.workdir is None:
            base = project_cache() / "stack-run"
            base.mkdir(parents=True, exist_ok=True)
            self.workdir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        if self.bootstrap is None:
            self.say("starting a local Kafka broker (KRaft) on 127.0.0.1 ...")
            self.kafka = LocalKafka(self.workdir / "kafka", port=self.kafka_port).start()
            self.bootstrap = self.kafka.bootstrap
            self.say(f"Kafka ready at {self.bootstrap} ({time.monotonic() - t0:.1f}s)")
        else:
            self.say(f"using Kafka at {self.bootstrap}")
        data = self.topology.model_dump(mode="json")
        data["kafka"]["bootstrap_servers"] = self.bootstrap
        if not port_free(data["web_port"]):
            data["web_port"] = free_port()
        self.config_path = self.workdir / "topology.yaml"
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.topology = parse_topology(data, str(self.config_path))
        ensure_topics(self.topology)
        self.say(f"topics ready ({len(self.topology.routes)} routes)")
        t1 = time.monotonic()
        self.say(f"starting Ray and deploying Serve models: {', '.join(self.topology.models)} ...")
        self.serve = RayServe(self.topology, num_cpus=self.num_cpus, log_dir=self.workdir,
                              verbose=self.verbose, env=dict(self.env)).start()
        self.say(f"Serve app running on Ray at {self.serve.address} ({time.monotonic() - t1:.1f}s); "
                 f"Ray/Serve logs in {self.workdir}")
        t2 = time.monotonic()
        for i in range(self.workers):
            port = self.topology.web_port if i == 0 else free_port()
            self.procs.append(self._worker(i, port).start())
            self.policies.append(RestartPolicy(max_restarts=self.max_restarts))
        self.say(f"starting {self.workers} Faust worker(s) ...")
        for w in self.procs:
            w.wait_ready(ready_timeout)
        self.say(f"workers ready ({time.monotonic() - t2:.1f}s); total {time.monotonic() - t0:.1f}s")

    def _worker(self, i: int, port: int) -> WorkerProcess:
        assert self.serve is not None and self.config_path is not None and self.workdir is not None
        return WorkerProcess(self.config_path, self.serve.address, port, self.workdir / f"worker-{i}.log",
                             env=dict(self.env))

    @property
    def url(self) -> str:
        """The first worker's web address (dashboard, metrics, API)."""
        return f"http://127.0.0.1:{self.topology.web_port}"

    def get_json(self, path: str, timeout: float = 3.0) -> Any:
        """GET ``path`` from the first worker and decode JSON (``None`` when it does not answer)."""
        import orjson

        try:
            status, body = self.procs[0].get(path, timeout=timeout)
        except OSError:
            return None
        return orjson.loads(body) if status == 200 else None

    # ------------------------------------------------------------------ supervise
    def check(self, now: float | None = None) -> list[str]:
        """One supervision pass: restart exited or unhealthy workers with backoff; returns what happened.

        A worker that exited, or whose ``/healthz`` failed ``unhealthy_checks`` times in a row, is stopped and
        restarted after its :class:`RestartPolicy` delay. Raises :class:`StackError` when the policy gives up.
        """
        now = time.monotonic() if now is None else now
        events = []
        for i, w in enumerate(self.procs):
            policy = self.policies[i]
            if i in self._due:
                if now >= self._due[i]:
                    del self._due[i]
                    self.procs[i] = self._worker(i, w.web_port).start()
                    policy.restarted(now)
                    self._answered.discard(i)
                    events.append(f"worker {i} restarted (pid {self.procs[i].proc.pid})")  # type: ignore[union-attr]
                continue
            why = self._failure(i, w, now)
            if why is None:
                continue
            delay = policy.failed(now)
            if delay is None:
                w.stop(timeout=10)
                raise StackError(f"worker {i} {why}; restarted {policy.max_restarts} times in a row without a "
                                 f"healthy {policy.reset_after:.0f} s, giving up. Last log lines ({w.log_path}):\n"
                                 f"{w.tail(20)}")
            w.stop(timeout=10)
            self._due[i] = now + delay
            events.append(f"worker {i} {why}; restarting in {delay:g} s (log {w.log_path})")
        return events

    def _failure(self, i: int, w: WorkerProcess, now: float) -> str | None:
        """Why worker ``i`` must be restarted (exit, or the last of a run of failed ``/healthz``), else None."""
        if not w.alive():
            code = w.proc.returncode if w.proc else None
            return f"exited (code {code}: {w.tail(1).strip()[-200:] or 'no log output'})"
        try:
            status, body = w.get("/healthz", timeout=2.0)
        except OSError as err:
            if i not in self._answered:  # still starting up: not an answer yet
                return None
            status, body = 0, str(err).encode()
        self._answered.add(i)
        if status == 200:
            self.policies[i].healthy(now)
            return None
        if not self.policies[i].unhealthy():
            return None
        return f"unhealthy ({self.policies[i].unhealthy_checks} failed /healthz checks: {_reason(status, body)})"

    def supervise(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Until ``stop`` is set: watch the workers, restart failed ones, report through ``say``."""
        while not stop.wait(interval):
            for line in self.check():
                self.say(line)

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Workers (SIGTERM, then SIGKILL), then Serve and Ray, then Kafka; each step runs even if one fails."""
        for w in self.procs:
            try:
                w.stop(timeout=20)
            except Exception as err:  # noqa: BLE001 - keep stopping the rest
                self.say(f"stopping worker pid {w.proc.pid if w.proc else '?'} failed: {err!r}")
        self.procs.clear()
        if self.serve is not None:
            try:
                self.serve.stop()
            except Exception as err:  # noqa: BLE001
                self.say(f"stopping Ray/Serve failed: {err!r}")
            self.serve = None
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
