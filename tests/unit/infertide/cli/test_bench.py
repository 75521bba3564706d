"""``infertide bench`` option checks that fail before anything starts (no broker, no Ray)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from infertide.cli import app
from schemas.topology import default_topology_path

pytestmark = pytest.mark.timeout(60)  # each check fails before a broker or Ray would start

runner = CliRunner()


def test_root_config_is_benchmarked_and_missing_checkpoints_exit_2() -> None:
    res = runner.invoke(app, ["--config", str(default_topology_path()), "bench", "--events", "10"])
    assert res.exit_code == 2, res.output
    assert "cannot be loaded offline" in res.output and "--tiny" in res.output


def test_tiny_needs_a_config() -> None:
    res = runner.invoke(app, ["bench", "--tiny"])
    assert res.exit_code == 2 and "--tiny swaps the models of a --config topology" in res.output


def test_sweep_percent_must_be_percentages() -> None:
    res = runner.invoke(app, ["bench", "--sweep", "--sweep-percent", "10,abc"])
    assert res.exit_code == 2 and "--sweep-percent" in res.output


@pytest.mark.parametrize("args", [["--shadow"], ["--shadow", "--model", "echo", "--sweep"],
                                  ["--shadow", "--model", "echo", "--guarantee", "both"]])
def test_shadow_needs_the_builtin_echo_route(args: list[str]) -> None:
    res = runner.invoke(app, ["bench", *args])
    assert res.exit_code == 2 and "--shadow drains the built-in echo route" in res.output
    assert "infertide bench --model echo --shadow" in res.output
