"""``infertide topics create / list``: the topics the topology config names, on the cluster."""

from __future__ import annotations

import typer
from rich.table import Table

from infertide.cli.options import Bootstrap, ConfigOpt, console, fail, topology_from

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Create and list the topics the topology config names.")


@app.command("create")
def topics_create(ctx: typer.Context, bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Create every topic of the config that is missing (idempotent).

    Example: infertide topics create --bootstrap 127.0.0.1:9092
    """
    from kafka.errors import KafkaError

    from infertide.clients.admin import ensure_topics

    topology = topology_from(ctx, bootstrap, config)
    try:
        created = ensure_topics(topology)
    except KafkaError as err:
        raise fail(f"{topology.kafka.bootstrap_servers}: {err}") from None
    existing = [n for n in topology.topics.names() if n not in created]
    console.print(f"created {len(created)}: {', '.join(created) or '-'}; already there {len(existing)}")


@app.command("list")
def topics_list(ctx: typer.Context, bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Show the config's topics, their partitions on the cluster, and which are missing (exit 1 if any).

    Example: infertide topics list
    """
    from kafka.errors import KafkaError

    from infertide.clients.admin import describe_topics, schema_for_topic

    topology = topology_from(ctx, bootstrap, config)
    try:
        found = describe_topics(topology)
    except KafkaError as err:
        raise fail(f"{topology.kafka.bootstrap_servers}: {err}") from None
    table = Table("topic", "schema", "partitions", title=f"topics at {topology.kafka.bootstrap_servers}")
    for name, parts in found.items():
        table.add_row(name, schema_for_topic(topology, name) or "-",
                      str(parts) if parts is not None else "[red]missing[/red]")
    console.print(table)
    missing = [n for n, p in found.items() if p is None]
    if missing:
        console.print(f"[yellow]missing:[/yellow] {', '.join(missing)} (run: infertide topics create)")
        raise typer.Exit(1)


