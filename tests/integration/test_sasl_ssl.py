"""Every client through a SASL_SSL listener (SCRAM-SHA-512 over TLS) of the local broker, and no secret in any output.

A broker of its own (the session's broker is PLAINTEXT), started with ``LocalKafka(sasl_ssl=True)``: a local
CA and certificate, SCRAM users made at format time. Round trips: kafka-python, aiokafka with the settings
the route consumer uses (``topologies.kafka_settings``), the CLI (``infertide produce``/``tail`` with a
SASL_SSL topology), Debian's kcat (PLAIN inside TLS while its librdkafka's SCRAM is refused by Kafka 4), and a Faust agent built with the worker's own credentials
(``topologies.host.app._credentials``). Wrong passwords are refused, and the password never shows in the
broker's logs, the CLI's output, kcat's messages, Faust's logs or an error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from infertide.local.broker import LocalKafka
from schemas.topology import TOPIC_ALIASES, Topology, default_topology_path, parse_topology
from topologies.kafka_settings import aiokafka_kwargs

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

CLI = str(Path(sys.executable).with_name("infertide"))
WRONG = "not-the-password-7f3a"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    t0 = time.monotonic()
    kafka = LocalKafka(tmp_path_factory.mktemp("sasl") / "kafka", sasl_ssl=True).start()
    print(f"\n[sasl_ssl] broker ready in {time.monotonic() - t0:.1f}s at {kafka.bootstrap} (certificates, format, start)")
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def config(broker: LocalKafka, tmp_path: Path) -> tuple[Topology, Path]:
    """A SASL_SSL topology (unique topics) as a file; the password only in the environment it names."""
    data = yaml.safe_load(default_topology_path().read_text())
    prefix = f"s{uuid.uuid4().hex[:8]}"
    data["topics"] = {**data.get("topics", {}), **{a: f"{prefix}.{a}" for a in TOPIC_ALIASES}, "partitions": 2}
    data["kafka"] = {**data.get("kafka", {}), **broker.tls.kafka_section(broker.bootstrap, "SASL_TEST_PASSWORD")}
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_topology(data, str(path)), path


@pytest.fixture
def password_env(broker: LocalKafka, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("SASL_TEST_PASSWORD", broker.tls.password)
    return {**os.environ, "SASL_TEST_PASSWORD": broker.tls.password}


def assert_secret_free(broker: LocalKafka, *texts: str) -> None:
    logs = [p.read_text(errors="replace") for p in broker.workdir.glob("*.log")]
    for secret in (broker.tls.password, broker.tls.broker_password, broker.tls.store_password, WRONG):
        for text in (*texts, *logs):
            assert secret not in text, "a password leaked into a log, an output or an error"


def test_kafka_python_roundtrip_and_wrong_password(broker: LocalKafka, unique_topic: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, **broker.client_kwargs())
    producer.send(unique_topic, b"kafka-python").get(30)
    producer.close()
    consumer = KafkaConsumer(unique_topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=15000, **broker.client_kwargs())
    assert next(iter(consumer)).value == b"kafka-python"
    consumer.close()
    with pytest.raises(KafkaError) as refused:
        KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=4000, bootstrap_timeout_ms=4000,
                      **{**broker.client_kwargs(), "sasl_plain_password": WRONG}).send(unique_topic, b"x").get(10)
    assert_secret_free(broker, str(refused.value), repr(refused.value))


async def test_aiokafka_with_the_route_consumer_settings(broker: LocalKafka, config: tuple[Topology, Path],
                                                         password_env: dict[str, str], unique_topic: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    kw = aiokafka_kwargs(config[0].kafka, broker.bootstrap)  # what route_consumer.py and totals.py pass
    producer = AIOKafkaProducer(**kw)
    await producer.start()
    try:
        await producer.send_and_wait(unique_topic, b"aiokafka")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(unique_topic, auto_offset_reset="earliest", **kw)
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert record.value == b"aiokafka"


def _cli(path: Path, bootstrap: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--config", str(path), *args, "--bootstrap", bootstrap], capture_output=True,
                          text=True, timeout=90, env=env)


def test_cli_topics_produce_tail(broker: LocalKafka, config: tuple[Topology, Path], password_env: dict[str, str]) -> None:
    path = config[1]
    runs = [_cli(path, broker.bootstrap, password_env, "topics", "create"),
            _cli(path, broker.bootstrap, password_env, "produce", "text", "through tls", "--user", "u-sasl"),
            _cli(path, broker.bootstrap, password_env, "tail", "text", "--from-beginning", "--raw", "--max", "1",
                 "--timeout", "15")]
    for run in runs:
        assert run.returncode == 0, f"{run.args} exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    assert '"through tls"' in runs[2].stdout and '"u-sasl"' in runs[2].stdout
    refused = _cli(path, broker.bootstrap, {**password_env, "SASL_TEST_PASSWORD": WRONG}, "produce", "text", "no")
    assert refused.returncode != 0
    assert_secret_free(broker, *(r.stdout + r.stderr for r in [*runs, refused]))


def _librdkafka(kcat: str) -> tuple[int, ...]:
    found = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", subprocess.run([kcat, "-V"], capture_output=True,
                                                                      text=True).stdout)
    assert found, "kcat -V names no librdkafka version"
    return tuple(int(x) for x in found.groups())


def test_kcat_roundtrip(broker: LocalKafka, tmp_path: Path, unique_topic: str) -> None:
    """SCRAM-SHA-512 where librdkafka can (2.6.1+); before that its SCRAM is refused by Kafka 4
    (confluentinc/librdkafka#4895): checked, and kcat goes through the same TLS listener with PLAIN."""
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.fail("kcat is required (an independent Kafka client): apt-get install -y kcat, or make system-deps")

    def conf(mechanism: str, password: str) -> str:  # a -F file, so the password is not on a command line
        path = tmp_path / f"kcat-{mechanism}-{len(password)}.conf"
        path.write_text(f"security.protocol=SASL_SSL\nsasl.mechanisms={mechanism}\nsasl.username="
                        f"{broker.tls.username}\nsasl.password={password}\nssl.ca.location={broker.tls.ca_file}\n")
        return str(path)

    def metadata(mechanism: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kcat, "-b", broker.bootstrap, "-F", conf(mechanism, password), "-L", "-m", "3"],
                              capture_output=True, text=True, timeout=60)

    scram = metadata("SCRAM-SHA-512", broker.tls.password)
    mechanism = "SCRAM-SHA-512"
    if _librdkafka(kcat) < (2, 6, 1):
        assert scram.returncode != 0 and "Authentication failed" in scram.stderr, "librdkafka's SCRAM works now: " \
            "drop the PLAIN fallback"
        mechanism = "PLAIN"
    base = [kcat, "-b", broker.bootstrap, "-t", unique_topic, "-F", conf(mechanism, broker.tls.password)]
    put = subprocess.run([*base, "-P"], input="from kcat\n", capture_output=True, text=True, timeout=60)
    assert put.returncode == 0, put.stderr
    got = subprocess.run([*base, "-C", "-o", "beginning", "-c", "1", "-e"], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and got.stdout.strip() == "from kcat", got.stderr
    refused = metadata(mechanism, WRONG)
    assert refused.returncode != 0 and "Authentication failed" in refused.stderr, refused.stderr
    print(f"\n[sasl_ssl] kcat (librdkafka {'.'.join(map(str, _librdkafka(kcat)))}) round trip with {mechanism}")
    assert_secret_free(broker, scram.stderr, put.stderr, got.stderr, refused.stdout + refused.stderr)


async def test_faust_agent_with_the_worker_credentials(broker: LocalKafka, config: tuple[Topology, Path],
                                                       password_env: dict[str, str], unique_topic: str,
                                                       caplog: pytest.LogCaptureFixture,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    import faust
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from topologies.host.app import _credentials

    caplog.set_level(logging.DEBUG)
    app = faust.App(f"sasl-{uuid.uuid4().hex[:6]}", broker=f"kafka://{broker.bootstrap}",
                    broker_credentials=_credentials(config[0]), store="memory://", web_enabled=False,
                    topic_replication_factor=1, topic_partitions=1, key_serializer="raw", value_serializer="raw",
                    consumer_auto_offset_reset="earliest")
    source, sink = app.topic(unique_topic), app.topic(f"{unique_topic}.out")

    @app.agent(source)
    async def relay(stream):  # noqa: ANN001, ANN202 - a Faust agent
        async for value in stream:
            await sink.send(value=value.upper())

    kw = aiokafka_kwargs(config[0].kafka, broker.bootstrap)
    producer = AIOKafkaProducer(**kw)
    await producer.start()
    await producer.send_and_wait(unique_topic, b"through faust")
    await app.start()
    consumer = AIOKafkaConsumer(f"{unique_topic}.out", auto_offset_reset="earliest", **kw)
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 60)
    finally:
        await consumer.stop()
        await producer.stop()
        await app.stop()
    assert record.value == b"THROUGH FAUST"
    out, err = capfd.readouterr()
    assert_secret_free(broker, caplog.text, out, err)


def test_restart_keeps_credentials(broker: LocalKafka, unique_topic: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, **broker.client_kwargs())
    producer.send(unique_topic, b"before").get(30)
    producer.close()
    t0 = time.monotonic()
    broker.stop()
    broker.start()
    print(f"\n[sasl_ssl] restart on the same folder: {time.monotonic() - t0:.1f}s")
    consumer = KafkaConsumer(unique_topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=15000, **broker.client_kwargs())
    assert next(iter(consumer)).value == b"before"
    consumer.close()
    assert (broker.tls.folder / "secrets.json").stat().st_mode & 0o077 == 0
    assert (broker.workdir / "server.properties").stat().st_mode & 0o077 == 0
