"""Fixtures for the manifest tests: the kustomize binary, the rendered overlays, the operators' CRDs, and
one local control plane (etcd + kube-apiserver) per session with the KubeRay and KEDA operators.

Tools the tests need but that cannot live in the project venv are found where the
Makefile installs them (``make kustomize``, ``make .cache/tools/checkov/bin/checkov``)
or where an environment variable says. Where one is missing the tests skip with the
install line on a developer's machine, and fail in CI (``CI`` set): a green CI must
mean the manifests were really checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.k8s.helpers import missing

if TYPE_CHECKING:
    from infertide.k8s.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
TOOLS = REPO / ".cache" / "tools"


def tool(env: str, local: Path, name: str, make_target: str) -> str:
    """Path of a tool: ``$ENV``, then the Makefile's install location, then ``PATH``."""
    found = os.environ.get(env) or (str(local) if local.is_file() else None) or shutil.which(name)
    if not found:
        missing(f"{name} not found (looked at ${env}, {local.relative_to(REPO)}, PATH)", f"run `make {make_target}`")
    return found  # type: ignore[return-value]


@pytest.fixture(scope="session")
def kustomize() -> str:
    return tool("KUSTOMIZE", TOOLS / "bin" / "kustomize", "kustomize", "kustomize")


@pytest.fixture(scope="session")
def checkov() -> str:
    return tool("CHECKOV", TOOLS / "checkov" / "bin" / "checkov", "checkov", ".cache/tools/checkov/bin/checkov")


@pytest.fixture(scope="session")
def rendered(kustomize: str) -> dict[str, list[dict[str, Any]]]:
    """Every overlay rendered by ``kustomize build``: overlay name -> its documents."""
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run(
            [kustomize, "build", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"kustomize build k8s/overlays/{overlay} failed:\n{proc.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


@pytest.fixture(scope="session")
def crds_dir() -> Path:
    """The operators' own CRDs (``make k8s-crds``: ``.cache/crds`` or ``$INFERTIDE_CRDS_DIR``), read by
    both the offline schema checks and the API server."""
    from infertide.k8s.crds import CRDS

    if not any(CRDS.glob("*.yaml")):
        missing(f"no CRDs under {CRDS}: RayService, ScaledObject, KafkaTopic and PodMonitor documents cannot be "
                "validated", "run `make k8s-crds`")
    return CRDS


@pytest.fixture(scope="package")
def control_plane(tmp_path_factory: pytest.TempPathFactory, crds_dir: Path) -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver for this folder's tests (started once per session, when the first test
    needs it), the CRDs installed; stopped by PID, operators included, when the last test of tests/k8s
    is done, so nothing keeps polling while other tiers run."""
    from infertide.k8s.controlplane import ControlPlane, tool
    from infertide.k8s.operators import install_crds

    for name in ("etcd", "kube-apiserver", "kubectl"):
        try:
            tool(name)
        except FileNotFoundError as err:
            missing(str(err), "run `make k8s-tools`")
    folder = tmp_path_factory.mktemp("control-plane")
    started = time.monotonic()
    with ControlPlane(folder) as cp:
        install_crds(cp, crds_dir)
        print(f"\n[k8s] control plane at {cp.server} (pids {cp.describe()['pids']}), CRDs installed, "
              f"{time.monotonic() - started:.1f} s; logs in {folder}")
        yield cp


@pytest.fixture(scope="package")
def applied(control_plane: ControlPlane, rendered: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Both overlays applied server-side (each into its own namespace), once per session."""
    from tests.k8s.kube import apply

    for overlay in OVERLAYS:
        apply(control_plane, rendered[overlay])
    return rendered


def _operator(start: Callable[[ControlPlane], tuple[Any, str]], cp: ControlPlane, name: str) -> str:
    from infertide.k8s.controlplane import tool

    try:
        tool(name)
    except FileNotFoundError as err:
        missing(str(err), "run `make k8s-tools`")
    return start(cp)[1]


@pytest.fixture(scope="package")
def kuberay(control_plane: ControlPlane) -> str:
    """The KubeRay operator running against the session's control plane; its metrics URL."""
    from infertide.k8s.operators import start_kuberay

    return _operator(start_kuberay, control_plane, "kuberay-operator")


@pytest.fixture(scope="package")
def keda(control_plane: ControlPlane) -> str:
    """The KEDA operator running against the session's control plane; its Prometheus metrics URL."""
    from infertide.k8s.operators import start_keda

    return _operator(start_keda, control_plane, "keda-operator")
