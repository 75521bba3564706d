"""A local Kubernetes control plane: etcd and kube-apiserver on 127.0.0.1, no scheduler, no kubelet.

What it guarantees: every process it starts listens on 127.0.0.1 only, on ports picked free at start;
:meth:`ControlPlane.stop` (and leaving the ``with`` block) ends each of them by its PID, SIGTERM then
SIGKILL after a grace period, and nothing it started is left running. Objects are stored, validated,
defaulted and admitted exactly as on a real cluster (same binaries), but no pod ever runs: there is
no scheduler, kube-controller-manager or kubelet (the same trade as controller-runtime's envtest).

Authentication is one static bearer token of a ``system:masters`` user (``--token-auth-file``), served
over TLS with a CA made here; the kubeconfig written in the run folder carries both. The binaries are
built by ``make k8s-tools`` into ``.cache/tools/bin`` (or ``$INFERTIDE_K8S_BIN``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

__all__ = ["ControlPlane", "ManagedProcess", "bin_dir", "free_port", "tool"]

REPO = Path(__file__).resolve().parents[2]


def bin_dir() -> Path:
    """Where ``make k8s-tools`` puts the binaries: ``$INFERTIDE_K8S_BIN`` or ``.cache/tools/bin`` of the checkout."""
    return Path(os.environ.get("INFERTIDE_K8S_BIN") or REPO / ".cache" / "tools" / "bin")


def tool(name: str) -> Path:
    """The path of one built tool.

    Raises:
        FileNotFoundError: not built; the message names the make target that builds it.
    """
    path = bin_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build it with `make k8s-tools` (Go module proxy, see k8s/README.md)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ManagedProcess:
    """One child process with its log file, stopped by its PID."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    _log_file: IO[bytes] = field(repr=False)

    @classmethod
    def start(cls, name: str, argv: Sequence[str | Path], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> ManagedProcess:
        log_file = log.open("ab")
        proc = subprocess.Popen([str(a) for a in argv], stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
        return cls(name, proc, log, log_file)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_certificates(folder: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost signed by it, and the service-account signing key.

    Files: ``ca.crt``, ``tls.crt``, ``tls.key``, ``sa.key``, ``sa.pub`` (the names KEDA's metrics service
    expects in its ``--cert-dir`` too).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    valid = {"not_valid_before": now - dt.timedelta(minutes=5), "not_valid_after": now + dt.timedelta(days=30)}
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "infertide local control plane CA")])
    ca = (x509.CertificateBuilder(issuer_name=ca_name, subject_name=ca_name, public_key=ca_key.public_key(),
                                  serial_number=x509.random_serial_number(), **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    # The API server is reached as 127.0.0.1; in-cluster names are listed for clients that use them.
    sans = [x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder(issuer_name=ca_name, public_key=key.public_key(),
                                    subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
                                    serial_number=x509.random_serial_number(), **valid)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pkcs8 = {"encoding": pem, "format": serialization.PrivateFormat.PKCS8,
             "encryption_algorithm": serialization.NoEncryption()}
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "tls.crt").write_bytes(cert.public_bytes(pem))
    _write_secret(folder / "tls.key", key.private_bytes(**pkcs8))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_secret(folder / "sa.key", sa_key.private_bytes(**pkcs8))
    (folder / "sa.pub").write_bytes(sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))


@dataclass
class ControlPlane:
    """etcd + kube-apiserver in ``folder`` (data, certificates, logs, ``kubeconfig``).

    Example::

        with ControlPlane(Path("/tmp/cp")) as cp:
            subprocess.run([tool("kubectl"), "--kubeconfig", cp.kubeconfig, "get", "ns"])
    """

    folder: Path
    start_timeout_s: float = 90.0
    server: str = ""
    token: str = field(default="", repr=False)
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.folder / "kubeconfig"

    @property
    def certs(self) -> Path:
        return self.folder / "pki"

    def env(self) -> dict[str, str]:
        """Environment for a client run against this control plane (kubectl, an operator)."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        etcd, apiserver = tool("etcd"), tool("kube-apiserver")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.certs.mkdir(exist_ok=True)
        make_certificates(self.certs)
        self.token = secrets.token_urlsafe(32)
        tokens = self.folder / "tokens.csv"
        _write_secret(tokens, f'{self.token},infertide-admin,infertide-admin,"system:masters"\n'.encode())
        client, peer, secure = free_port(), free_port(), free_port()
        try:
            self.processes.append(ManagedProcess.start("etcd", [
                etcd, "--name", "default", "--data-dir", self.folder / "etcd",
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer}",
                # A throwaway store: no fsync (as envtest), and a small log between snapshots.
                "--unsafe-no-fsync", "--snapshot-count", "10000", "--log-level", "warn",
            ], self.folder / "etcd.log"))
            self._wait_http(f"http://127.0.0.1:{client}/health", "etcd", ssl_context=None)
            self.server = f"https://127.0.0.1:{secure}"
            self.processes.append(ManagedProcess.start("kube-apiserver", [
                apiserver,
                f"--etcd-servers=http://127.0.0.1:{client}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={secure}",
                f"--tls-cert-file={self.certs / 'tls.crt'}", f"--tls-private-key-file={self.certs / 'tls.key'}",
                f"--cert-dir={self.certs}",
                f"--token-auth-file={tokens}", "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.certs / 'sa.pub'}",
                f"--service-account-signing-key-file={self.certs / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # With no node, the default reconciler would publish 127.0.0.1 as the kubernetes
                # Service's endpoint, which the API server refuses (a loopback address).
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true", "--profiling=false", "--v=0",
            ], self.folder / "kube-apiserver.log"))
            context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
            self._wait_http(f"{self.server}/readyz", "kube-apiserver", ssl_context=context)
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop what :meth:`start` started (operators, then the API server, then etcd), each by its PID.

        Every process is stopped even when stopping one fails or is interrupted; the first error is
        raised at the end.
        """
        error: BaseException | None = None
        while self.processes:
            proc = self.processes.pop()
            try:
                proc.stop()
            except BaseException as err:  # noqa: BLE001 - keep stopping the others, then re-raise
                if proc.alive():
                    proc.proc.kill()
                error = error or err
        if error is not None:
            raise error

    def _wait_http(self, url: str, name: str, ssl_context: ssl.SSLContext | None) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        headers = {"Authorization": f"Bearer {self.token}"} if ssl_context else {}
        last: Any = None
        while time.monotonic() < deadline:
            proc = self.processes[-1]
            if not proc.alive():
                raise RuntimeError(f"{name} exited with {proc.proc.returncode}; its log ({proc.log}):\n{proc.tail()}")
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5,
                                            context=ssl_context) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as err:
                last = err
            time.sleep(0.25)
        raise TimeoutError(f"{name} not ready at {url} after {self.start_timeout_s} s ({last}); its log:\n"
                           f"{self.processes[-1].tail()}")

    def _write_kubeconfig(self) -> None:
        import base64

        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "infertide-local",
            "clusters": [{"name": "infertide-local", "cluster": {
                "server": self.server,
                "certificate-authority-data": base64.b64encode((self.certs / "ca.crt").read_bytes()).decode()}}],
            "users": [{"name": "infertide-admin", "user": {"token": self.token}}],
            "contexts": [{"name": "infertide-local", "context": {"cluster": "infertide-local", "user": "infertide-admin"}}],
        }
        _write_secret(self.kubeconfig, yaml.safe_dump(config, sort_keys=False).encode())

    def describe(self) -> dict[str, Any]:
        """What a user needs to reach it, and the PIDs to stop."""
        return {"server": self.server, "kubeconfig": str(self.kubeconfig),
                "pids": {p.name: p.proc.pid for p in self.processes}}

    def __str__(self) -> str:
        return json.dumps(self.describe())
