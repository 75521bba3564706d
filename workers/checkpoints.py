"""Where a model's checkpoint comes from and whether it loads here: one answer for the preflight
of ``infertide up``, the replica's load error, and ``infertide models pull / list``.

A ``model:`` in the topology is one of: a local file or folder (a fine-tuned
checkpoint), an ultralytics architecture (``yolo11n.yaml``, random init), an
ultralytics weight name (``yolo11n.pt``: cwd, then the ultralytics
``weights_dir``), or a Hugging Face hub id (the HF cache). :func:`locate` says,
without downloading anything, where it is, its version and size, or the one
line that explains why it cannot load and how to fix it.

It also owns a checkpoint's version (:func:`hf_version`, :func:`file_version`), which the model
classes stamp on every reply; ``workers.base`` imports from here, never the other way round.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable, Literal

from schemas.tasks import TASKS
from schemas.topology import ModelConfig

__all__ = ["Checkpoint", "CheckpointError", "Located", "file_version", "hf_version", "load_error", "locate", "pull"]

Kind = Literal["none", "path", "architecture", "ultralytics", "hub"]
# .torchscript: an ultralytics TorchScript export (`model.export(format="torchscript")`), which YOLO(path) loads.
_ULTRALYTICS_SUFFIXES = (".pt", ".yaml", ".yml", ".torchscript")
_HUB_WEIGHTS = ("*.json", "*.txt", "*.model", "*.safetensors")
#: Tasks served by ultralytics weights; every other task with a model loads a transformers folder.
_ULTRALYTICS_TASKS = {"detection"}
#: What a transformers checkpoint's config.json must show for a task: (test(config, architectures), what it is).
_HF_SHAPES: dict[str, tuple[Callable[[dict[str, Any], str], bool], str]] = {
    "sentiment": (lambda cfg, archs: "ForSequenceClassification" in archs, "a sequence classifier"),
    "tagging": (lambda cfg, archs: "text_config" in cfg and "vision_config" in cfg, "a CLIP-style image-text model"),
    "classification": (lambda cfg, archs: "ForImageClassification" in archs, "an image classifier"),
}
_FIX_OFFLINE = ("fix: run `infertide models pull` where the network is reachable (same cache folders), "
                "point `models.{name}.model` at a local checkpoint, or run `infertide up --tiny`")


class CheckpointError(RuntimeError):
    """A model's checkpoint cannot be loaded; the message is one line: model, source, why, fix."""


@dataclass(frozen=True)
class Checkpoint:
    """One model of a topology: its key under ``models:``, task, and the configured source."""

    name: str
    task: str
    source: str
    revision: str | None = None

    @classmethod
    def of(cls, name: str, cfg: ModelConfig) -> Checkpoint:
        return cls(name, cfg.task, cfg.model, cfg.revision)

    @property
    def kind(self) -> Kind:
        spec = TASKS.get(self.task)
        if (spec is not None and not spec.needs_model) or not self.source:
            return "none"
        if Path(self.source).expanduser().exists():
            return "path"
        if self.source.endswith((".yaml", ".yml")):
            return "architecture"
        if self.source.endswith(".pt") and "/" not in self.source:
            return "ultralytics"
        if self.source.startswith(("/", "./", "../", "~")) or self.source.endswith(_ULTRALYTICS_SUFFIXES):
            return "path"  # a path that does not exist: reported by locate()
        return "hub"


@dataclass(frozen=True)
class Located:
    """What :func:`locate` found: the local path, version and size, or the problem (one line)."""

    checkpoint: Checkpoint
    path: Path | None = None
    version: str | None = None
    size: int | None = None
    problem: str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@cache
