"""The recommendation fold's state rows: what its compacted state topic holds, key by key.

The recommendations fold (``topologies/state/recommendations.py``) folds the summary log into item
profiles and user affinities, and writes each row it changed to ``<consumer_group>-recommendations-state``
(one partition, ``cleanup.policy=compact``) in the same transaction as the recommendations it emitted and
the summary offset it reached. Keys:

- ``item|<item_id>`` -> :class:`ItemRow` (a tombstone when the item left the pool),
- ``user|<user_id>`` -> :class:`UserRow`,
- ``position`` -> :class:`PositionRow`: the summary offset the rows describe everything before.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["POSITION_KEY", "ItemRow", "PositionRow", "UserRow", "item_key", "state_topic", "user_key"]

POSITION_KEY = "position"


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ItemRow(_Row):
    """An item of the pool: its labels (merged over every batch that saw it) and where it was last seen."""

    labels: dict[str, float]
    at: Annotated[list[int], Field(min_length=2, max_length=2, description=(
        "[summary offset, index in its items] of the item's last update: the pool's order (oldest leave first)"))]


class UserRow(_Row):
    """A user's label affinity and the items they engaged with last (at most 50, oldest first)."""

    affinity: dict[str, float]
    seen: list[str]


class PositionRow(_Row):
    """The next summary offset to fold: the rows hold the fold of every summary before it."""

    offset: Annotated[int, Field(ge=0)]


def item_key(item_id: str) -> str:
    return f"item|{item_id}"


def user_key(user_id: str) -> str:
    return f"user|{user_id}"


def state_topic(consumer_group: str) -> str:
    """``<kafka.consumer_group>-recommendations-state``: compacted, one partition."""
    return f"{consumer_group}-recommendations-state"
