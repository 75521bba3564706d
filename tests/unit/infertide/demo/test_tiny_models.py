"""Tiny checkpoints: seeds that answer differently, and ``--tiny`` swapping a model's multiplexed checkpoints too."""

from __future__ import annotations

from pathlib import Path

from infertide.demo.tiny_models import build_tiny_sentiment, build_tiny_sentiment_family, with_tiny_models
from schemas.topology import parse_topology


def test_a_family_answers_differently_and_is_built_once(tiny_models_dir: Path) -> None:
    from workers.sentiment import SentimentModel

    family = build_tiny_sentiment_family(tiny_models_dir / "family", 3)
    assert list(family) == ["ft-0", "ft-1", "ft-2"]
    texts = ["i love this movie", "the service was bad", "not good not bad"]
    outs = [SentimentModel(parse_topology({"models": {"s": {"task": "sentiment", "model": str(p), "warmup": False}},
                                           "routes": [{"name": "r", "input": "text", "kind": "text",
                                                       "models": ["s"]}]}).models["s"]).run_batch(texts)
            for p in family.values()]
    assert len({tuple(round(r["result"]["score"], 4) for r in o) for o in outs}) == 3
    assert len({o[0]["model"]["version"] for o in outs}) == 3
    stamp = (family["ft-0"] / ".infertide-tiny-ok").read_text()
    assert '"seed": 1' in stamp and build_tiny_sentiment(family["ft-0"], seed=1, init_range=0.5) == family["ft-0"]
    assert (family["ft-0"] / ".infertide-tiny-ok").read_text() == stamp  # reused, not rebuilt


def test_tiny_swaps_multiplexed_checkpoints(tiny_models_dir: Path) -> None:
    t = parse_topology({
        "models": {"s": {"task": "sentiment", "model": "org/real",
                         "multiplex": {"checkpoints": {"a": "/real/a", "b": "/real/b"}}}},
        "routes": [{"name": "r", "input": "text", "kind": "text", "models": ["s"],
                    "rollout": {"s": {"variants": [{"model": "s", "checkpoint": "b", "percent": 10}]}}}]})
    tiny = with_tiny_models(t, tiny_models_dir).models["s"]
    assert tiny.model.endswith("tiny-sentiment")
    assert {k: Path(v.model).name for k, v in tiny.multiplex.checkpoints.items()} == {"a": "ft-0", "b": "ft-1"}
