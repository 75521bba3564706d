"""``infertide models list / pull``: the topology's checkpoints, what is cached here, and fetching them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from infertide.cli.options import ConfigOpt, console, err_console, topology_from
from infertide.local.preflight import checkpoints

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help=(
    "The topology's model checkpoints: what is cached here (version, size) and fetching them. "
    "Caches: Hugging Face (HF_HOME / HF_HUB_CACHE) and ultralytics (weights_dir of YOLO_CONFIG_DIR settings)."))


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f} MB"


@app.command("list")
def models_list(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Show each model of the topology: where its checkpoint is, its version (commit or sha256) and size.

    Exits 1 when a model cannot load here (one line each under the table: why, and the fix).

    Example: infertide models list; infertide --config my.yaml models list
    """
    from workers.checkpoints import locate

    topology = topology_from(ctx, config=config)
    table = Table("model", "task", "source", "status", "version", "size", "where", title="model checkpoints")
    problems = []
    for cp in checkpoints(topology):
        found = locate(cp)
        if found.problem:
            problems.append(found.problem)
            status, where = "[red]cannot load[/red]", "(below)"
        elif found.path is not None:
            status, where = "[green]cached[/green]" if cp.kind in ("hub", "ultralytics") else "[green]local[/green]", \
                str(found.path)
        else:
            status, where = "[yellow]ok[/yellow]", found.note
        table.add_row(cp.name, cp.task, cp.source or "-", status, found.version or "-", _size(found.size), where)
    console.print(table)
    for line in problems:
        err_console.print(f"[red]{line}[/red]", soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@app.command("pull")
def models_pull(ctx: typer.Context,
                only: Annotated[list[str] | None, typer.Argument(help="Model keys to fetch (default: all).")] = None,
                config: ConfigOpt = None) -> None:
    """Download the topology's checkpoints into the Hugging Face / ultralytics caches, with progress bars.

    Hub ids go to the Hugging Face cache (weights as safetensors when the repo has
    them, plus config and tokenizer files), ultralytics weight names to its
    weights_dir. Local paths and architectures (.yaml) need nothing. Run it once
    on a machine with network, with the same HF_HOME / YOLO_CONFIG_DIR the
    workers use; afterwards [b]infertide up[/b] runs offline. Exits 1 if any
    model could not be fetched (one line each: why, and the fix).

    Examples: infertide models pull; infertide models pull sentiment;
    HF_HOME=/data/hf infertide --config my.yaml models pull
    """
    from workers.checkpoints import CheckpointError, pull

    topology = topology_from(ctx, config=config)
    unknown = sorted(set(only or []) - set(topology.models))
    if unknown:
        err_console.print(f"[red]error:[/red] unknown model(s) {', '.join(unknown)}; "
                          f"the topology has {', '.join(topology.models)}")
        raise typer.Exit(2)
    failed = 0
    for cp in checkpoints(topology):
        if only and cp.name not in only:
            continue
        err_console.print(f"[cyan]>[/cyan] {cp.name}: {cp.source or cp.task} ({cp.kind})")
        try:
            found = pull(cp)
        except CheckpointError as err:
            failed += 1
            err_console.print(f"[red]{err}[/red]", soft_wrap=True)
            continue
        console.print(f"  {cp.name}: {found.path or found.note} version {found.version or '-'} {_size(found.size)}")
    if failed:
        raise typer.Exit(1)
