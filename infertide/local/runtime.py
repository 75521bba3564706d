"""The local runtime: a Ray cluster with the Serve app, and supervised Faust worker processes.

Used by ``infertide up`` / ``demo`` / ``bench`` and by the end-to-end tests, so
what the tests start is what users start. Everything binds to 127.0.0.1; every
process we start is stopped by its own PID.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from infertide.local.broker import free_port, terminate
from infertide.local.supervise import die_with_parent
from schemas.topology import Topology
from topologies.engine.ray_signals import keeping_signal_handlers

_ERROR_MARK = re.compile(r"\[(ERROR|CRITICAL)\]|^Traceback ")

__all__ = ["RayServe", "WorkerProcess", "deploy_failure", "local_env", "ray_session_logs_dir", "route_ray_logs"]

log = logging.getLogger(__name__)


def local_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for local Ray/Faust processes: loopback-only Ray, no usage stats.

    Ray 2.60 turns token auth on by default and a client passing an explicit
    address then fails with ``InvalidAuthToken``; a loopback-only dev cluster runs
    with auth disabled on both sides (ENVIRONMENT.md). Clusters on Kubernetes keep
    their own auth settings.
    """
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray starts workers at nice 15 so they never starve a driver; here the Serve replicas ARE the
    # models, and at nice 15 on a busy machine they get a few percent of a core (calls took 100 ms).
    env.setdefault("RAY_worker_niceness", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")  # worker logs reach their files as they happen
    env.update(extra or {})
    return env


def route_ray_logs(log_file: Path, verbose: bool = False) -> None:
    """Send this process's Ray and Serve log records to ``log_file``; to stderr as well only when ``verbose``.

    Serve configures its ``ray.serve`` logger with a stderr handler when imported,
    and ``ray.init`` one for ``ray``: their INFO lines would mix into the CLI's output.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in ("ray", "ray.serve"):
        logger = logging.getLogger(name)
        if not verbose:
            for h in list(logger.handlers):
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    logger.removeHandler(h)
        logger.addHandler(handler)
        logger.propagate = False


def deploy_failure(app_name: str, err: BaseException) -> str:
    """The line that says why a deploy failed: a replica's ``CheckpointError`` from Serve's status when
    there is one (Serve itself only says "Failed to update the deployments [...]"), else ``err``."""
    try:
        from ray import serve

        app = serve.status().applications.get(app_name)
        messages = [d.message for d in (app.deployments.values() if app else []) if d.message]
    except Exception:  # noqa: BLE001 - explaining must not hide the original error
        messages = []
    marker = "CheckpointError: "
    for message in messages:
        for line in message.splitlines():
            if marker in line:
                return line.split(marker, 1)[1].strip()
    return f"{err}" + (f"; {messages[0].splitlines()[-1]}" if messages else "")


def ray_session_logs_dir() -> str:
    """The logs folder of the Ray session this process started or joined (controller, replicas, raylet).

    Ray has no public API for it: this is the one place that reads Ray's private node object
    (``tests/unit/infertide/local/test_runtime.py`` fails if Ray renames it). Raises
    ``ImportError`` / ``AttributeError`` when it is gone, or before ``ray.init``.
    """
    from ray._private.worker import _global_node  # noqa: PLC2701 - no public way to the session dir

    if _global_node is None:
        raise AttributeError("no Ray node in this process (ray.init first)")
    return _global_node.get_logs_dir_path()


@dataclass
class RayServe:
    """A local Ray cluster started by this process (torn down with it) running the topology's Serve app.

    Args:
        topology: which models to deploy.
        num_cpus: CPUs Ray may schedule on (deployments take fractional CPUs from the config).
        env: environment for the Ray workers (the Serve replicas), e.g. the offline model env; given to
            them through the job's ``runtime_env``, not through this process's ``os.environ``.
        log_dir: where this process's Ray/Serve log lines go (``ray-driver.log``) and where
            ``ray-logs`` links to the Ray session's own logs (controller, replicas, raylet).
        verbose: also show Ray/Serve log lines on stderr.
    """

    topology: Topology
    num_cpus: int | None = None
    log_dir: Path | None = None
    verbose: bool = False
    env: dict[str, str] = field(default_factory=dict)
    address: str = ""

    def start(self) -> RayServe:
        """Start Ray (keeping this process's SIGTERM handler) and deploy the app; raises with the replica's reason."""
        with keeping_signal_handlers():
            self._start()
        return self

    def _start(self) -> None:
        # Ray's own switches (RAY_*) have no ray.init parameter: ray.init reads them from this process's
        # environment, and the GCS and raylet it starts inherit them. So they go into os.environ (setdefault:
        # the user's own values win); everything else reaches the replicas through runtime_env below.
        for k, v in local_env().items():
            if k.startswith("RAY_"):
                os.environ.setdefault(k, v)
        import ray
        from ray import serve

        from workers.app import deploy

        if not ray.is_initialized():
            ray.init(num_cpus=self.num_cpus or os.cpu_count(), include_dashboard=False,
                     _node_ip_address="127.0.0.1", namespace="serve", log_to_driver=self.verbose,
                     logging_level=logging.INFO if self.verbose else logging.WARNING,
                     runtime_env={"env_vars": dict(self.env)} if self.env else None)
        if self.log_dir is not None:
            route_ray_logs(self.log_dir / "ray-driver.log", self.verbose)
            self._link_session_logs()
        self.address = ray.get_runtime_context().gcs_address
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        try:
            deploy(self.topology)
        except Exception as err:  # noqa: BLE001 - the replica's reason is in Serve's status, not here
            raise RuntimeError(deploy_failure(self.topology.serve_app_name, err)) from err

    def _link_session_logs(self) -> None:
        assert self.log_dir is not None
        try:
            link = self.log_dir / "ray-logs"
            if not link.exists():
                link.symlink_to(ray_session_logs_dir())
        except (ImportError, AttributeError, OSError) as err:
            log.debug("no link to the Ray session logs: %s", err)

    def stop(self) -> None:
        """Delete the app (replicas drain), then end the local Ray cluster.

        Not ``serve.shutdown()``: its controller ends itself with ``ray.kill`` while the
        driver waits on it, and Ray reports that as a failed task on the driver's stderr.
        """
        import ray
        from ray import serve

        try:
            serve.delete(self.topology.serve_app_name)
        finally:
            ray.shutdown()


@dataclass
class WorkerProcess:
    """One ``infertide worker`` child process, reachable on its web port.

    Args:
        config_path: the topology YAML the worker loads.
        ray_address: the Ray cluster to join (GCS address).
        web_port: the Faust web port (overrides the topology's).
        log_path: where the child's output goes.
    """

    config_path: Path
    ray_address: str
    web_port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        cmd = [sys.executable, "-m", "infertide", "--config", str(self.config_path), "worker",
               "--ray-address", self.ray_address, "--web-port", str(self.web_port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:  # the child holds its own copy; ours would leak per restart
            # A stable, distinct id per worker: it names its transactional producers (exactly-once), so a
            # restart under the same id aborts what the crashed run left open instead of waiting it out.
            env = {"INFERTIDE_WORKER_ID": self.log_path.stem} | self.env
            self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=local_env(env),
                                         start_new_session=True, preexec_fn=die_with_parent())
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:  # noqa: S310 - loopback
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until ``/readyz`` answers 200 with partitions assigned; raises with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                status, body = self.get("/readyz")
                if status == 200 and b'"assigned_partitions":0' not in body:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 40, first_errors: int = 30) -> str:
        """The log's last ``n`` lines, after its first ERROR / CRITICAL / traceback lines (a crash's cause is
        often far above a shutdown's own noise)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        last = lines[-n:]
        start = next((i for i, line in enumerate(lines[:-n]) if _ERROR_MARK.search(line)), None)
        if start is None:
            return "\n".join(last)
        return "\n".join(["[first error]", *lines[start:start + first_errors], "[...]", "[last lines]", *last])

    def dump_stacks(self, wait_s: float = 1.0) -> None:
        """SIGUSR1: the worker logs every asyncio task's and thread's stack (to its log); then, where py-spy is
        installed, every thread's stack down to its native frames (a call stuck inside librdkafka shows only
        as a Python frame otherwise) is appended to the log too."""
        if not self.alive():
            return
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGUSR1)
        time.sleep(wait_s)
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.is_file():
            return
        try:
            dump = subprocess.run([str(spy), "dump", "--native", "--pid", str(self.proc.pid)], capture_output=True,
                                  text=True, timeout=60)
            text = dump.stdout + dump.stderr
        except (OSError, subprocess.TimeoutExpired) as err:
            text = f"py-spy dump failed: {err}"
        with self.log_path.open("a") as log_file:
            log_file.write(f"\n--- py-spy dump --native --pid {self.proc.pid}\n{text}\n")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash case (nothing flushed, nothing committed)."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (Faust commits what was acknowledged), SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        return terminate(self.proc, timeout)
