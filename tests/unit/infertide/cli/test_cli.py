"""The command tree: every command answers --help, the root --config reaches every command that loads a
topology, and the same option is taken after the command (``infertide worker --config FILE``, as in k8s/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from infertide.cli import app

runner = CliRunner()
COMMANDS = ["", "kafka", "kafka fetch", "kafka start", "kafka stop", "kafka status", "topics", "topics create",
            "topics list", "produce", "produce text", "produce image", "produce video", "tail", "worker", "up",
            "bench", "demo", "models", "models list", "models pull", "k8s", "k8s generate", "config"]
TAKE_CONFIG = ["topics create", "topics list", "produce text", "produce image", "produce video", "tail", "worker",
               "up", "bench", "demo", "models list", "models pull", "config"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str) -> None:
    res = runner.invoke(app, [*command.split(), "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


@pytest.mark.parametrize("command", TAKE_CONFIG)
def test_every_topology_command_takes_config(command: str) -> None:
    res = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
    assert "--config" in res.output and "INFERTIDE_CONFIG" in res.output


@pytest.mark.parametrize("where", ["root", "command"])
def test_worker_reads_the_chosen_config(where: str, tmp_path: Path) -> None:
    """Fails on the config (exit 2, named) before anything starts, wherever --config was given."""
    missing = str(tmp_path / "missing.yaml")
    args = ["--config", missing, "worker"] if where == "root" else ["worker", "--config", missing]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "missing.yaml does not exist" in " ".join(res.output.split()), res.output


def test_command_modules_do_not_import_the_root() -> None:
    """Imports run one way: the root registers the command modules (tests/unit/test_layers.py checks packages)."""
    import ast

    cli_dir = Path(__file__).resolve().parents[4] / "infertide" / "cli"
    for path in cli_dir.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "infertide.cli":
                names = [a.name for a in node.names]
                assert set(names) <= {"options"} | {p.stem for p in cli_dir.glob("*.py")}, (path.name, names)
