"""Fixtures for the manifest tests: the kustomize binary, the rendered overlays, the CRD schemas.

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
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.helpers import missing

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
    """The published CRD JSON schemas: ``$INFERTIDE_CRDS_DIR`` or the shared folder beside the repo."""
    path = Path(os.environ.get("INFERTIDE_CRDS_DIR") or REPO.parent / "shared" / "crds")
    if not any(path.glob("*/*.json")):
        missing(
            f"no CRD JSON schemas under {path}: RayService, ScaledObject, KafkaTopic and PodMonitor "
            "documents cannot be validated",
            "set INFERTIDE_CRDS_DIR to a folder laid out as <group>/<kind>_<version>.json",
        )
    return path
