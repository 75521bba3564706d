"""The Serve application built from a topology YAML, called through DeploymentHandles by many callers."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def serve_app(tiny_topology_path, offline_model_env):
    ray = pytest.importorskip("ray")
    from ray import serve

    from schemas.topology import load_topology
    from workers.app import build_app

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False, log_to_driver=False)
    topo = load_topology(tiny_topology_path)
    try:
        with socket.socket() as s:  # a free port: other Serve instances may hold 8000
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"config": str(tiny_topology_path)}), name=topo.serve_app_name, route_prefix="/")
        yield topo
    finally:
        serve.shutdown()
        ray.shutdown()


def _handle(topo, name):
    from ray import serve

    return serve.get_deployment_handle(name, app_name=topo.serve_app_name)


async def _many_callers(handle, calls):
    return await asyncio.gather(*(handle.infer.remote(c) for c in calls))


async def test_sentiment_concurrent_callers_batches_form(serve_app):
    h = _handle(serve_app, "sentiment")
    calls = [[f"call {i} item {j}" for j in range(i % 3 + 1)] + [None] for i in range(20)]
    results = await _many_callers(h, calls)
    for call, res in zip(calls, results):
        assert len(res) == len(call)
        assert all(r["ok"] and r["result"]["label"] in ("NEGATIVE", "POSITIVE") for r in res[:-1])
        assert res[-1]["ok"] is False and res[-1]["error_class"] == "InputError"
    st = await h.stats.remote()
    assert st["max"] > 1 and st["batches"] < 20, st


async def test_image_deployments_concurrent(serve_app, make_image_item):
    calls = [[make_image_item(40 + i, 30), {"data": "bad", "uri": None}] for i in range(20)]
    for name in ("detection", "tagging"):
        h = _handle(serve_app, name)
        results = await _many_callers(h, calls)
        for i, res in enumerate(results):
            assert res[0]["ok"], res[0]
            assert res[1]["ok"] is False
            if name == "detection":
                assert res[0]["result"]["image_size"] == [40 + i, 30]
            else:
                assert all(0 <= t["score"] <= 1 for t in res[0]["result"]["tags"])
        st = await h.stats.remote()
        assert st["max"] > 2, (name, st)


async def test_echo_oversize_call_and_reconfigure(serve_app):

    h = _handle(serve_app, "echo")
    res = await h.infer.remote([f"x{i}" for i in range(40)])  # > max_batch_size 16: split
    assert len(res) == 40 and all(r["result"] == {"label": "echo", "score": 1.0} for r in res)


async def test_user_config_change_reconfigures_live_replica(serve_app, tiny_topology_path):
    """The declarative path KubeRay / `serve deploy` use: a changed user_config reaches
    `reconfigure` on the running replica (same pid), no app restart."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from workers.app import serve_deploy_config

    client = _get_global_client()
    cfg = serve_deploy_config(serve_app, str(tiny_topology_path))
    client.deploy_apps(ServeDeploySchema.model_validate(cfg), _blocking=True)
    h = _handle(serve_app, "echo")
    pid = (await h.stats.remote())["pid"]
    echo = next(d for d in cfg["applications"][0]["deployments"] if d["name"] == "echo")
    echo["user_config"] = {**echo["user_config"], "model": "echo-v2", "batching": {"max_batch_size": 8}}
    client.deploy_apps(ServeDeploySchema.model_validate(cfg), _blocking=True)
    res = await h.infer.remote(["hello"])
    assert res[0]["model"] == {"name": "echo-v2", "version": "0"}
    st = await h.stats.remote()
    assert st["pid"] == pid and st["max_batch_size"] == 8, st
    assert serve.status().applications[serve_app.serve_app_name].status == "RUNNING"
