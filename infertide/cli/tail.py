"""``infertide tail``: print a topic's records, decoded with the codec when the config knows the schema."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.json import JSON

from infertide.cli.options import Bootstrap, ConfigOpt, console, err_console, fail, topology_from

__all__ = ["tail"]


def tail(ctx: typer.Context, topic: Annotated[str, typer.Argument(help="Topic name or alias (text, dlq...).")],
         from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the earliest offset.")] = False,
         max: Annotated[int | None, typer.Option("--max", min=1, help="Exit after N records.")] = None,
         timeout: Annotated[float, typer.Option("--timeout", help="Exit after S seconds with no record.")] = 10.0,
         raw: Annotated[bool, typer.Option("--raw", help="One JSON object per line on stdout: the event.")] = False,
         bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Print a topic's records, decoded with the codec when the config knows the topic's schema.

    Records that fail to decode are reported on stderr (with the field and reason).

    Examples: infertide tail events.text --from-beginning --max 10;
    infertide tail inference.sentiment --raw | jq .label
    """
    import asyncio

    import orjson
    from aiokafka.errors import KafkaError

    from infertide.clients.tail import atail

    topology = topology_from(ctx, bootstrap, config)
    out = sys.stdout.buffer

    async def run() -> int:
        n = 0
        async for rec in atail(topology, topic, from_beginning=from_beginning, max_records=max,
                               idle_timeout_s=timeout):
            n += 1
            where = f"{rec.topic}[{rec.partition}]@{rec.offset}"
            if rec.error is not None:
                err_console.print(f"[red]{where} undecodable:[/red] {rec.error}")
                continue
            if raw:
                out.write(orjson.dumps(rec.as_json()) + b"\n")
                continue
            key = rec.key.decode("utf-8", "replace") if rec.key else "-"
            console.print(f"[dim]{where} key={key}[/dim]", JSON.from_data(_short(rec.as_json()), indent=None))
        out.flush()
        return n

    try:
        n = asyncio.run(run())
    except (LookupError, KafkaError) as err:
        raise fail(str(err)) from None
    except KeyboardInterrupt:
        return
    if not raw:
        err_console.print(f"[dim]{n} records[/dim]")


def _short(value: object) -> object:
    """Long strings (inline images) cut for the eye; ``--raw`` prints them whole."""
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v) for v in value]
    if isinstance(value, str) and len(value) > 120:
        return f"{value[:60]}...({len(value)} chars)"
    return value


