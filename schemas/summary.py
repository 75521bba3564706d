"""The batch summary (``batch_summary.v1``): what one route batch adds to analytics and recommendations.

One record per micro-batch on the internal summary topic ``<consumer_group>-summaries`` (one partition),
written by the route engine (:mod:`topologies.engine.batch`) in the batch's outputs (so in exactly-once
inside its transaction), read by the analytics fold, the recommendations fold and the totals.
A window marker (``{"marker": <window start ms>}``) and an event-time fold snapshot (``{"snapshot": ...}``,
:mod:`topologies.state.event_windows`) share the topic and are not summaries.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SUMMARY_PARTITION", "BatchSummary", "Engagement", "ItemLabels"]

#: Every record of the summary topic (summaries, markers, snapshots) is written to, and read from, this
#: partition. The topic is declared with one; one that a broker auto-created first with more (a client's
#: metadata request can win the race against the declaration) still works, instead of summaries going to
#: the partition of their key's hash where the replay scan and the folds never look.
SUMMARY_PARTITION = 0


class _Summary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Engagement(_Summary):
    """A user's engagement with an item (one per event of the route's primary model)."""

    user_id: str
    item_id: str
    event_id: str
    weight: float


class ItemLabels(_Summary):
    """An item's labels seen in the batch (max score per label)."""

    item_id: str
    labels: dict[str, float]


class BatchSummary(_Summary):
    """One batch: its input offset ranges (counted or not) and the deltas of its counted events."""

    route: str
    ts: Annotated[int, Field(ge=0, description="when the batch's outputs were built, ms since the epoch")]
    topic: str = Field(description="the route's input topic")
    ranges: dict[str, Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        description='per input partition ("<n>"), [first offset, last offset + 1] over every record of the batch')
    metrics: dict[str, dict[str, Any]] = Field(
        description='analytics deltas: "<metric>|<key>" -> {field: number} (topologies.state.analytics)')
    windows: dict[str, dict[str, dict[str, Any]]] | None = Field(
        None, description='event-time windows only (analytics.window.time: event): "<window start ms>" -> '
        '"<metric>|<key>" -> {field: number}, each event\'s deltas under every window its ts falls in')
    max_ts: dict[str, Annotated[int, Field(ge=0)]] | None = Field(
        None, description='event-time windows only: per input partition ("<n>"), the largest event ts in the batch')
    engagements: list[Engagement] = Field(default_factory=list)
    items: list[ItemLabels] = Field(default_factory=list)
