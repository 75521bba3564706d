"""A real single-node Apache Kafka (KRaft) from Maven Central jars, for local runs and CI.

The jars are fetched once with Maven (``infertide/local/kafka_jars/pom.xml``) into
``<cache>/kafka/<version>/libs`` (see :func:`project_cache`) and reused. :class:`LocalKafka` formats a data
directory, starts ``kafka.Kafka`` bound to 127.0.0.1, waits until it answers a
metadata request and stops it by PID.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infertide.local.broker_tls import SaslSsl
from infertide.local.class_archive import ClassArchive
from infertide.local.supervise import die_with_parent

__all__ = [
    "KAFKA_VERSION", "BrokerError", "LocalKafka", "answers_metadata", "ensure_class_archive", "ensure_jars",
    "free_port", "new_cluster_id", "project_cache", "stop_pid_file", "stop_pid_files", "terminate",
]

KAFKA_VERSION = os.environ.get("INFERTIDE_KAFKA_VERSION", "4.1.1")
POM = Path(__file__).resolve().parent / "kafka_jars" / "pom.xml"


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or reached."""


def project_cache() -> Path:
    """Where jars, tiny models and run folders go: ``$INFERTIDE_CACHE``; else ``.cache/`` of a source
    checkout; else, installed from a wheel, the user's cache folder (``~/.cache/infertide`` on Linux).

    Never the installed package's folder: site-packages is not ours to write in.
    """
    from infertide.settings import Settings

    if (cache := Settings().cache) is not None:
        return cache
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and "site-packages" not in root.parts:
        return root / ".cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("infertide", appauthor=False))


# Where free_port looks: below Linux's ephemeral range (32768-60999), which every `bind(0)` draws from, and
# above Ray's worker ports (10002-19999). A port chosen now is bound later by another process (a worker's web
# port, a broker's listener); drawn from the ephemeral range, a process starting meanwhile could take it first:
# once in a clean-clone run, a worker's readiness probe was answered with HTTP/2 bytes from a Ray gRPC server.
FREE_PORTS = range(20000, 32768)


