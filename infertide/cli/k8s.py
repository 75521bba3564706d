"""``infertide k8s generate`` rewrites (or ``--check``s) the manifests that follow the topology;
``infertide k8s control-plane`` runs a local API server to apply them to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="The Kubernetes manifests under k8s/: generate them, and a local control plane to apply them to.")


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


@app.command("control-plane")
def k8s_control_plane(
    folder: Annotated[Path | None, typer.Option(
        "--dir", help="Run folder (data, certificates, logs, kubeconfig); a new temporary one by default.")] = None,
    crds: Annotated[bool, typer.Option("--crds/--no-crds", help="Install the operators' CRDs from .cache/crds.")] = True,
    operators: Annotated[bool, typer.Option(
        "--operators/--no-operators", help="Also run the KubeRay and KEDA operators against it.")] = False,
) -> None:
    """Run a local Kubernetes control plane (etcd + kube-apiserver on 127.0.0.1, no kubelet) until Ctrl-C.

    The binaries come from [b]make k8s-tools[/b] (Go module proxy, into .cache/tools/bin), the CRDs from
    [b]make k8s-crds[/b]. Pods are stored but never run. Everything it starts is stopped on exit.

    Examples: infertide k8s control-plane; infertide k8s control-plane --operators --dir /tmp/cp
    """
    import signal
    import tempfile

    from infertide.k8s.controlplane import ControlPlane, tool
    from infertide.k8s.crds import CRDS
    from infertide.k8s.operators import install_crds, start_keda, start_kuberay

    run_dir = folder or Path(tempfile.mkdtemp(prefix="infertide-k8s-"))
    try:
        with ControlPlane(run_dir) as cp:
            if crds:
                typer.echo(f"installed {len(install_crds(cp, CRDS))} CRDs from {CRDS}")
            if operators:
                start_kuberay(cp)
                start_keda(cp)
            typer.echo(f"control plane at {cp.server}, pids {cp.describe()['pids']}, logs in {run_dir}\n"
                       f"export KUBECONFIG={cp.kubeconfig}\n{tool('kubectl')} get ns\nCtrl-C stops it.")
            # SIGTERM stops it as Ctrl-C does; SIGINT too where a shell started it in the background
            # (which leaves SIGINT ignored, so Python installs no handler of its own)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.default_int_handler)
            try:
                signal.pause()
            except KeyboardInterrupt:
                typer.echo("stopping")
            # A second Ctrl-C (or a signal sent to the whole process group) must not cut the stop short.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
    except (FileNotFoundError, RuntimeError, TimeoutError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from err
