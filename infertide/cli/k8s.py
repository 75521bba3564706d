"""``infertide k8s generate``: rewrite (or ``--check``) the Kubernetes manifests that follow the topology."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="The Kubernetes manifests under k8s/ that are generated from the topology.")


@app.command("generate")
def k8s_generate(check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 when a committed file differs.")] = False) -> None:
    """Write k8s/base/topology.yaml, kafka-topics.yaml and the serveConfigV2 patches (base and GPU overlay).

    Run from a source checkout (k8s/ is not part of the package). Same as
    [b]python -m infertide.k8s.generate[/b] and [b]make k8s-gen[/b].

    Examples: infertide k8s generate; infertide k8s generate --check
    """
    from infertide.k8s.generate import main

    raise typer.Exit(main(["--check"] if check else []))
