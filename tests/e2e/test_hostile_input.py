"""Hostile input through the whole pipeline: over 1,000 malformed events (``tests/fixtures/hostile.py``),
sent with kcat (an independent Kafka client) into every input topic and interleaved with valid ones.
Every bad event lands in the dead-letter topic with a reason (one letter per model of its route when
a model refuses it), every valid one gets its results, one to one, and nothing restarts."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Stack, analytics_events, read_topic
from tests.fixtures.hostile import HEADER, Case, CorpusEnv, build_corpus, write_files
from tests.fixtures.image_server import ImageServer, serve_images

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

LIMITS = {"max_event_bytes": 65536, "max_image_bytes": 45000, "max_text_chars": 1000,
          "max_image_pixels": 250_000, "max_image_aspect": 50.0, "max_dead_letter_bytes": 65536}
DELIM, KEY_DELIM = b"\x1e<EOM>\x1e", b"\x1f<KEY>\x1f"  # kcat -D / -K: bytes no case contains
ROUTE_MODELS = {"text": ["sentiment"], "image": ["detection", "tagging", "classification"], "video": ["detection"]}
RESULT_TOPICS = {"sentiment": "sentiment", "detection": "detections", "tagging": "tags", "classification": "classes"}


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageServer]:
    with serve_images() as server:
        yield server


@pytest.fixture(scope="module")
def corpus_env(tmp_path_factory: pytest.TempPathFactory, image_host: ImageServer) -> CorpusEnv:
    tmp = tmp_path_factory.mktemp("hostile-files")
    env = CorpusEnv(LIMITS["max_event_bytes"], LIMITS["max_image_bytes"], LIMITS["max_text_chars"],
                    LIMITS["max_image_pixels"], LIMITS["max_image_aspect"], tmp / "root", tmp / "outside",
                    f"http://127.0.0.1:{image_host.port}")
    write_files(env)
    return env


@pytest.fixture(scope="module")
def stack_limits(corpus_env: CorpusEnv) -> dict[str, Any]:
    """This module's Serve app and worker share these limits, file root and allowed host."""
    return LIMITS | {"image_uris": {"file_root": str(corpus_env.file_root),
                                    "allowed_prefixes": [corpus_env.http_base + "/"],
                                    "connect_timeout_s": 1, "read_timeout_s": 1, "total_timeout_s": 3}}


def _kcat(bootstrap: str, topic: str, cases: list[Case], header: str | None) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat, "kcat is required (an independent Kafka client): apt-get install -y kcat"
    for c in cases:
        assert DELIM not in c.value and KEY_DELIM not in c.value, c.key
    data = DELIM.join(c.key.encode() + KEY_DELIM + c.value for c in cases)
    esc = {d: "".join(f"\\x{x:02x}" for x in d) for d in (DELIM, KEY_DELIM)}
    cmd = [kcat, "-P", "-b", bootstrap, "-t", topic, "-D", esc[DELIM], "-K", esc[KEY_DELIM], "-m", "10",
           "-X", "batch.size=65536"]  # record batches under the topics' max.message.bytes (128 KiB here)
    if header is not None:
        cmd += ["-H", f"{HEADER}={header}"]
    proc = subprocess.run(cmd, input=data, timeout=60, capture_output=True)
    assert proc.returncode == 0, f"kcat exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}"


def _replicas() -> dict[str, tuple[int, int]]:
    """Serve replica actors alive now: actor id -> (pid, restarts), from Ray's GCS actor table."""
    from ray._private import state

    return {aid: (a["Pid"], a["NumRestarts"]) for aid, a in state.actors().items()
            if "Replica" in a.get("ActorClassName", "") and a["State"] == "ALIVE"}


