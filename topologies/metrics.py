"""Prometheus metrics of the Faust side, served on the Faust web port at ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["BATCH_STAGES", "REGISTRY", "METRICS", "forget", "render"]

REGISTRY = CollectorRegistry(auto_describe=True)

# The stages of ``infertide_batch_stage_seconds``, in a batch's order (fill: the fetcher; the rest: the pipeline).
BATCH_STAGES = ("fill", "decode", "serve", "finish", "wait", "publish", "ack")
_STAGE_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_LATENCY_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_in = Counter("infertide_events_in_total", "Input records consumed", ["route"], registry=registry)
        self.results_out = Counter("infertide_results_out_total", "Result records produced",
                                   ["route", "topic"], registry=registry)
        self.dlq = Counter("infertide_dlq_total", "Records sent to the dead-letter topic",
                           ["route", "stage", "reason"], registry=registry)
        self.unknown_fields = Counter("infertide_unknown_fields_total",
                                      "Input fields the schema does not know, ignored (routes[].strict_fields: off)",
                                      ["route"], registry=registry)
        self.replayed_uncounted = Counter(
            "infertide_replayed_uncounted_total", "Events reprocessed after their partition moved but not counted "
            "again in analytics (a summary of the previous owner had them)", ["route"], registry=registry)
        self.frames_dropped = Counter("infertide_frames_dropped_total", "Video frames not inferred",
                                      ["route", "reason"], registry=registry)
        self.video_frames = Counter("infertide_video_frames_tracked_total", "Video frames through a route's "
                                    "trackers: outcome tracked, or stale (behind its stream's last frame: boxes "
                                    "without track_id, not counted)", ["route", "outcome"], registry=registry)
        self.video_streams = Counter("infertide_video_streams_total", "Video streams restored from a snapshot "
                                     "(how: restored) or started afresh because their pts went back past "
                                     "tracker.restart_after_s (how: restarted)", ["route", "how"], registry=registry)
        self.in_flight = Gauge("infertide_in_flight_calls", "Micro-batches in flight to Serve",
                               ["route"], registry=registry)
        self.batch_size = Histogram("infertide_microbatch_size", "Events per micro-batch taken from Kafka",
                                    ["route"], buckets=_BATCH, registry=registry)
        self.e2e_latency = Histogram("infertide_e2e_latency_seconds", "Event ts to result produce",
                                     ["route"], buckets=_LATENCY_S, registry=registry)
        self.serve_call = Histogram("infertide_serve_call_seconds", "One DeploymentHandle call",
                                    ["route", "model"], buckets=_LATENCY_S, registry=registry)
        self.batch_stage = Histogram(
            "infertide_batch_stage_seconds", "One micro-batch's time in each engine stage: fill (first record to "
            "the batch closing), decode, serve (the model calls, and tracking on a video route), finish (results and summary built), wait (for its "
            "turn to publish, in submission order), publish (records handed to the producer), ack (until the broker "
            "acknowledged them)", ["route", "stage"], buckets=_STAGE_S, registry=registry)
        self.serve_retries = Counter("infertide_serve_retries_total", "Serve calls retried",
                                     ["route", "model"], registry=registry)
        self.consumer_lag = Gauge("infertide_consumer_lag", "Highwater minus committed offset",
                                  ["topic", "partition"], registry=registry)
        self.assigned = Gauge("infertide_assigned_partitions", "1 for each input partition this worker holds",
                              ["topic", "partition"], registry=registry)
        self.committed = Gauge("infertide_committed_offset", "Last committed offset",
                               ["topic", "partition"], registry=registry)
        self.recommendations = Counter("infertide_recommendations_total", "Recommendation records emitted",
                                       registry=registry)
        self.windows_emitted = Counter("infertide_analytics_windows_total", "Closed analytics windows emitted",
                                       ["metric"], registry=registry)
        self.shadow_shed = Counter("infertide_shadow_shed_total", "Shadow work dropped because the shadow's queue "
                                   "was full (routes[].rollout.<model>.shadows[].queue_size)",
                                   ["route", "model", "shadow"], registry=registry)
        self.shadow_results = Counter("infertide_shadow_results_total", "Shadow result records produced",
                                      ["route", "model", "shadow"], registry=registry)
        self.shadow_queue = Gauge("infertide_shadow_queue_depth", "Events waiting in a shadow's queue",
                                  ["route", "model", "shadow"], registry=registry)


METRICS = _Metrics(REGISTRY)


def forget(metric: Gauge, *labels: str) -> None:
    """Drop one labelled series (a partition this worker no longer holds), if it exists."""
    try:
        metric.remove(*labels)
    except KeyError:
        pass


def render() -> bytes:
    return generate_latest(REGISTRY)
