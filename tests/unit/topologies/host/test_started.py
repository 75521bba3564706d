"""The Faust lifecycle wrapper starts and stops the route consumer and the folds: a graceful stop that does
not reach ``client.stop()`` commits nothing and leaves librdkafka clients to be destroyed at interpreter exit
(seen: a worker hung there past its 30 s grace)."""

from __future__ import annotations

from topologies.host.app import _Started


class Client:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")


async def test_the_service_starts_and_stops_its_client() -> None:
    client = Client()
    service = _Started(client)  # type: ignore[arg-type]
    await service.start()
    await service.stop()
    assert client.calls == ["start", "stop"]
