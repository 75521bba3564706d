"""infertide's contracts: event models, their JSON Schemas, the codec and the topology config.

Nothing here imports Kafka, Ray or Faust.
"""

from schemas.codec import EventDecodeError, Limits, decode, encode
from schemas.events import SCHEMAS
from schemas.topology import ConfigError, Topology, load_topology

__all__ = ["SCHEMAS", "ConfigError", "EventDecodeError", "Limits", "Topology", "decode", "encode", "load_topology"]
