"""The partition ledger: everything the engine knows per input partition, in one place, and what may be committed.

The route consumer tells it what happened (:meth:`assigned`, :meth:`revoked`, :meth:`fetched`,
:meth:`submitted`, :meth:`published`, :meth:`acked`, :meth:`did_commit`, :meth:`rewind`); it answers
what may be committed (:meth:`commit_plan`). Pure bookkeeping: no Kafka client, nothing awaits.

Per partition: the offset the group has committed, the next offset fetched, the end of the last batch
published and of the last batch acknowledged, batches in flight, where the last acked batch's summary
landed (the next commit's metadata, at-least-once) and what the partition's previous owner already
summarized (records below it are replays, not counted again).

Generations: every assignment, revocation and rewind starts a new generation; a :class:`Ticket` (one
submitted batch) of an older generation is never published (exactly-once), never committed, and its
summary is never sent (at-least-once), because the partitions' next owner reads and counts its events.

What may be committed:

- at-least-once: the end of the last batch whose every output is acknowledged by the broker, in submit
  order (acks arrive in order: :mod:`topologies.engine.executor`), with the summary-topic offset of that
  batch's summary as metadata (:mod:`topologies.engine.replays`);
- exactly-once: the end of the last batch published into the open transaction; the transaction's commit
  makes its outputs and these offsets visible together, or neither (an abort :meth:`rewind` s the ledger
  to the committed offsets, and the consumer seeks there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STALE_AFTER", "PartitionLedger", "PartitionState", "Ticket", "TP"]

TP = tuple[str, int]  # (topic, partition)
STALE_AFTER = 1000  # an idle partition's metadata this many summary records behind the end is moved up


@dataclass(slots=True)
class PartitionState:
    """One held partition. Offsets are "next offset" positions (-1: none yet)."""

    committed: int  # what the group holds (the log start's stand-in 0 when it never committed)
    never_committed: bool = False
    fetched: int = -1
    published: int = -1
    acked: int = -1
    in_flight: int = 0
    submits: int = 0
    summary_at: int = -1  # summary-topic offset of the last acked batch's summary
    summarized_upto: int = -1  # records below this were counted by the partition's previous owner


@dataclass(frozen=True, slots=True)
class Ticket:
    """One submitted batch: its generation and, per partition, the end of its offsets (last + 1)."""

    generation: int
    ends: dict[TP, int] = field(default_factory=dict)


class PartitionLedger:
    """Per-partition state of one route consumer's assignment.

    Args:
        exactly_once: commit what was published in the open transaction, not what was acked.
    """

    def __init__(self, *, exactly_once: bool = False) -> None:
        self.exactly_once = exactly_once
        self.generation = 0
        self.parts: dict[TP, PartitionState] = {}

    # -- assignment ---------------------------------------------------------------------

    def assigned(self, committed: Mapping[TP, tuple[int | None, str | None]],
                 summarized_upto: Mapping[TP, int] | None = None) -> None:
        """Partitions were assigned, with the group's committed ``(offset or None, metadata)`` of each and what
        their previous owners summarized (at-least-once; :mod:`topologies.engine.replays`)."""
        self.generation += 1
        upto = summarized_upto or {}
        for tp, (offset, metadata) in committed.items():
            state = PartitionState(committed=max(offset or 0, 0), never_committed=offset is None or offset < 0)
            state.summary_at = parse_metadata(metadata)
            state.summarized_upto = upto.get(tp, -1)
            self.parts[tp] = state

    def revoked(self, partitions: Iterable[TP] | None = None) -> None:
        """Partitions (None: all) were revoked or lost: whatever is still in flight belongs to the past."""
        self.generation += 1
        if partitions is None:
            self.parts.clear()
        for tp in partitions or ():
            self.parts.pop(tp, None)

    def rewind(self) -> dict[TP, int]:
        """An aborted transaction: back to the committed offsets (returned: where to seek), new generation."""
        self.generation += 1
        for state in self.parts.values():
            state.fetched = state.published = state.acked = -1
            state.in_flight = 0
        return {tp: state.committed for tp, state in self.parts.items()}

    def current(self, ticket: Ticket) -> bool:
        """Whether the batch was submitted under the assignment held now."""
        return ticket.generation == self.generation

    # -- per batch ----------------------------------------------------------------------

    def fetched(self, tp: TP, records: Sequence[Any]) -> None:
        """Records of ``tp`` (offset order) were fetched; those a previous owner summarized become uncounted."""
        state = self.parts.get(tp)
        if state is None or not records:
            return
        bound = state.summarized_upto
        if bound > records[0].offset:
            for rec in records:
                if rec.offset < bound:
                    rec.counted = False
        state.fetched = records[-1].offset + 1

    def submitted(self, records: Sequence[Any]) -> Ticket:
        """A batch of ``records`` went to the executor."""
        ends: dict[TP, int] = {}
        for rec in records:
            ends[(rec.topic, rec.partition)] = rec.offset + 1
        for tp in ends:
            state = self.parts.get(tp)
            if state is not None:
                state.in_flight += 1
                state.submits += 1
        return Ticket(self.generation, ends)

    def published(self, ticket: Ticket) -> None:
        """The batch's outputs were handed to the producer (into the open transaction, exactly-once)."""
        if ticket.generation != self.generation:
            return
        for tp, end in ticket.ends.items():
            state = self.parts.get(tp)
            if state is not None and end > state.published:
                state.published = end

    def acked(self, ticket: Ticket, summary_offset: int | None = None) -> bool:
        """Every output of the batch is acknowledged; ``summary_offset``: where its summary landed.
        False when the batch belongs to an older generation (nothing recorded)."""
        if ticket.generation != self.generation:
            return False
        for tp, end in ticket.ends.items():
            state = self.parts.get(tp)
            if state is None:
                continue
            state.in_flight = max(0, state.in_flight - 1)
            if end > state.acked:
                state.acked = end
            if summary_offset is not None and summary_offset > state.summary_at:
                state.summary_at = summary_offset
        return True

    # -- committing ---------------------------------------------------------------------

    def commit_plan(self) -> dict[TP, tuple[int, str]]:
        """``{tp: (offset, metadata)}`` of every partition with progress past its committed offset."""
        plan = {}
        for tp, state in self.parts.items():
            done = state.published if self.exactly_once else state.acked
            if done > state.committed or (done >= 0 and state.never_committed):
                plan[tp] = (done, "" if state.summary_at < 0 else str(state.summary_at))
        return plan

    def did_commit(self, plan: Mapping[TP, tuple[int, str]]) -> bool:
        """The group now holds ``plan``; True when some offset moved (not only metadata)."""
        moved = False
        for tp, (offset, metadata) in plan.items():
            state = self.parts.get(tp)
            if state is None:
                continue
            moved |= offset > state.committed
            state.committed = max(state.committed, offset)
            state.never_committed = False
            state.summary_at = max(state.summary_at, parse_metadata(metadata))
        return moved

    def idle(self) -> dict[TP, int]:
        """``{tp: batches ever submitted}`` of the partitions with nothing in flight (refresh candidates)."""
        return {tp: s.submits for tp, s in self.parts.items() if not s.in_flight}

    def refreshes(self, before: Mapping[TP, int], summary_end: int) -> dict[TP, tuple[int, str]]:
        """Commits that move idle partitions' metadata up to the summary topic's end ``summary_end``
        (at-least-once): only partitions still idle with no submit since ``before`` was taken, never
        committed or with metadata ``STALE_AFTER`` records behind."""
        due = {}
        for tp, submits in before.items():
            state = self.parts.get(tp)
            if state is None or state.in_flight or state.submits != submits:
                continue
            if state.never_committed or state.summary_at < summary_end - STALE_AFTER:
                due[tp] = (state.committed, str(summary_end))
        return due

    def lag(self, highwater: Mapping[TP, int]) -> dict[TP, int]:
        """Events not yet committed per held partition, from the last fetch's high watermarks."""
        return {tp: max(0, highwater[tp] - s.committed) for tp, s in self.parts.items() if highwater.get(tp, -1) >= 0}


def parse_metadata(metadata: str | None) -> int:
    """A summary-topic offset from commit metadata; -1 when absent or not ours."""
    try:
        offset = int(metadata or "")
    except ValueError:
        return -1
    return offset if offset >= 0 else -1
