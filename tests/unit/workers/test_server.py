"""ModelServer in-process (no Ray cluster): batching across calls, order, oversize calls, reconfigure."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from schemas.topology import parse_topology
from workers.app import deployment_options, model_user_config, serve_deploy_config
from workers.server import ModelServer, count_items


@pytest.fixture(autouse=True)
def _fake_replica_context(monkeypatch):
    """Ray 2.60's batch queue reads the replica context (for a warning); stub it outside Serve."""
    from ray import serve

    ctx = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=1000))
    monkeypatch.setattr(serve, "get_replica_context", lambda: ctx)


def test_count_items():
    assert count_items([[1, 2], [3], []]) == 3


async def test_batches_form_across_calls_and_order_kept(tiny_topology):
    server = ModelServer("sentiment", model_user_config(tiny_topology, "sentiment"))
    calls = [[f"text {i} {j}" for j in range(3)] + [i] for i in range(12)]  # last item of each is bad
    results = await asyncio.gather(*(server.infer(c) for c in calls))
    for call, res in zip(calls, results):
        assert len(res) == len(call)
        assert all(r["ok"] for r in res[:-1]) and res[-1]["ok"] is False
    st = server.stats()
    assert st["items"] == 48 and st["max"] > 3 and st["max"] <= 16 and st["batches"] < 12
    assert st["idle_runs"] == 1  # only the first found the replica idle; the rest were batched


async def test_a_call_on_an_idle_replica_does_not_wait_for_company(tiny_topology):
    uc = model_user_config(tiny_topology, "echo")
    server = ModelServer("echo", {**uc, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 60.0}})
    res = await asyncio.wait_for(server.infer(["alone"]), 10)  # through the batcher it would wait 60 s
    assert [r["ok"] for r in res] == [True]
    first = await asyncio.wait_for(server.infer(["again"]), 10)  # idle again once the first returned
    assert first[0]["ok"] and server.stats()["idle_runs"] == 2 and server.stats()["batches"] == 2


async def test_oversize_call_is_split(tiny_topology):
    server = ModelServer("echo", model_user_config(tiny_topology, "echo"))
    res = await server.infer([f"t{i}" for i in range(50)])  # max_batch_size is 16
    assert len(res) == 50 and all(r["ok"] for r in res)
    assert server.stats()["max"] <= 16


async def test_reconfigure_threshold_and_model(tiny_topology, make_image_item):
    uc = model_user_config(tiny_topology, "tagging")
    server = ModelServer("tagging", uc)
    model = server.model
    server.reconfigure({**uc, "options": {**uc["options"], "top_k": 1}, "batching": {"max_batch_size": 4}})
    assert server.model is model  # options only: no reload
    assert len((await server.infer([make_image_item()]))[0]["result"]["tags"]) == 1
    assert server.stats()["max_batch_size"] == 4
    server.reconfigure({**uc, "task": "echo", "model": "echo-v2"})
    out = (await server.infer([make_image_item()]))[0]
    assert out["model"] == {"name": "echo-v2", "version": "0"}


def test_serve_deploy_config_shape(tiny_topology):
    topo = parse_topology({
        **tiny_topology.model_dump(mode="json"),
        "models": {**tiny_topology.model_dump(mode="json")["models"],
                   "echo": {"task": "echo", "autoscaling": {"min_replicas": 1, "max_replicas": 3},
                            "num_gpus": 0.25}},
    })
    cfg = serve_deploy_config(topo, "/etc/infertide/topology.yaml")
    (app,) = cfg["applications"]
    assert app["import_path"] == "workers.app:build_app"
    assert app["args"] == {"config": "/etc/infertide/topology.yaml"}
    deps = {d["name"]: d for d in app["deployments"]}
    assert set(topo.models) <= set(deps)
    assert deps["echo"]["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in deps["echo"]
    assert deps["echo"]["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert deps["sentiment"]["num_replicas"] == 1
    assert deps["sentiment"]["user_config"]["options"]["max_text_chars"] == topo.limits.max_text_chars
    assert deployment_options(topo, "sentiment") == deps["sentiment"]


async def test_a_call_run_at_once_counts_toward_max_concurrent_batches(tiny_topology):
    import threading
    import time

    uc = model_user_config(tiny_topology, "echo")
    server = ModelServer("echo", {**uc, "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.01,
                                                     "max_concurrent_batches": 1}})
    lock, running, most = threading.Lock(), [0], [0]
    run_batch = server.model.run_batch

    def slow_batch(items):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        return run_batch(items)

    server.model.run_batch = slow_batch
    results = await asyncio.gather(*(server.infer([f"t{i}"]) for i in range(4)))
    assert all(r[0]["ok"] for r in results)
    assert server.stats()["idle_runs"] == 1 and most[0] == 1, "the first ran at once; the batch behind it waited"
