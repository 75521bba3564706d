"""aiokafka client settings from the topology's ``kafka:`` section (SASL/SSL included)."""

from __future__ import annotations

from typing import Any

from schemas.topology import KafkaConfig

__all__ = ["aiokafka_kwargs", "group_generation"]


def aiokafka_kwargs(kafka: KafkaConfig, bootstrap: str | None = None) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients; SSL files become an ``ssl_context``.

    Args:
        kafka: the topology's ``kafka:`` section.
        bootstrap: overrides ``kafka.bootstrap_servers``.
    """
    kw = kafka.client_kwargs(bootstrap)
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kw["ssl_context"] = create_ssl_context(cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile,
                                               keyfile=kafka.ssl_keyfile)
    return kw


def group_generation(consumer: Any) -> int:
    """The generation of the consumer's group membership; -1 before the first join and once the
    coordinator has expelled the member (aiokafka resets it on UnknownMemberId / IllegalGeneration).
    Read from aiokafka's group coordinator: it has no public accessor (aiokafka 0.14)."""
    return int(getattr(getattr(consumer, "_coordinator", None), "generation", -1))