def free_port() -> int:
    """A loopback TCP port free now, from ``FREE_PORTS`` (any free port if none of 50 tries is)."""
    rng = random.SystemRandom()
    for _ in range(50):
        port = rng.choice(FREE_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_jars(version: str = KAFKA_VERSION, quiet: bool = True) -> Path:
    """The broker's classpath folder, fetched with Maven on first use and cached."""
    libs = project_cache() / "kafka" / version / "libs"
    if (libs / f"kafka_2.13-{version}.jar").is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (`mvn`) is needed once to fetch the Kafka jars; install it (apt-get install maven)")
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-B", "-f", str(POM), f"-Dkafka.version={version}", "dependency:copy-dependencies",
           f"-DoutputDirectory={libs}"]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (libs / f"kafka_2.13-{version}.jar").is_file():
        raise BrokerError(f"fetching Kafka {version} jars failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return libs


_LOG4J = """log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


@dataclass
class LocalKafka:
    """One KRaft broker+controller on loopback (alone, or a node of :class:`infertide.local.cluster.LocalKafkaCluster`).

    Args:
        workdir: data, config and log folder (created).
        port: client port on 127.0.0.1 (0 picks a free one).
        heap: JVM heap, small by default.
        tie_to_parent: SIGTERM the broker when the process that started it dies (Linux); False for a detached one.
        sasl_ssl: clients connect with SASL_SSL (SCRAM-SHA-512 over TLS) instead of PLAINTEXT; the CA, the
            certificate and the passwords are made in ``workdir/tls`` (see :attr:`tls`).
        node_id: this node's KRaft id (1 alone; 1..N in a cluster).
        controller_port: its controller listener (0: a free one, kept in ``workdir/controller.port``).
        voters: ``controller.quorum.voters`` of the cluster (None: this node alone).
        cluster_id: the id its storage is formatted with (None: a new one; a cluster's nodes share one).
        replication: replication factor of ``__consumer_offsets``, the transaction log and auto-created
            topics (``default.replication.factor``): 1 alone, the node count in a cluster.
        min_isr: ``min.insync.replicas`` (broker default for every topic) and ``transaction.state.log.min.isr``.
    """

    workdir: Path
    port: int = 0
    heap: str = "512m"
    version: str = KAFKA_VERSION
    tie_to_parent: bool = True
    sasl_ssl: bool = False
    node_id: int = 1
    controller_port: int = 0
    voters: str | None = None
    cluster_id: str | None = None
    replication: int = 1
    min_isr: int = 1
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    tls: SaslSsl | None = field(default=None, repr=False)
    write_class_archive: bool = False
    _archive_pending: tuple[ClassArchive, Path] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / "broker.log"

    def _write_config(self, controller_port: int) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters or f"{self.node_id}@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "4",
            "offsets.topic.replication.factor": str(self.replication),
            "offsets.topic.num.partitions": "8",
            "default.replication.factor": str(self.replication),
            "min.insync.replicas": str(self.min_isr),
            "transaction.state.log.replication.factor": str(self.replication),
            "transaction.state.log.min.isr": str(self.min_isr),
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "message.max.bytes": str(16 * 1024 * 1024),
            "log.retention.hours": "24",
        }
        if self.tls is not None:
            props.update(self.tls.broker_properties(self.port, controller_port))
        path = self.workdir / "server.properties"
        path.touch(mode=0o600)  # it may hold the key store's and the broker's passwords
        path.chmod(0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j.properties").write_text(_LOG4J.format(log=self.workdir / "kafka-server.log"))
        return path

    def _java(self, libs: Path, *, broker: bool = False) -> list[str]:
        """The JVM's command line up to its main class, mapping the class archive (``class_archive.py``) if
        there is one; the broker's own JVM (``broker``) writes it at exit when ``write_class_archive``."""
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java 17+ is needed for the local Kafka broker (apt-get install openjdk-17-jre-headless)")
        archive = ClassArchive(libs, java)
        cds = archive.flags()
        if broker and self.write_class_archive and not cds:
            cds, pending = archive.write_flags()
            self._archive_pending = (archive, pending)
        return [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseSerialGC", *cds,
                f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}", "-cp", f"{libs}/*"]

    def start(self, timeout: float = 60.0) -> LocalKafka:
        """Format (first time only), start and wait until the broker answers.

        Starting again after :meth:`stop` on the same ``workdir`` (and port) keeps the topics,
        the records and the committed offsets: a broker restart, as clients see one.
        """
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        """Format (first time only) and start the JVM, without waiting: a cluster's nodes answer only once a
        majority of its controllers runs, so they are all launched before any is waited for."""
        libs = ensure_jars(self.version)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port()
        if self.sasl_ssl and self.tls is None:
            self.tls = SaslSsl.load_or_create(self.workdir / "tls")
        # A restart on the same folder keeps its data: same controller port, same cluster, no format.
        saved = self.workdir / "controller.port"
        data = self.workdir / "data"
        if self.controller_port == 0:
            self.controller_port = int(saved.read_text()) if saved.exists() and data.exists() else free_port()
        config = self._write_config(self.controller_port)
        if not (data / "meta.properties").exists():
            self._format(libs, config)
            saved.write_text(str(self.controller_port))
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen([*self._java(libs, broker=True), "kafka.Kafka", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=die_with_parent() if self.tie_to_parent else None)
        self.pid_file.write_text(str(self.proc.pid))

    def _format(self, libs: Path, config: Path) -> None:
        data = self.workdir / "data"
        if data.exists():  # a half-formatted folder from an interrupted start
            shutil.rmtree(data)
        cluster_id = self.cluster_id or new_cluster_id()
        scram = self.tls.format_args() if self.tls is not None else []  # salted hashes, no password
        fmt = subprocess.run([*self._java(libs), "kafka.tools.StorageTool", "format", "-t", cluster_id,
                              "-c", str(config), *scram], capture_output=True, text=True)
        if fmt.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{fmt.stdout}\n{fmt.stderr}")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerError(f"Kafka exited with {self.proc.returncode}; see {self.log_file}")
            try:
                if answers_metadata(self.bootstrap, **self.client_kwargs()):
                    return
            except Exception as err:  # noqa: BLE001 - keep polling until the deadline
                last = err
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"Kafka did not answer on {self.bootstrap} within {timeout}s ({last}); see {self.log_file}")

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python settings beyond the bootstrap that this listener needs (SASL_SSL: the password too)."""
        return self.tls.client_kwargs() if self.tls is not None else {}

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (clean shutdown), then SIGKILL after ``timeout``; only our own PID."""
        if self.proc is None:
            return
        code = terminate(self.proc, timeout)
        self._keep_archive(code)
        self.pid_file.unlink(missing_ok=True)
        self.proc = None

    def _keep_archive(self, returncode: int | None) -> None:
        if self._archive_pending is not None:
            archive, pending = self._archive_pending
            archive.keep(pending, returncode)
            self._archive_pending = None

    def kill(self) -> None:
        """SIGKILL, no clean shutdown (a crashed machine, as the cluster sees one); only our own PID.
        :meth:`start` on the same object brings the node back with its data."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self._keep_archive(self.proc.wait(10))
        self.pid_file.unlink(missing_ok=True)
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64 of a UUID) that does not start with ``-``."""
    cluster_id = "-"
    while cluster_id.startswith("-"):  # StorageTool reads "-t -xyz" as an option (1 in 64 ids); Kafka avoids them too
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cluster_id


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM a child we started, SIGKILL it after ``timeout``; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def ensure_class_archive(version: str = KAFKA_VERSION) -> Path | None:
    """The JVM class archive of the broker on these jars (``class_archive.py``): made once by starting and
    stopping a broker of its own in a temporary folder (seconds); None without Java or if it could not be made."""
    import tempfile

    java = shutil.which("java")
    if java is None:
        return None
    archive = ClassArchive(ensure_jars(version), java)
    if not archive.path.is_file():
        with tempfile.TemporaryDirectory(prefix="infertide-cds-") as tmp:
            node = LocalKafka(Path(tmp) / "kafka", version=version, write_class_archive=True)
            try:
                node.start()
            except BrokerError:
                return None  # an optimization only: brokers start without it
            finally:
                node.stop(timeout=60)
    return archive.path if archive.path.is_file() else None


def answers_metadata(bootstrap: str, **client_kw: Any) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=1):
        pass
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, client_id="infertide-probe",
                             **client_kw)
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def stop_pid_file(pid_file: Path, timeout: float = 20.0) -> bool:
    """Stop a detached broker started by ``infertide kafka start`` (by its recorded PID)."""
    return bool(stop_pid_files([pid_file], timeout))


def stop_pid_files(pid_files: list[Path], timeout: float = 20.0) -> list[int]:
    """Stop detached brokers by their recorded PIDs, all at once (a cluster's nodes shut down together: one
    by one, the last would wait for a controller quorum that is gone); SIGKILL what is left after
    ``timeout``. Returns the PIDs that were running."""
    pids: dict[int, Path] = {}
    for pid_file in pid_files:
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
            pids[pid] = pid_file
        except ProcessLookupError:
            pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                left.discard(pid)
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid_file in pids.values():
        pid_file.unlink(missing_ok=True)
    return list(pids)
