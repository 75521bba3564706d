"""The checkpoint preflight ``infertide up`` and ``demo`` run before starting anything: can each model load here?"""

from __future__ import annotations

from schemas.topology import Topology

__all__ = ["checkpoint_problems", "checkpoints"]


def checkpoints(topology: Topology) -> list:
    """One ``workers.checkpoints.Checkpoint`` per model of the topology, and one per checkpoint under its
    ``multiplex.checkpoints`` (named ``<model>.multiplex.checkpoints.<id>``, the key a fix points at)."""
    from workers.checkpoints import Checkpoint

    out = []
    for name, cfg in topology.models.items():
        out.append(Checkpoint.of(name, cfg))
        for cid in (cfg.multiplex.checkpoints if cfg.multiplex else {}):
            out.append(Checkpoint.of(f"{name}.multiplex.checkpoints.{cid}", cfg.checkpoint_config(cid)))
    return out


def checkpoint_problems(topology: Topology) -> list[str]:
    """One line per model whose checkpoint cannot load here (not cached and no network, wrong task, no such path).

    Runs in seconds and downloads nothing, so ``infertide up`` fails before
    starting Kafka and Ray instead of in a Serve replica's log.
    """
    from workers.checkpoints import locate

    return [found.problem for found in map(locate, checkpoints(topology)) if found.problem]
