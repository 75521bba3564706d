"""``infertide config``: print the topology the other commands would run on, after flags and environment."""

from __future__ import annotations

import typer
import yaml

from infertide.cli.options import Bootstrap, ConfigOpt, config_of, console, topology_from

__all__ = ["show_config"]


def show_config(ctx: typer.Context, bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Print the effective topology as YAML: the --config file (or INFERTIDE_CONFIG, or the packaged default)
    with --bootstrap, else KAFKA_BOOTSTRAP_SERVERS, applied on top (see infertide/settings.py).

    Examples: infertide config; KAFKA_BOOTSTRAP_SERVERS=kafka:9092 infertide --config my.yaml config
    """
    topology = topology_from(ctx, bootstrap, config)
    console.print(f"# {config_of(ctx, config) or 'the packaged topologies/default.yaml'}", highlight=False)
    console.print(yaml.safe_dump(topology.model_dump(mode="json"), sort_keys=False), end="", highlight=False,
                  markup=False)
