"""aiokafka client settings from the topology's ``kafka:`` section (SASL/SSL included)."""

from __future__ import annotations

from typing import Any

from schemas.topology import KafkaConfig

__all__ = ["aiokafka_kwargs"]


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
