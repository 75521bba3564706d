"""Many fine-tuned checkpoints per replica, on real Ray Serve: 8 tiny checkpoints that answer differently,
3 slots in one replica, 4,000 events spread over them the way a route sends them (one call per
checkpoint per micro-batch, all in flight together). Every result must be its own checkpoint's bare
output; loads and evictions are read back from the replicas and printed.

``INFERTIDE_TEST_MUX_REPLICAS`` (default 1) runs the same with more replicas, to measure how Serve's
routing by model id (a call goes to a replica that holds its checkpoint) cuts the loads.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from infertide.demo.tiny_models import _CORPUS, build_tiny_sentiment, build_tiny_sentiment_family

pytestmark = pytest.mark.ray

CHECKPOINTS, SLOTS, EVENTS, WAVE = 8, 3, 4000, 400
REPLICAS = int(os.environ.get("INFERTIDE_TEST_MUX_REPLICAS", "1"))
#: Scores of one text differ by up to ~3e-6 between batch compositions (padding changes float32 sums),
#: so "equal" is: same label, same model name and version, score within 1e-5. The checkpoints' scores
#: for one text differ by far more (checked below), so no other checkpoint could pass for the named one.
SCORE_TOL = 1e-5


@pytest.fixture(scope="module")
def mux_topology(tmp_path_factory: pytest.TempPathFactory):
    from schemas.topology import parse_topology

    models_dir = tmp_path_factory.mktemp("mux-models")  # only what this test loads (not the CLIP / ViT ones)
    family = build_tiny_sentiment_family(models_dir / "family", CHECKPOINTS)
    base = build_tiny_sentiment(models_dir / "tiny-sentiment")
    return parse_topology({
        "name": "mux",
        "serve_app_name": "infertide-mux",
        "models": {"sentiment": {
            "task": "sentiment", "model": str(base), "device": "cpu", "num_cpus": 0.1, "replicas": REPLICAS,
            "max_ongoing_requests": 64, "options": {"max_length": 64},
            "batching": {"max_batch_size": 64, "batch_wait_timeout_s": 0.01},
            "multiplex": {"max_models_per_replica": SLOTS, "checkpoints": {
                **{k: str(p) for k, p in family.items()},
                "broken": str(models_dir / "no-such-checkpoint")}},  # named by no event: fails when called
        }},
        # Read by test_canary_and_shadow_through_serve (the Serve app ignores routes).
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"], "rollout": {
            "sentiment": {"sticky_key": "user_id",
                          "variants": [{"name": "canary", "model": "sentiment", "checkpoint": "ft-0", "percent": 10}],
                          "shadows": [{"name": "next", "model": "sentiment", "checkpoint": "ft-1"}]}}}],
    }, "<mux>")


@pytest.fixture(scope="module")
def mux_app(mux_topology, offline_model_env):
    ray = pytest.importorskip("ray")
    from ray import serve

    from workers.app import build_application

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False, log_to_driver=False)
    try:
        with socket.socket() as s:  # a free port: other Serve instances may hold 8000
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(mux_topology), name=mux_topology.serve_app_name, route_prefix="/")
        yield serve.get_deployment_handle("sentiment", app_name=mux_topology.serve_app_name)
    finally:
        serve.shutdown()
        ray.shutdown()


def _bare(mux_topology, events: list[tuple[str, str]]) -> dict[int, dict[str, Any]]:
    """Each event's reply from its checkpoint loaded alone, in this process (no Serve)."""
    from workers.sentiment import SentimentModel

    by_ckpt: dict[str, list[int]] = defaultdict(list)
    for i, (ckpt, _) in enumerate(events):
        by_ckpt[ckpt].append(i)
    out: dict[int, dict[str, Any]] = {}
    for ckpt, idx in by_ckpt.items():
        model = SentimentModel(mux_topology.models["sentiment"].checkpoint_config(ckpt), name=ckpt)
        for k in range(0, len(idx), 64):
            part = idx[k:k + 64]
            for i, reply in zip(part, model.run_batch([events[i][1] for i in part])):
                out[i] = reply
    return out


async def _stream(handle, events: list[tuple[str, str]]) -> tuple[dict[int, dict[str, Any]], int]:
    """Send the events as a route would: per wave, one call per checkpoint, the calls of a wave in flight together."""
    replies: dict[int, dict[str, Any]] = {}
    calls = 0
    for w in range(0, len(events), WAVE):
        groups: dict[str, list[int]] = defaultdict(list)
        for i in range(w, min(w + WAVE, len(events))):
            groups[events[i][0]].append(i)
        answers = await asyncio.gather(*(
            handle.options(multiplexed_model_id=ckpt).infer.remote([events[i][1] for i in idx])
            for ckpt, idx in groups.items()))
        calls += len(groups)
        for idx, answer in zip(groups.values(), answers):
            assert len(answer) == len(idx)
            replies.update(zip(idx, answer))
    return replies, calls


