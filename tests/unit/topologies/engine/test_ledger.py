"""The partition ledger (pure): what may be committed under each guarantee, generations, replays, refreshes."""

from __future__ import annotations

from types import SimpleNamespace

from topologies.engine.ledger import STALE_AFTER, PartitionLedger

A0, A1 = ("a", 0), ("a", 1)


def _recs(partition: int, *offsets: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(topic="a", partition=partition, offset=o, counted=True) for o in offsets]


def test_at_least_once_commits_what_is_acked_with_the_last_summary_offset_as_metadata() -> None:
    ledger = PartitionLedger()
    ledger.assigned({A0: (10, "7"), A1: (None, None)})
    first = ledger.submitted(_recs(0, 10, 11) + _recs(1, 0))
    second = ledger.submitted(_recs(0, 12))
    assert ledger.commit_plan() == {}, "nothing acked yet"
    ledger.published(first)
    assert ledger.commit_plan() == {}, "published is not acked in at-least-once"
    assert ledger.acked(first, summary_offset=41)
    assert ledger.commit_plan() == {A0: (12, "41"), A1: (1, "41")}
    ledger.acked(second)  # a batch without a summary keeps the last one
    plan = ledger.commit_plan()
    assert plan == {A0: (13, "41"), A1: (1, "41")}
    assert ledger.did_commit(plan)
    assert ledger.commit_plan() == {}
    assert not ledger.did_commit({A0: (13, "50")}), "only metadata moved"
    assert ledger.parts[A0].summary_at == 50


def test_exactly_once_commits_what_was_published_into_the_transaction() -> None:
    ledger = PartitionLedger(exactly_once=True)
    ledger.assigned({A0: (0, None)})
    ticket = ledger.submitted(_recs(0, 0, 1, 2))
    assert ledger.commit_plan() == {}
    ledger.published(ticket)
    assert ledger.commit_plan() == {A0: (3, "")}


def test_a_batch_of_an_older_generation_is_never_published_acked_or_committed() -> None:
    ledger = PartitionLedger(exactly_once=True)
    ledger.assigned({A0: (0, None)})
    old = ledger.submitted(_recs(0, 0, 1))
    ledger.revoked()
    ledger.assigned({A0: (0, None)})
    assert not ledger.current(old)
    ledger.published(old)
    assert not ledger.acked(old)
    assert ledger.commit_plan() == {}


def test_a_rewind_goes_back_to_the_committed_offsets_in_a_new_generation() -> None:
    ledger = PartitionLedger(exactly_once=True)
    ledger.assigned({A0: (5, None), A1: (9, None)})
    ticket = ledger.submitted(_recs(0, 5, 6))
    ledger.published(ticket)
    assert ledger.rewind() == {A0: 5, A1: 9}
    assert not ledger.current(ticket) and ledger.commit_plan() == {}


def test_records_a_previous_owner_summarized_are_marked_uncounted() -> None:
    ledger = PartitionLedger()
    ledger.assigned({A0: (10, "3")}, summarized_upto={A0: 12})
    recs = _recs(0, 10, 11, 12, 13)
    ledger.fetched(A0, recs)
    assert [r.counted for r in recs] == [False, False, True, True]
    later = _recs(0, 14)
    ledger.fetched(A0, later)
    assert later[0].counted and ledger.parts[A0].fetched == 15


def test_idle_partitions_get_the_summary_topics_end_as_metadata_unless_a_submit_came_in_between() -> None:
    ledger = PartitionLedger()
    ledger.assigned({A0: (4, "10"), A1: (None, None)})
    before = ledger.idle()
    assert ledger.refreshes(before, 10 + STALE_AFTER) == {A1: (0, str(10 + STALE_AFTER))}, \
        "never committed: at its start; A0's metadata is not stale yet"
    assert ledger.refreshes(before, 11 + STALE_AFTER) == {A0: (4, str(11 + STALE_AFTER)), A1: (0, str(11 + STALE_AFTER))}
    ledger.submitted(_recs(1, 0))
    assert A1 not in ledger.refreshes(before, 11 + STALE_AFTER), "a submit while the end was read disqualifies it"


def test_lag_is_the_high_watermark_less_the_committed_offset() -> None:
    ledger = PartitionLedger()
    ledger.assigned({A0: (4, None), A1: (None, None)})
    assert ledger.lag({A0: 10, A1: -1001}) == {A0: 6}
