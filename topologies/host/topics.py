"""The app's internal topics: the summary topic and the recommendations fold's state topic, declared
through Faust (so the app creates them when it starts, before the routes write a summary)."""

from __future__ import annotations

from typing import Any

import faust
from mode import Service

from schemas.recommend_state import state_topic
from schemas.topology import Topology

__all__ = ["InternalTopics"]


class InternalTopics:
    """``summary``: ``<consumer_group>-summaries``, one partition (:mod:`schemas.summary`);
    ``recommendations_state``: compacted, one partition (:mod:`schemas.recommend_state`)."""

    def __init__(self, app: faust.App, topology: Topology) -> None:
        group = topology.kafka.consumer_group
        config = topology.topics.topic_configs() or None  # min.insync.replicas, as on every topic created here
        self.summary = app.topic(f"{group}-summaries", partitions=1, key_serializer="raw", value_serializer="raw",
                                 internal=True, config=config)
        self.recommendations_state = app.topic(state_topic(group), partitions=1, key_serializer="raw",
                                               value_serializer="raw", internal=True, compacting=True, config=config)

    def all(self) -> list[Any]:
        return [self.summary, self.recommendations_state]

    def declarer(self) -> Service:
        """A service that creates the topics that are missing when it starts (add it before the routes)."""
        return _Declare(self)


class _Declare(Service):
    def __init__(self, topics: InternalTopics, **kwargs: Any) -> None:
        self.topics = topics
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        for topic in self.topics.all():
            await topic.maybe_declare()
