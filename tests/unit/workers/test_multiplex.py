"""Checkpoint slots in-process: which config answers as a checkpoint, loads and evictions counted once,
a changed source reloaded, unknown ids refused with the key and the fix.

Serve's ``@serve.multiplexed`` needs a replica; here it is replaced by a fake that keeps its contract
(an LRU of ``max_num_models_per_replica`` entries that calls ``__del__`` on the evicted one). The real
one runs in ``tests/integration/test_multiplex.py``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import pytest

from schemas.topology import ModelConfig
from workers import multiplex
from workers.multiplex import CheckpointSlots, UnknownCheckpoint


def _fake_multiplexed(max_num_models_per_replica: int):
    def deco(func):
        cache: OrderedDict[str, Any] = OrderedDict()

        async def wrapper(model_id: str):
            if model_id in cache:
                cache.move_to_end(model_id)
                return cache[model_id]
            if len(cache) >= max_num_models_per_replica:
                _, old = cache.popitem(last=False)
                old.__del__()
                old.__del__ = lambda _: None
            cache[model_id] = await func(model_id)
            return cache[model_id]

        return wrapper

    return deco


class _Model:
    def __init__(self, cfg: ModelConfig, name: str) -> None:
        self.cfg, self.name = cfg, name

    def set_options(self, options: dict[str, Any]) -> None:
        self.cfg = self.cfg.model_copy(update={"options": dict(options)})


def _cfg(**checkpoints: str) -> ModelConfig:
    return ModelConfig.model_validate({"task": "sentiment", "model": "base", "options": {"max_length": 8},
                                       "multiplex": {"max_models_per_replica": 2, "checkpoints": checkpoints}})


@pytest.fixture
def slots(monkeypatch: pytest.MonkeyPatch) -> CheckpointSlots:
    monkeypatch.setattr(multiplex.serve, "multiplexed", _fake_multiplexed)
    s = CheckpointSlots("sentiment", 2, build=_Model)
    s.configure(_cfg(a="/m/a", b="/m/b", c="/m/c"))
    return s


def test_loads_and_evictions_are_counted_once_per_event(slots: CheckpointSlots) -> None:
    async def run() -> list[Any]:
        return [await slots.get(c) for c in ["a", "b", "a", "c", "b", "a"]]

    models = asyncio.run(run())
    assert models[0] is models[2]  # still loaded: no second load
    assert [m.cfg.model for m in models] == ["/m/a", "/m/b", "/m/a", "/m/c", "/m/b", "/m/a"]
    assert models[0].name == "sentiment.multiplex.checkpoints.a"  # a load error names the key to fix
    # a, b loaded; c evicts b (a was used last); b evicts a; a evicts c.
    assert slots.stats() == {"slots": 2, "loaded": ["a", "b"], "loads": {"a": 2, "b": 2, "c": 1},
                             "evictions": {"b": 1, "a": 1, "c": 1}, "items": {}}


def test_a_changed_source_reloads_and_changed_options_apply_in_place(slots: CheckpointSlots) -> None:
    async def run() -> tuple[Any, Any, Any]:
        first = await slots.get("a")
        slots.configure(_cfg(a="/m/a", b="/m/b").model_copy(update={"options": {"max_length": 16}}))
        same = await slots.get("a")
        slots.configure(_cfg(a="/m/a-v2", b="/m/b"))
        return first, same, await slots.get("a")

    first, same, reloaded = asyncio.run(run())
    assert same is first and same.cfg.options == {"max_length": 16}
    assert reloaded is not first and reloaded.cfg.model == "/m/a-v2"
    assert slots.loads["a"] == 2 and not slots.evictions


def test_an_unknown_checkpoint_names_the_key_and_the_fix(slots: CheckpointSlots) -> None:
    with pytest.raises(UnknownCheckpoint) as info:
        asyncio.run(slots.get("z"))
    msg = str(info.value)
    assert "'z'" in msg and "known: ['a', 'b', 'c']" in msg and "models.sentiment.multiplex.checkpoints" in msg
    assert not slots.loads


def test_the_server_answers_an_unknown_checkpoint_per_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call naming a checkpoint the deployment does not host gets error replies, not a failed call."""
    from workers.server import ModelServer

    server = ModelServer("echo", {"task": "echo", "warmup": False})
    monkeypatch.setattr("workers.server.serve.get_multiplexed_model_id", lambda: "ft-x")
    replies = asyncio.run(server._run_batches([["a", "b"], ["c"]]))
    assert [len(r) for r in replies] == [2, 1]
    assert all(r["ok"] is False and r["error_class"] == "UnknownCheckpoint" for rs in replies for r in rs)
    assert "hosts no checkpoints" in replies[0][0]["error"]


def test_user_config_carries_checkpoints_only_where_configured() -> None:
    from schemas.topology import parse_topology
    from workers.app import model_user_config

    t = parse_topology({
        "models": {"plain": {"task": "echo"},
                   "mux": {"task": "sentiment", "model": "m", "multiplex": {"checkpoints": {"a": "/m/a"}}}},
        "routes": [{"name": "r", "input": "text", "kind": "text", "models": ["plain", "mux"]}]})
    assert "multiplex" not in model_user_config(t, "plain")  # unchanged for deployments without checkpoints
    mux = model_user_config(t, "mux")["multiplex"]
    assert mux == {"max_models_per_replica": 3, "checkpoints": {"a": {"model": "/m/a", "revision": None}}}
    assert ModelConfig.model_validate(model_user_config(t, "mux")).checkpoint_config("a").model == "/m/a"


def test_preflight_checks_every_multiplexed_checkpoint(tmp_path) -> None:
    """``infertide up`` refuses before starting anything when a checkpoint cannot load, naming its key."""
    from infertide.local.preflight import checkpoint_problems, checkpoints
    from schemas.topology import parse_topology

    t = parse_topology({
        "models": {"s": {"task": "echo", "multiplex": {"checkpoints": {"a": str(tmp_path / "missing")}}},
                   "x": {"task": "sentiment", "model": str(tmp_path / "gone"),
                         "multiplex": {"checkpoints": {"b": {"model": str(tmp_path / "also-gone")}}}}},
        "routes": [{"name": "r", "input": "text", "kind": "text", "models": ["s"]}]})
    assert [c.name for c in checkpoints(t)] == ["s", "s.multiplex.checkpoints.a", "x", "x.multiplex.checkpoints.b"]
    problems = checkpoint_problems(t)
    assert len(problems) == 2 and "`models.x.multiplex.checkpoints.b.model`" in problems[1], problems
