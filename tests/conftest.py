"""Shared test setup: offline model environment, the real Kafka broker fixture."""

import os

# No hub, no telemetry, nothing written to ~ (ENVIRONMENT.md).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Import (and so assertion-rewrite) hypothesis' terminal-summary module up front: rewriting it at the
# end of a long session has hit CPython 3.11's "AST constructor recursion depth mismatch" once here.
import hypothesis.internal.observability  # noqa: E402,F401

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.models"]