async def test_each_result_is_its_checkpoints_bare_output(mux_app, mux_topology) -> None:
    rng = random.Random(18)
    ids = [f"ft-{i}" for i in range(CHECKPOINTS)]
    events = [(rng.choice(ids), f"{rng.choice(_CORPUS)} {i}") for i in range(EVENTS)]

    t0 = time.perf_counter()
    replies, calls = await _stream(mux_app, events)
    served_s = time.perf_counter() - t0
    bare = _bare(mux_topology, events)

    versions = {}
    for i, (ckpt, _) in enumerate(events):
        got, want = replies[i], bare[i]
        assert got["ok"], got
        assert got["model"] == want["model"], (i, ckpt)
        assert got["result"]["label"] == want["result"]["label"], (i, ckpt, got, want)
        assert abs(got["result"]["score"] - want["result"]["score"]) <= SCORE_TOL, (i, ckpt, got, want)
        versions[ckpt] = got["model"]["version"]
    assert len(set(versions.values())) == CHECKPOINTS, "each checkpoint has its own version"

    # Distinguishable: on a sample of the events, the named checkpoint is the only one whose bare output
    # matches the result within the tolerance (so no other checkpoint could pass for it).
    from workers.sentiment import SentimentModel

    # A chance match within 1e-5 on one text happens (once in CI: ft-2 matched ft-3 on one text; the
    # WordPiece vocabulary, so every output, differs per build), so of the 50 x 7 comparisons with other
    # checkpoints a few may match by chance; a checkpoint passing for another would match on all of them.
    sample = rng.sample(range(EVENTS), 50)
    texts = [events[i][1] for i in sample]
    chance: list[tuple[int, str, str]] = []
    for c in ids:
        outs = SentimentModel(mux_topology.models["sentiment"].checkpoint_config(c), name=c).run_batch(texts)
        for i, o in zip(sample, outs):
            same = (o["result"]["label"] == replies[i]["result"]["label"]
                    and abs(o["result"]["score"] - replies[i]["result"]["score"]) <= SCORE_TOL)
            if c == events[i][0]:
                assert same, (i, c)
            elif same:
                chance.append((i, c, events[i][0]))
    assert len(chance) <= 3, f"other checkpoints matched {len(chance)} of 350 comparisons: {chance}"

    replicas = await _replica_stats(mux_app)
    loads = sum(sum(st["checkpoints"]["loads"].values()) for st in replicas)
    evictions = sum(sum(st["checkpoints"]["evictions"].values()) for st in replicas)
    items: Counter[str] = Counter()
    for st in replicas:
        ck = st["checkpoints"]
        items.update(ck["items"])
        assert len(ck["loaded"]) <= SLOTS
        # every load is still held or was evicted once
        assert sum(ck["loads"].values()) - sum(ck["evictions"].values()) == len(ck["loaded"])
    print(f"\nmultiplex: {EVENTS} events over {CHECKPOINTS} checkpoints, {SLOTS} slots x {REPLICAS} replica(s): "
          f"{calls} calls in {served_s:.1f} s ({EVENTS / served_s:.0f} events/s); loads {loads}, evictions "
          f"{evictions}; per replica: " + "; ".join(
              f"loads {dict(sorted(st['checkpoints']['loads'].items()))} loaded {st['checkpoints']['loaded']} "
              f"batches {st['batches']} (mean {st['mean']:.1f}, max {st['max']})" for st in replicas))
    assert dict(items) == dict(Counter(c for c, _ in events))
    assert loads >= CHECKPOINTS
    assert max(st["max"] for st in replicas) > 1  # Serve did batch
    assert all(st["checkpoints"]["slots"] == SLOTS for st in replicas)  # as configured


