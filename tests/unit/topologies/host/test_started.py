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


async def _no_infer(model, items, *args):  # never called: the app is only built
    raise AssertionError("not called")


def test_the_heap_is_settled_last_and_only_when_asked() -> None:
    from schemas.topology import load_topology
    from topologies.host.app import InfertideApp, _HeapSettled

    topology = load_topology()
    asked = InfertideApp(topology, infer=_no_infer, settle_heap=True).app._extra_services
    assert isinstance(asked[-1], _HeapSettled) and sum(isinstance(s, _HeapSettled) for s in asked) == 1
    assert not any(isinstance(s, _HeapSettled)
                   for s in InfertideApp(topology, infer=_no_infer).app._extra_services)
