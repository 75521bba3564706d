"""Security scan of the rendered manifests and the Dockerfile with checkov, plus the
container rules checkov cannot see inside custom resources.

checkov scans built-in kinds only, so each RayService head/worker pod template is
also scanned as a Pod that carries the RayService's annotations. A finding may only
be waived in the manifest, by a ``checkov.io/skip<N>: CKV_K8S_<n>=<reason>``
annotation whose reason is written out.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.conftest import REPO
from tests.k8s.helpers import docs_of

Rendered = dict[str, list[dict[str, Any]]]


def ray_pods(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    """The RayService's pod templates as Pods, so checkov's container checks reach them."""
    meta = rayservice["metadata"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{name}",
                "namespace": meta.get("namespace"),
                "labels": group["template"]["metadata"].get("labels", {}),
                "annotations": meta.get("annotations", {}),
            },
            "spec": group["template"]["spec"],
        }
        for name, group in groups
    ]


def run_checkov(checkov: str, args: list[str]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        # --skip-download: no network here; checks run from the installed package.
        [checkov, *args, "--skip-download", "--output", "json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode in (0, 1), f"checkov failed to run ({proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    return report if isinstance(report, list) else [report]


def findings(reports: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    failed, skipped, passed = [], [], 0
    for r in reports:
        results = r.get("results", {})
        failed += results.get("failed_checks", [])
        skipped += results.get("skipped_checks", [])
        passed += r.get("summary", {}).get("passed", 0)
    return failed, skipped, passed


def describe(check: dict[str, Any]) -> str:
    return f"{check['check_id']} {check['check_name']!r} on {check['resource']}"


@pytest.fixture(scope="module")
def scanned_dir(rendered: Rendered, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    for overlay, docs in rendered.items():
        pods = [p for _, rs in docs_of({overlay: docs}, "RayService") for p in ray_pods(rs)]
        (out / f"{overlay}.yaml").write_text(yaml.safe_dump_all(docs + pods, sort_keys=False))
    return out


def test_checkov_finds_nothing_unwaived_in_the_manifests(checkov: str, scanned_dir: Path) -> None:
    failed, skipped, passed = findings(run_checkov(checkov, ["-d", str(scanned_dir), "--framework", "kubernetes"]))
    assert passed > 100, f"checkov ran only {passed} checks: is it scanning the rendered files?"
    assert not failed, "checkov findings (fix them, or waive one with a reason as a checkov.io/skip annotation):\n" + (
        "\n".join(describe(c) for c in failed)
    )
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.strip()) > 20 and "No comment" not in reason, f"waiver without a reason: {describe(check)}"


def test_checkov_finds_nothing_in_the_dockerfile(checkov: str) -> None:
    failed, _, passed = findings(run_checkov(checkov, ["-f", str(REPO / "Dockerfile"), "--framework", "dockerfile"]))
    assert passed > 0
    assert not failed, "\n".join(describe(c) for c in failed)


def all_pods(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    pods = [(f"{o}: Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"])
            for o, d in docs_of(rendered, "Deployment")]
    pods += [(f"{o}: {p['metadata']['name']}", p["spec"])
             for o, rs in docs_of(rendered, "RayService") for p in ray_pods(rs)]
    return pods


def test_every_container_is_locked_down_and_bounded(rendered: Rendered) -> None:
    pods = all_pods(rendered)
    assert len(pods) == 6  # Faust + Ray head + Ray workers, per overlay
    for where, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        writable = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"] if not m.get("readOnly")}
        assert "/tmp" in writable, f"{where}: a read-only root needs an emptyDir on /tmp"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), f"{where}/{c['name']}: {bound}"
            assert ":" in c["image"] and not c["image"].endswith(":latest"), where
