"""What every command shares: the consoles, the ``--config`` / ``--bootstrap`` / ``--topic`` options
(defined once here), the settings read at the root, and the topology a command runs on.

Command modules import this module, never the root app (``infertide.cli`` imports them and
registers their commands), so imports run one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infertide.settings import Settings
from schemas.topology import ConfigError, Topology, default_topology_path, load_topology

__all__ = ["Bootstrap", "CliState", "ConfigOpt", "TopicOpt", "bootstrap_of", "config_of", "console", "err_console",
           "fail", "settings_of", "topology_from"]

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", dir_okay=False,
    help="Topology YAML (env INFERTIDE_CONFIG; default: the packaged topologies/default.yaml). "
         "Also taken before the command: infertide --config FILE COMMAND.")]
Bootstrap = Annotated[str | None, typer.Option(
    "--bootstrap", "-b",
    help="Kafka bootstrap servers host:port,... (env KAFKA_BOOTSTRAP_SERVERS); overrides the config's "
         "kafka.bootstrap_servers.")]
TopicOpt = Annotated[str | None, typer.Option("--topic", "-t", help="Send to this topic instead of the config's.")]


@dataclass(frozen=True)
class CliState:
    """What the root command leaves for the others: its ``--config`` and the environment, read once."""

    config: Path | None = None
    settings: Settings = field(default_factory=Settings)


def _state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState()


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root command read from the environment."""
    return _state(ctx).settings


def config_of(ctx: typer.Context, config: Path | None = None) -> Path | None:
    """The topology file chosen for this command: its own ``--config``, else the root's, else
    ``INFERTIDE_CONFIG``; ``None`` when nobody chose one (commands then use their own default)."""
    state = _state(ctx)
    return config or state.config or state.settings.config


def bootstrap_of(ctx: typer.Context, bootstrap: str | None = None) -> str | None:
    """``--bootstrap`` when given, else ``KAFKA_BOOTSTRAP_SERVERS`` (via the settings), else ``None``."""
    return bootstrap or settings_of(ctx).kafka_bootstrap_servers


def topology_from(ctx: typer.Context, bootstrap: str | None = None, config: Path | None = None) -> Topology:
    """The chosen topology (see :func:`config_of`), pointed at :func:`bootstrap_of` when set; exits 2 on a bad config.

    Precedence (``infertide.settings``): flag, then environment, then the file.
    """
    path = config_of(ctx, config) or default_topology_path()
    servers = bootstrap_of(ctx, bootstrap)
    try:
        topology = load_topology(path)
        return topology.with_bootstrap(servers) if servers else topology
    except ConfigError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise."""
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)
