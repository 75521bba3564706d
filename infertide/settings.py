"""The environment infertide reads, as one frozen settings object (read once, at the edge: the CLI).

Precedence, from strongest to weakest, for every value here:

1. a command-line flag (``--bootstrap``, ``--config``, ``--ray-address``, ``--web-port``);
2. the environment variable below;
3. the topology file (``kafka.bootstrap_servers``, ``web_port``);
4. the model's default.

Code never reads these variables itself: ``schemas.topology.parse_topology`` and
``load_topology`` take the data they are given as final (a topology built in code,
such as the local stack's, is never redirected by ``KAFKA_BOOTSTRAP_SERVERS``),
and the CLI applies the settings on top of the file (``infertide.cli.options.topology_from``).
The environment beats the file for the connection keys on purpose: one topology
file (a Kubernetes ConfigMap) serves every environment, and each Deployment says
where its brokers are. Tested in ``tests/unit/infertide/test_settings.py``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PythonGC", "Settings"]


class PythonGC(str, Enum):
    """A worker's garbage collector: ``tuned`` settles the heap once started (``topologies.host.heap``),
    ``default`` keeps Python's."""

    tuned = "tuned"
    default = "default"


class Settings(BaseSettings):
    """What the environment says; ``None`` where it says nothing (empty values count as unset).

    Args:
        config: the topology YAML (``INFERTIDE_CONFIG``).
        kafka_bootstrap_servers: brokers, overriding the file's (``INFERTIDE_KAFKA_BOOTSTRAP_SERVERS``,
            else ``KAFKA_BOOTSTRAP_SERVERS``).
        ray_address: the Ray cluster a worker joins (``RAY_ADDRESS``).
        web_port: a worker's Faust web port (``INFERTIDE_WEB_PORT``).
        cache: jars, tiny models and run folders (``INFERTIDE_CACHE``; see ``infertide.local.broker.project_cache``).
        python_gc: a worker's garbage collector, ``tuned`` or ``default`` (``INFERTIDE_PYTHON_GC``; see
            ``topologies.host.heap``).
    """

    model_config = SettingsConfigDict(env_prefix="INFERTIDE_", env_ignore_empty=True, extra="ignore", frozen=True)

    config: Path | None = None
    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias=AliasChoices("INFERTIDE_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"))
    ray_address: str | None = Field(default=None, validation_alias=AliasChoices("RAY_ADDRESS"))
    web_port: int | None = Field(default=None, ge=0, le=65535)
    cache: Path | None = None
    python_gc: PythonGC | None = None
