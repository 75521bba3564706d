"""A forward that raises for some inputs: the batch is split until the breaking inputs fail alone."""

from __future__ import annotations

from schemas.topology import ModelConfig
from workers.echo import EchoModel


def _echo(**options: object) -> EchoModel:
    return EchoModel(ModelConfig(task="echo", options=dict(options)))


def test_only_the_inputs_that_break_the_model_fail_and_the_rest_get_results() -> None:
    model = _echo(fail_on="poison")
    calls: list[int] = []
    predict = model.predict
    model.predict = lambda inputs: calls.append(len(inputs)) or predict(inputs)  # type: ignore[method-assign]
    items = [f"text {i}" for i in range(256)]
    for i in (3, 77, 200):
        items[i] = f"poison {i}"
    replies = model.run_batch(items)
    failed = [i for i, r in enumerate(replies) if not r["ok"]]
    assert failed == [3, 77, 200]
    assert all(replies[i]["error_class"] == "RuntimeError" and "poison" in replies[i]["error"] for i in failed)
    assert sum(r["ok"] for r in replies) == 253
    assert len(calls) <= 1 + 2 * 3 * 8, calls  # about 2k log2(n) extra forwards, not n
    mixed = _echo().run_batch(["a", 5])  # a decode error stays per item, without a split
    assert mixed[0]["ok"] and mixed[1]["error_class"] == "InputError"


def test_a_forward_that_always_fails_fails_every_item_with_its_reason() -> None:
    model = _echo(fail_on="x")
    replies = model.run_batch(["x1", "x2", "x3"])
    assert [r["ok"] for r in replies] == [False] * 3
    assert {r["error"] for r in replies} == {"echo: an input contains 'x' (options.fail_on)"}
