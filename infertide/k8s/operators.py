"""The KubeRay and KEDA operators run out of cluster against a :class:`ControlPlane`, and kubectl for it.

Each operator is the upstream binary (``make k8s-tools``), run as its own Deployment would run it, with
the control plane's admin kubeconfig instead of a service account, leader election off, and every
endpoint it serves (metrics, probes, KEDA's gRPC metrics service) on a free port of 127.0.0.1. They are
stopped by PID with the control plane (:meth:`ControlPlane.stop` stops every process in its list).
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from infertide.k8s.controlplane import ControlPlane, ManagedProcess, free_port, tool

__all__ = ["KEDA_NAMESPACE", "install_crds", "kubectl", "metrics", "start_keda", "start_kuberay"]

KEDA_NAMESPACE = "keda"


def kubectl(cp: ControlPlane, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run kubectl against ``cp``; with ``check`` a failure raises with kubectl's own message."""
    proc = subprocess.run([str(tool("kubectl")), "--kubeconfig", str(cp.kubeconfig), *args], input=input,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def install_crds(cp: ControlPlane, crds: Path) -> list[str]:
    """Create every CRD in ``crds`` (or, where they exist, apply them server-side: KubeRay's are too large
    for client-side apply's last-applied annotation) and wait until each is established. Returns the names."""
    files = sorted(crds.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no CRDs in {crds}: run `make k8s-crds`")
    args = [arg for f in files for arg in ("-f", str(f))]
    # create is about twice as fast as a server-side apply of these 4 MB of schemas
    if kubectl(cp, "create", *args, "-o", "name", check=False).returncode != 0:
        kubectl(cp, "apply", "--server-side", "--force-conflicts", "--field-manager=infertide", *args, "-o", "name")
    names = kubectl(cp, "get", "crd", "-o", "name").stdout.split()
    kubectl(cp, "wait", "--for=condition=Established", "--timeout=60s", *names)
    return names


def _wait_ready(proc: ManagedProcess, url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}; its log ({proc.log}):\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{proc.name} not ready at {url} after {timeout_s} s; its log:\n{proc.tail()}")


def start_kuberay(cp: ControlPlane) -> tuple[ManagedProcess, str]:
    """The KubeRay operator watching every namespace. Returns the process and its metrics URL."""
    probe, metrics_port = free_port(), free_port()
    proc = ManagedProcess.start("kuberay-operator", [
        tool("kuberay-operator"), f"--kubeconfig={cp.kubeconfig}",
        f"--metrics-addr=127.0.0.1:{metrics_port}", f"--health-probe-bind-address=127.0.0.1:{probe}",
        "--enable-leader-election=false", "--log-stdout-encoder=console",
    ], cp.folder / "kuberay-operator.log")
    cp.processes.append(proc)
    _wait_ready(proc, f"http://127.0.0.1:{probe}/readyz")
    return proc, f"http://127.0.0.1:{metrics_port}/metrics"


def start_keda(cp: ControlPlane) -> tuple[ManagedProcess, str]:
    """The KEDA operator (ScaledObject controller, scalers, the HPA it owns) watching every namespace.

    KEDA keeps cluster-wide objects in namespace ``keda`` (created here). Its gRPC metrics service, which
    KEDA's metrics adapter would query, serves mTLS with the control plane's CA and certificate.
    Returns the process and its Prometheus metrics URL (``keda_scaler_metrics_value``: what it read).
    """
    kubectl(cp, "create", "namespace", KEDA_NAMESPACE, check=False)
    probe, metrics_port, grpc = free_port(), free_port(), free_port()
    ca_dir = cp.folder / "keda-ca"
    ca_dir.mkdir(exist_ok=True)
    proc = ManagedProcess.start("keda-operator", [
        tool("keda-operator"), f"--kubeconfig={cp.kubeconfig}", "--leader-elect=false",
        f"--metrics-bind-address=127.0.0.1:{metrics_port}", f"--health-probe-bind-address=127.0.0.1:{probe}",
        f"--metrics-service-bind-address=127.0.0.1:{grpc}", f"--cert-dir={cp.certs}", f"--ca-dir={ca_dir}",
        "--zap-log-level=info", "--zap-encoder=console",
    ], cp.folder / "keda-operator.log", env={
        "WATCH_NAMESPACE": "", "POD_NAMESPACE": KEDA_NAMESPACE, "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        "OPERATOR_NAME": "keda-operator", "KEDA_HTTP_DEFAULT_TIMEOUT": "3000",
    })
    cp.processes.append(proc)
    _wait_ready(proc, f"http://127.0.0.1:{probe}/readyz")
    return proc, f"http://127.0.0.1:{metrics_port}/metrics"


def metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()
