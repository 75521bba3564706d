"""How the Faust worker reaches the models: it joins the Ray cluster as a client and calls
Serve deployments through ``DeploymentHandle``s (never importing model code).

Call :func:`connect_ray` before the Faust worker starts: ``ray.init`` inside the
running worker fails because Faust has replaced stdout/stderr with a logging
proxy that has no ``fileno()`` (ENVIRONMENT.md), and ``ray.init`` replaces the
SIGTERM handler, which we restore so the worker still shuts down cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

from schemas.topology import RouteConfig, Topology
from topologies.engine.batch import InferenceFailed
from topologies.metrics import METRICS
from topologies.engine.ray_signals import keeping_signal_handlers

__all__ = ["ServeInfer", "call_with_retries", "connect_ray"]

log = logging.getLogger(__name__)


def connect_ray(address: str | None = None, namespace: str = "serve") -> None:
    """Join an existing Ray cluster (``address``, ``$RAY_ADDRESS`` or ``auto``) as a driver."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    if os.environ.get("INFERTIDE_RAY_JOIN") == "1" and address != "auto":
        address = _join_as_node(address)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    try:
        with keeping_signal_handlers():
            ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
    finally:
        sys.stdout, sys.stderr = out, err
    log.info("joined Ray cluster at %s", address)


JOIN_TIMEOUT_S = 120.0


def _join_as_node(head: str) -> str:
    """Start a raylet here that joins ``head`` with no CPUs or GPUs, then connect to it.

    A driver needs a local raylet; a Faust pod on Kubernetes is not a Ray node, so it
    joins the cluster as one that takes no tasks (KubeRay's head stays the scheduler).
    """
    import subprocess
    from pathlib import Path

    ray_cli = Path(sys.executable).with_name("ray")  # this environment's Ray, not whatever PATH holds
    cmd = [str(ray_cli), "start", f"--address={head}", "--num-cpus=0", "--num-gpus=0", "--disable-usage-stats"]
    try:  # an unreachable head makes `ray start` retry for ever: fail the pod instead, with the reason
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=JOIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"joining the Ray cluster at {head} took over {JOIN_TIMEOUT_S:.0f}s; check RAY_ADDRESS "
                           "and that the head's GCS port is reachable from this pod") from None
    if done.returncode != 0:
        raise RuntimeError(f"joining the Ray cluster at {head} failed ({done.returncode}): {done.stderr[-2000:]}")
    return "auto"


class ServeInfer:
    """``await infer(model_name, items)``: one call to the model's Serve deployment.

    Handles are created lazily, once per model, for the topology's Serve application.
    """

    def __init__(self, topology: Topology) -> None:
        self.app_name = topology.serve_app_name
        self._handles: dict[str, Any] = {}

    def handle(self, model: str) -> Any:
        h = self._handles.get(model)
        if h is None:
            from ray import serve

            h = serve.get_deployment_handle(model, app_name=self.app_name)
            self._handles[model] = h
        return h

    async def __call__(self, model: str, items: list[Any], trace: list[str] | None = None, *,
                       checkpoint: str | None = None) -> list[dict[str, Any]]:
        """``checkpoint``: one of the model's ``multiplex.checkpoints`` (rollouts), as Serve's multiplexed model id."""
        handle = self._handles.get(model)
        if handle is None:
            # The first call of a model gets its handle off the event loop: ``get_deployment_handle`` waits on the
            # Serve controller (a blocking ``ray.get``), which held every live batch of the worker for 0.5 s and more
            # under load when a rollout's first shadow or variant call came mid-stream (py-spy, bench --shadow).
            handle = await asyncio.to_thread(self.handle, model)
        if checkpoint:
            handle = handle.options(multiplexed_model_id=checkpoint)
        if trace:
            return await handle.infer.remote(items, trace=trace)
        return await handle.infer.remote(items)


async def call_with_retries(infer: Any, model: str, items: list[Any], route: RouteConfig,
                            trace: list[str] | None = None) -> tuple[list[Any], float]:
    """One model call with a timeout, retried with exponential backoff (timeouts, replica restarts).

    ``trace``: the ``traceparent`` of each traced event's ``infer`` span, passed to the replica
    (only when there is one: model callables without tracing take ``(model, items)``).

    Returns:
        the replies (one per item, in order) and the successful call's duration in ms.

    Raises:
        InferenceFailed: after ``route.max_attempts`` failed attempts; it carries the last error.
    """
    last: BaseException | None = None
    for attempt in range(1, route.max_attempts + 1):
        try:
            t0 = time.monotonic()
            call = infer(model, items, trace) if trace else infer(model, items)
            replies = await asyncio.wait_for(call, route.call_timeout_s)
            elapsed = time.monotonic() - t0
            if len(replies) != len(items):
                raise RuntimeError(f"{model} returned {len(replies)} replies for {len(items)} items")
            METRICS.serve_call.labels(route.name, model).observe(elapsed)
            return replies, elapsed * 1000
        except Exception as err:  # transient or not, retried a bounded number of times
            last = err
            if attempt < route.max_attempts:
                METRICS.serve_retries.labels(route.name, model).inc()
                log.warning("route %s: %s call failed (attempt %d/%d): %r", route.name, model,
                            attempt, route.max_attempts, err)
                await asyncio.sleep(route.retry_backoff_s * 2 ** (attempt - 1))
    assert last is not None
    raise InferenceFailed(model, route.max_attempts, last)
