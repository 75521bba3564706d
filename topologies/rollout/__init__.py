"""Rollouts on the live stream: the sticky variant split, shadow queues, and the live-vs-variant comparison.

Pure logic the route engine calls; the contract of the config is ``schemas/rollout.py``, the
walkthrough ``docs/rollouts.md``. Model calls go through a Serve handle as everywhere else
(``Variant.call_options()`` names a checkpoint as Serve's multiplexed model id).
"""

from topologies.rollout.compare import (METRIC, RolloutDeltas, finalize_rollout, fold, metric_key, report,
                                        top)
from topologies.rollout.shadow_queue import ShadowQueue
from topologies.rollout.split import (ModelPlan, RoutePlan, ShadowPlan, Variant, bucket, choose_variant,
                                      sticky_value)

__all__ = [
    "METRIC",
    "ModelPlan",
    "RolloutDeltas",
    "RoutePlan",
    "ShadowPlan",
    "ShadowQueue",
    "Variant",
    "bucket",
    "choose_variant",
    "finalize_rollout",
    "fold",
    "metric_key",
    "report",
    "sticky_value",
    "top",
]
