"""Installed like a library: the wheel in a fresh venv runs the CLI, a broker and a produce/tail round trip,
and writes its caches to the user's cache folder, never into site-packages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import orjson
import pytest

from infertide.local.broker import KAFKA_VERSION, free_port, project_cache

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    t0 = time.monotonic()
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "INFERTIDE_CACHE")}
    # 1. Build the wheel from a copy (setuptools writes build/ and egg-info next to the sources),
    #    with the venv's setuptools: no download of a build backend.
    src = tmp_path / "src"
    src.mkdir()
    for part in ("pyproject.toml", "README.md", "LICENSE", "schemas", "workers", "topologies", "infertide"):
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif (ROOT / part).is_file():
            shutil.copy2(ROOT / part, src / part)
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "dist")], base_env, tmp_path, timeout=180)
    wheel = next((tmp_path / "dist").glob("infertide-*.whl"))
    # 2. A fresh venv that sees the shared venv's dependencies (a .pth line), not its editable infertide.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base_env, tmp_path)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     base_env, tmp_path).strip())
    (site / "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], base_env, tmp_path)
    # 3. The installed CLI, with the user cache folder in tmp (XDG_CACHE_HOME) and the jars already there.
    cache = tmp_path / "xdg" / "infertide"
    cache.mkdir(parents=True)
    (cache / "kafka").symlink_to(project_cache() / "kafka")  # jars: fetched once per machine by `make jars`
    env = {**base_env, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "COLUMNS": "200"}
    cli = str(venv / "bin" / "infertide")
    where = _run([str(py), "-c", "import infertide, infertide.local.broker as b; print(infertide.__file__); "
                  "print(b.project_cache())"], env, tmp_path).split()
    assert where[0].startswith(str(site)), where  # the wheel's copy, not the checkout
    assert where[1] == str(cache)
    assert "Streaming inference" in _run([cli, "--help"], env, tmp_path)
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    _run([cli, "kafka", "start", "--port", str(port)], env, tmp_path)
    try:
        assert (cache / "kafka-run" / "broker.pid").is_file()
        _run([cli, "topics", "create", "--bootstrap", bootstrap], env, tmp_path)
        _run([cli, "produce", "text", "installed from a wheel", "--user", "u1", "--bootstrap", bootstrap],
             env, tmp_path)
        out = _run([cli, "tail", "text", "--from-beginning", "--raw", "--max", "1", "--timeout", "30",
                    "--bootstrap", bootstrap], env, tmp_path)
        event = orjson.loads(out.splitlines()[0])
        assert event["text"] == "installed from a wheel" and event["user_id"] == "u1"
    finally:
        _run([cli, "kafka", "stop"], env, tmp_path)
    assert not (cache / "kafka-run" / "broker.pid").exists()
    written = [p.relative_to(site) for p in site.rglob("*") if ".cache" in p.parts or p.name == "kafka-run"]
    assert written == [], f"the installed package wrote into site-packages: {written}"
    took = time.monotonic() - t0
    print(json.dumps({"wheel_test_s": round(took, 1), "kafka": KAFKA_VERSION}))
    assert took < 120, took