@pytest.fixture(scope="module")
def run(stack: Stack, corpus_env: CorpusEnv) -> dict[str, Any]:
    cases = build_corpus(corpus_env)
    topology, path = stack.topology("hostile", video={"sampling": {"every_n": 1, "max_lag_ms": None}})
    replicas_before = _replicas()
    worker = stack.worker(topology, path, "hostile-worker").start()
    try:
        worker.wait_ready()
        pid = worker.proc.pid
        start = time.monotonic()
        groups: dict[tuple[str, str | None], list[Case]] = defaultdict(list)
        for c in cases:
            groups[(c.kind, c.header)].append(c)
        for (kind, header), group in groups.items():
            _kcat(stack.bootstrap, topology.input_topic(next(r for r in topology.routes if r.kind == kind)),
                  group, header)
        valid = Counter()
        for c in cases:
            if c.expect == "result":
                valid.update(RESULT_TOPICS[m] for m in ROUTE_MODELS[c.kind])
        letters = sum(1 if c.expect == "decode" else len(ROUTE_MODELS[c.kind]) for c in cases if c.expect != "result")
        out = {alias: read_topic(stack.bootstrap, getattr(topology.topics, alias), timeout=120,
                                 until=lambda r, n=n: len(r) >= n) for alias, n in valid.items()}
        out["dlq"] = read_topic(stack.bootstrap, topology.topics.dlq, timeout=120, until=lambda r: len(r) >= letters)
        out["seconds"] = time.monotonic() - start
        time.sleep(1.0)  # anything extra (a duplicate, a late letter) would show up in this second read
        out["dlq_again"] = read_topic(stack.bootstrap, topology.topics.dlq, timeout=3, until=lambda r: False)
        kinds = Counter(c.kind for c in cases)
        out["analytics"] = {r.kind: analytics_events(stack.bootstrap, topology, r.name, expect_in=kinds[r.kind])
                            for r in topology.routes if kinds[r.kind]}
        out["worker_alive_same_pid"] = worker.alive() and worker.proc.pid == pid
        out["replicas"] = (replicas_before, _replicas())
        out["cases"] = cases
        return out
    finally:
        assert worker.stop() == 0, worker.tail()


def test_every_valid_event_gets_its_results_one_to_one(run: dict[str, Any]) -> None:
    cases: list[Case] = run["cases"]
    for alias in ("sentiment", "detections", "tags", "classes"):
        want = Counter(c.key for c in cases if c.expect == "result"
                       for m in ROUTE_MODELS[c.kind] if RESULT_TOPICS[m] == alias)
        got = Counter(v["event_id"] for _, _, v in run[alias])
        assert got == want, f"{alias}: missing {sorted(want - got)[:5]}, extra {sorted(got - want)[:5]}"


def test_every_bad_event_is_dead_lettered_once_per_model_with_a_reason(run: dict[str, Any]) -> None:
    cases = {c.key: c for c in run["cases"]}
    letters = [v for _, _, v in run["dlq_again"]]
    want = Counter({k: 1 if c.expect == "decode" else len(ROUTE_MODELS[c.kind])
                    for k, c in cases.items() if c.expect != "result"})
    got = Counter(base64.b64decode(d["key"]).decode() for d in letters)
    assert got == want, f"missing {sorted((want - got).items())[:5]}, extra {sorted((got - want).items())[:5]}"
    for d in letters:
        case = cases[base64.b64decode(d["key"]).decode()]
        assert d["error"].strip() and d["error_class"], d
        assert d["stage"] == case.expect, (case.key, case.category, d["stage"], d["error"])
        original = base64.b64decode(d["original"])
        assert d["original_size"] == len(case.value)
        assert d["original_sha256"] == hashlib.sha256(case.value).hexdigest()
        assert original == case.value or (d["truncated"] and case.value.startswith(original))
    _report(run["cases"], letters, run["seconds"])


def test_analytics_count_every_event_once_as_result_or_dead_letter(run: dict[str, Any]) -> None:
    for kind, counts in run["analytics"].items():
        cases = [c for c in run["cases"] if c.kind == kind]
        ok = sum(c.expect == "result" for c in cases)
        assert (counts.get("in"), counts.get("out", 0), counts.get("dlq", 0)) == (len(cases), ok, len(cases) - ok), kind


def test_nothing_restarted(run: dict[str, Any]) -> None:
    assert run["worker_alive_same_pid"], "the worker exited or was replaced"
    before, after = run["replicas"]
    assert before and after == before, f"Serve replicas changed: {before} -> {after}"
    assert all(restarts == 0 for _, restarts in after.values())


def _report(cases: list[Case], letters: list[dict[str, Any]], seconds: float) -> None:
    """The table docs/input-safety.md shows: categories with counts, and the reasons seen."""
    by_key = {c.key: c for c in cases}
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for d in letters:
        case = by_key[base64.b64decode(d["key"]).decode()]
        reasons[f"{case.kind}/{case.category}"][f"{d['stage']}: {d['error_class']}"] += 1
    counts = Counter((c.kind, c.category, c.expect) for c in cases)
    print(f"\n[hostile] {len(cases)} events ({sum(c.expect != 'result' for c in cases)} bad), "
          f"{len(letters)} dead letters, all out in {seconds:.1f} s")
    for (kind, category, expect), n in sorted(counts.items()):
        seen = ", ".join(f"{r} x{k}" for r, k in sorted(reasons[f"{kind}/{category}"].items()))
        print(f"| {kind} | {category} | {n} | {expect} | {seen} |")
