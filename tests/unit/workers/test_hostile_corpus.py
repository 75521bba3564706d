"""The hostile-input corpus (``tests/fixtures/hostile.py``) says where each case must end; this checks
those expectations in-process against the codec and the image decoder, before the e2e test sends them
through Kafka (``tests/e2e/test_hostile_input.py``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from schemas.codec import EventDecodeError, Limits, check_schema_header, decode
from schemas.image_uris import ImageUrisConfig
from schemas.tasks import EVENT_KINDS
from tests.fixtures.hostile import CorpusEnv, build_corpus, write_files
from tests.fixtures.image_server import ImageServer, image_server  # noqa: F401 - fixture
from workers.base import InputError
from workers.images import ImageLimits, decode_image


def corpus_env(tmp: Path, server: ImageServer) -> CorpusEnv:
    return CorpusEnv(max_event_bytes=65536, max_image_bytes=45000, max_text_chars=1000, max_image_pixels=250_000,
                     max_image_aspect=50.0, file_root=tmp / "root", outside=tmp / "outside",
                     http_base=f"http://127.0.0.1:{server.port}")


def test_corpus_is_deterministic_large_and_varied(tmp_path: Path, image_server: ImageServer) -> None:
    env = corpus_env(tmp_path, image_server)
    first, again = build_corpus(env), build_corpus(env)
    assert first == again
    assert len({c.key for c in first}) == len(first)
    bad = [c for c in first if c.expect != "result"]
    assert len(bad) >= 1000
    assert {c.kind for c in bad} == {"text", "image", "video"}
    assert len({c.category for c in bad}) >= 25


def test_every_case_ends_where_it_says(tmp_path: Path, image_server: ImageServer) -> None:
    env = corpus_env(tmp_path, image_server)
    write_files(env)
    limits = Limits(env.max_event_bytes, env.max_image_bytes, env.max_text_chars)
    image_limits = ImageLimits(max_bytes=env.max_image_bytes, max_pixels=env.max_image_pixels,
                               max_aspect=env.max_image_aspect,
                               uris=ImageUrisConfig(file_root=str(env.file_root),
                                                    allowed_prefixes=(env.http_base + "/",), read_timeout_s=0.5,
                                                    total_timeout_s=2))
    wrong: list[str] = []
    outcomes: Counter[str] = Counter()
    for case in build_corpus(env):
        schema = EVENT_KINDS[case.kind].schema
        try:
            if case.header is not None:
                check_schema_header(case.header.encode(), schema)
            event = decode(case.value, schema, limits)
        except EventDecodeError:
            got = "decode"
        else:
            got = "result"
            if case.kind != "text":
                try:
                    decode_image(event.image.model_dump(include={"data", "uri"}), image_limits)
                except InputError:
                    got = "infer"
        outcomes[got] += 1
        if got != case.expect:
            wrong.append(f"{case.key} {case.category}: expected {case.expect}, got {got}: {case.value[:120]!r}")
    assert not wrong, "\n".join(wrong[:30])
    assert min(outcomes.values()) > 100