def _reachable(host: str, timeout: float = 3.0) -> str | None:
    """``None`` when ``host:443`` accepts a TCP connection, else why not (no DNS, refused, timeout)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as err:
        return f"{host} is unreachable ({type(err).__name__}: {err})"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.resolve().stat().st_size for p in path.rglob("*") if p.is_file())


def _wrong_task(cp: Checkpoint, path: Path) -> str | None:
    """Why a local checkpoint cannot serve the task (``None`` when it can, as far as its config says)."""
    is_ultralytics = path.is_file() and path.suffix in _ULTRALYTICS_SUFFIXES
    if cp.task in _ULTRALYTICS_TASKS:
        return None if is_ultralytics else (
            "is not an ultralytics weight file (.pt), TorchScript export (.torchscript) or architecture (.yaml)")
    if is_ultralytics:
        return f"is an ultralytics file, but task {cp.task} needs a transformers checkpoint folder"
    cfg_file = path / "config.json" if path.is_dir() else None
    if cfg_file is None or not cfg_file.is_file():
        return "has no config.json (not a transformers checkpoint folder)"
    cfg = json.loads(cfg_file.read_text())
    archs = " ".join(cfg.get("architectures") or [])
    test, what = _HF_SHAPES.get(cp.task, (lambda c, a: True, ""))
    if not test(cfg, archs):
        return f"is a {archs or cfg.get('model_type', '?')} model, not {what} (task {cp.task})"
    return None


def file_version(*paths: str | Path) -> str:
    """A short sha256 over the given weight files (sorted), for models without a revision."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()[:12]


def hf_version(model: Any, source: str, revision: str | None) -> str:
    """The version of a transformers model: the configured revision, the hub commit, or a weights hash."""
    if revision:
        return revision
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit:
        return str(commit)
    path = Path(source)
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        if weights:
            return file_version(*weights)
        cfg = path / "config.json"
        if cfg.is_file():
            return file_version(cfg)
    return "unknown"


def _line(cp: Checkpoint, why: str, fix: str | None = None) -> str:
    return f"model {cp.name!r} ({cp.task}): {cp.source} {why}; {fix or _FIX_OFFLINE.format(name=cp.name)}"


