"""The ``infertide`` command line: the root app, which registers the command modules.

One module per command group (``kafka``, ``topics``, ``produce``, ``tail``, ``run`` (``worker``),
``up``, ``demo``, ``bench``, ``models``, ``k8s``, ``config``, ``rollout``). Imports run one way: this module imports
them; they import only :mod:`infertide.cli.options` (shared options, consoles,
:func:`~infertide.cli.options.topology_from`), never the root back.
"""

from __future__ import annotations

import typer
from pydantic import ValidationError

from infertide.cli import bench, config, demo, k8s, kafka, models, produce, rollout, run, tail, topics, up
from infertide.cli.options import Bootstrap, CliState, ConfigOpt, console, err_console, topology_from
from infertide.settings import Settings

__all__ = ["Bootstrap", "app", "console", "err_console", "main", "topology_from"]

app = typer.Typer(name="infertide", no_args_is_help=True, rich_markup_mode="rich",
                  help="Streaming inference: Kafka -> Faust agents -> Ray Serve models -> Kafka.")


@app.callback()
def _root(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """infertide: streaming inference with pretrained models.

    [b]Quick start[/b]: infertide kafka start; infertide topics create; infertide produce text "great film";
    infertide tail events.text --from-beginning --max 1
    """
    try:
        settings = Settings()
    except ValidationError as err:  # e.g. INFERTIDE_WEB_PORT=abc
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        err_console.print(f"[red]error:[/red] environment: {bad} (see infertide/settings.py for the variables)")
        raise typer.Exit(2) from None
    ctx.obj = CliState(config=config, settings=settings)


app.add_typer(kafka.app, name="kafka")
app.add_typer(topics.app, name="topics")
app.add_typer(produce.app, name="produce")
app.command("tail")(tail.tail)
app.command("worker")(run.worker)
app.command("up")(up.up)
app.command("bench")(bench.bench)
app.command("demo")(demo.demo)
app.add_typer(models.app, name="models")
app.add_typer(k8s.app, name="k8s")
app.add_typer(rollout.app, name="rollout")
app.command("config")(config.show_config)


def main() -> None:
    """Console-script entry point."""
    app()