async def _replica_stats(handle) -> list[dict[str, Any]]:
    """``stats()`` of every replica (calls land on any replica: ask until each has answered)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(200):
        st = await handle.stats.remote()
        seen[st["pid"]] = st
        if len(seen) == REPLICAS:
            break
    assert len(seen) == REPLICAS, f"heard from {len(seen)} of {REPLICAS} replicas"
    return list(seen.values())


async def test_unknown_checkpoint_and_the_base_model(mux_app) -> None:
    bad = await mux_app.options(multiplexed_model_id="ft-99").infer.remote(["hello", "there"])
    assert [r["error_class"] for r in bad] == ["UnknownCheckpoint"] * 2
    assert "models.sentiment.multiplex.checkpoints" in bad[0]["error"]
    broken = await mux_app.options(multiplexed_model_id="broken").infer.remote(["hello"])
    assert broken[0]["error_class"] == "CheckpointError", broken
    assert "`models.sentiment.multiplex.checkpoints.broken.model`" in broken[0]["error"]
    base = await mux_app.infer.remote(["hello"])
    assert base[0]["ok"] and base[0]["model"]["name"].endswith("tiny-sentiment")


async def test_canary_and_shadow_through_serve(mux_app, mux_topology) -> None:
    """The rollout's pure parts with real Serve: 5,000 events of 1,000 users split sticky (canary at 10%),
    every one also sent to a shadow checkpoint; each answer is the bare output of the variant it names,
    and the comparison folded per batch equals the one computed from the two answer sets joined by event."""
    from schemas.events import TextEvent, VariantInfo
    from topologies.rollout import RolloutDeltas, RoutePlan, report
    from workers.sentiment import SentimentModel

    route = mux_topology.routes[0]
    plan = RoutePlan.of(mux_topology, route)
    rng = random.Random(5)
    events = [TextEvent(event_id=f"e{i}", ts=1, user_id=f"u{rng.randrange(1000)}", text=f"{rng.choice(_CORPUS)} {i}")
              for i in range(5000)]
    live: dict[int, tuple[Any, dict[str, Any]]] = {}
    mirror: dict[int, dict[str, Any]] = {}
    window: Counter[str] = Counter()
    t0 = time.perf_counter()
    for b in range(0, len(events), 250):  # micro-batches of 250, as a route would send them
        batch = events[b:b + 250]
        groups = plan.split_batch("sentiment", batch)
        shadows = plan.shadow_batch("sentiment", batch)
        calls = [mux_app.options(**v.call_options()).infer.remote([batch[i].text for i in idx]) for v, idx in groups]
        calls += [mux_app.options(**s.variant.call_options()).infer.remote([batch[i].text for i in idx])
                  for s, idx in shadows]
        answers = await asyncio.gather(*calls)
        deltas = RolloutDeltas("sentiment")
        for (v, idx), ans in zip(groups, answers):
            for i, r in zip(idx, ans):
                live[b + i] = (v, r)
                deltas.answered(v.name, r["result"], r["inference_ms"])
        for (s, idx), ans in zip(shadows, answers[len(groups):]):
            for i, r in zip(idx, ans):
                mirror[b + i] = r
                deltas.paired(s.variant.name, live[b + i][1]["result"], r["result"])
        window.update(deltas.as_dict())
    served_s = time.perf_counter() - t0

    share = sum(v.name == "canary" for v, _ in live.values()) / len(events)
    assert abs(share - 0.10) <= 0.02, share
    per_user: dict[str, set[str]] = defaultdict(set)
    for i, (v, _) in live.items():
        per_user[events[i].user_id].add(v.name)
    assert all(len(names) == 1 for names in per_user.values())
    assert len(mirror) == len(events)  # the shadow (100%) answered every event

    # Each answer is the bare output of the variant it names.
    bare_models = {None: SentimentModel(mux_topology.models["sentiment"], name="base")}
    for c in ("ft-0", "ft-1"):
        bare_models[c] = SentimentModel(mux_topology.models["sentiment"].checkpoint_config(c), name=c)
    asked: dict[str | None, list[int]] = defaultdict(list)
    for i, (v, _) in sorted(live.items()):
        asked[v.checkpoint].append(i)
    asked["ft-1"] += sorted(mirror)  # the shadow's checkpoint (the canary's is ft-0)
    bare: dict[str | None, dict[int, dict[str, Any]]] = defaultdict(dict)
    for c, idx in asked.items():
        for k in range(0, len(idx), 64):
            part = idx[k:k + 64]
            bare[c].update(zip(part, bare_models[c].run_batch([events[i].text for i in part])))
    for i, (v, r) in live.items():
        want = bare[v.checkpoint][i]
        assert r["model"] == want["model"] and r["result"]["label"] == want["result"]["label"]
        assert abs(r["result"]["score"] - want["result"]["score"]) <= SCORE_TOL
        assert VariantInfo.model_validate(v.result_field()).checkpoint == v.checkpoint
    for i, r in mirror.items():
        assert r["result"]["label"] == bare["ft-1"][i]["result"]["label"]

    # The folded comparison equals the offline one (the two answer sets joined by event).
    rep = report(window)
    both = [(live[i][1]["result"], mirror[i]["result"]) for i in mirror]
    agree = sum(a["label"] == m["label"] for a, m in both) / len(both)
    diff = sum(abs(a["score"] - m["score"]) for a, m in both) / len(both)
    s = rep["shadows"]["next"]
    assert s["pairs"] == len(both)
    assert s["agreement_rate"] == pytest.approx(agree, abs=1e-12)
    assert s["mean_abs_score_diff"] == pytest.approx(diff, abs=1e-9)
    assert sum(c["count"] for c in s["confusion"]) == len(both)
    v = rep["variants"]
    assert v["canary"]["count"] + v["sentiment"]["count"] == len(events)
    print(f"\nrollout: 5,000 events, 1,000 users in {served_s:.1f} s; canary {share:.2%}; shadow agreement "
          f"{s['agreement_rate']:.3f}, mean |score diff| {s['mean_abs_score_diff']:.3f}; per variant "
          + "; ".join(f"{n}: {x['count']:.0f} events, labels {x['labels']}, mean score {x['mean_score']:.3f}"
                      for n, x in v.items()))