def _locate_local(cp: Checkpoint, path: Path, version: str | None = None, note: str = "") -> Located:
    wrong = _wrong_task(cp, path)
    if wrong:
        return Located(cp, path, problem=_line(cp, f"({path}) {wrong}",
                                               f"fix: set `models.{cp.name}.model` to a {cp.task} checkpoint"))
    if version is None:
        weights = [path] if path.is_file() else (sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")))
        version = file_version(*weights) if weights else "unknown"
    return Located(cp, path, version, _size(path), note=note)


def _ultralytics_weights_dir() -> Path:
    import contextlib
    import io

    # Its first import writes a settings file and announces it on stdout: not the CLI's output.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from ultralytics.utils import SETTINGS  # reads YOLO_CONFIG_DIR, as the replica will

    return Path(SETTINGS["weights_dir"])


def locate(cp: Checkpoint, *, probe_network: bool = True) -> Located:
    """Where ``cp`` is on this machine, or why it cannot load; never downloads.

    Args:
        cp: the checkpoint.
        probe_network: when a hub id or weight name is not cached and downloads are
            allowed, check (3 s TCP connect) that its host answers, so a machine
            without network fails now instead of in the replica.
    """
    kind = cp.kind
    if kind == "none":
        return Located(cp, version="0", note="no weights")
    if kind == "architecture":
        return Located(cp, version="random-init", note="architecture only: random weights")
    if kind == "path":
        path = Path(cp.source).expanduser()
        if not path.exists():
            return Located(cp, problem=_line(cp, f"does not exist (relative to {Path.cwd()})",
                                             f"fix: set `models.{cp.name}.model` to an existing path"))
        return _locate_local(cp, path.resolve())
    if (kind == "ultralytics") != (cp.task in _ULTRALYTICS_TASKS):
        want = "an ultralytics weight name (.pt)" if cp.task in _ULTRALYTICS_TASKS else "a transformers checkpoint"
        return Located(cp, problem=_line(cp, f"is the wrong kind of checkpoint for task {cp.task}",
                                         f"fix: set `models.{cp.name}.model` to {want}"))
    if kind == "ultralytics":
        for path in (Path(cp.source), _ultralytics_weights_dir() / cp.source):
            if path.is_file():
                return _locate_local(cp, path.resolve())
        where, host = f"is not in {_ultralytics_weights_dir()} or the current folder", "github.com"
        if os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true"):
            return Located(cp, problem=_line(cp, f"{where}, and YOLO_OFFLINE=1 forbids downloading"))
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import ENDPOINT, HF_HUB_CACHE
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            snap = Path(snapshot_download(cp.source, revision=cp.revision, local_files_only=True))
            return _locate_local(cp, snap, version=snap.name)
        except LocalEntryNotFoundError:
            pass
        where, host = f"is not in the Hugging Face cache ({HF_HUB_CACHE})", ENDPOINT.split("://")[-1].split("/")[0]
        if _offline():
            return Located(cp, problem=_line(cp, f"{where}, and HF_HUB_OFFLINE=1 forbids downloading"))
    down = _reachable(host) if probe_network else None
    if down:
        return Located(cp, problem=_line(cp, f"{where}, and {down} (no network)"))
    return Located(cp, note=f"not cached: downloads from {host} at load")


def load_error(cfg: ModelConfig, err: BaseException, name: str | None = None) -> CheckpointError:
    """The replica's load failure as one line: :func:`locate`'s reason when it finds one, else the error's."""
    cp = Checkpoint.of(name or cfg.task, cfg)
    try:
        found = locate(cp, probe_network=False)
    except Exception:  # noqa: BLE001 - explaining must not hide the original error
        found = Located(cp)
    if found.problem:
        return CheckpointError(found.problem)
    first = (str(err).strip().splitlines() or [repr(err)])[0]
    return CheckpointError(_line(cp, f"failed to load ({type(err).__name__}: {first})",
                                 f"fix: check that `models.{cp.name}.model` is a {cp.task} checkpoint that "
                                 "this transformers/ultralytics version loads"))


def pull(cp: Checkpoint) -> Located:
    """Download ``cp`` into the Hugging Face or ultralytics cache (their progress bars); local kinds are a no-op.

    Raises:
        CheckpointError: downloads are switched off, or the download failed (one line).
    """
    kind = cp.kind
    if kind in ("none", "architecture", "path"):
        return locate(cp, probe_network=False)
    flag = "YOLO_OFFLINE" if kind == "ultralytics" else "HF_HUB_OFFLINE"
    if os.environ.get(flag, "").lower() in ("1", "true", "yes", "on"):
        raise CheckpointError(_line(cp, f"cannot be downloaded: {flag}=1 is set",
                                    f"fix: run again without {flag} (e.g. `env -u {flag} infertide models pull`)"))
    try:
        if kind == "ultralytics":
            from ultralytics.utils.downloads import attempt_download_asset

            target = _ultralytics_weights_dir() / cp.source
            target.parent.mkdir(parents=True, exist_ok=True)
            attempt_download_asset(target)
            if not target.is_file():
                raise FileNotFoundError(f"no ultralytics release asset named {cp.source}")
        else:
            from huggingface_hub import HfApi, snapshot_download

            files = HfApi().list_repo_files(cp.source, revision=cp.revision)
            patterns = list(_HUB_WEIGHTS) + ([] if any(f.endswith(".safetensors") for f in files) else ["*.bin"])
            snapshot_download(cp.source, revision=cp.revision, allow_patterns=patterns)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any download failure becomes the one line
        first = (str(err).strip().splitlines() or [repr(err)])[0]
        raise CheckpointError(_line(cp, f"download failed ({type(err).__name__}: {first[:200]})",
                                    "fix: check the network, HF_ENDPOINT / HF_TOKEN, and the model name")) from None
    return locate(cp, probe_network=False)
