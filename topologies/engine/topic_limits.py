"""What each output topic really accepts (``max.message.bytes``, read from the broker), so a record too
big for its topic is dealt with before it is produced instead of failing the worker.

A topic's ``max.message.bytes`` bounds a whole record batch. The config check at load
(``limits`` vs ``max_message_bytes``) covers topics this tool creates; topics created by
someone else, or changed later, may accept less. The route consumer reads the limits when it
starts (so a restart after such a change picks them up) and gives them to the producer (batches
are cut to fit) and to the batch logic (dead letters are cut to fit; a result that cannot fit
becomes a dead letter of stage ``produce``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

__all__ = ["BATCH_OVERHEAD", "read_topic_limits", "record_cap"]

log = logging.getLogger(__name__)

# A record batch's own header (61 bytes in the v2 format) plus a record's framing (varints,
# attributes) and our traceparent header, rounded up: what a record may not use of the limit.
BATCH_OVERHEAD = 256


def record_cap(limits: dict[str, int], topic: str) -> int | None:
    """The largest key + value one record of ``topic`` may have to fit in a batch alone (None: unknown)."""
    limit = limits.get(topic)
    return None if limit is None else max(0, limit - BATCH_OVERHEAD)


async def read_topic_limits(topics: Iterable[str], client_kw: dict[str, Any],
                            timeout_s: float = 10.0) -> dict[str, int]:
    """``{topic: max.message.bytes}`` for the topics that exist; {} (with a warning) when the broker won't say."""
    names = sorted(set(topics))
    admin = AIOKafkaAdminClient(client_id="infertide-limits", request_timeout_ms=int(timeout_s * 1000),
                                **{k: v for k, v in client_kw.items() if k != "client_id"})
    try:
        await admin.start()
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": None}) for name in names])
    except (KafkaError, OSError) as err:
        log.warning("could not read the output topics' max.message.bytes (%r); records are sized against "
                    "the producer's max_request_size only", err)
        return {}
    finally:
        await admin.close()
    limits: dict[str, int] = {}
    for response in responses:
        for error_code, _msg, _type, name, entries in response.resources:
            if error_code:
                continue  # not there yet (created on first produce with the broker's default)
            for entry in entries:
                if entry[0] == "max.message.bytes" and entry[1] is not None:
                    limits[name] = int(entry[1])
    return limits
