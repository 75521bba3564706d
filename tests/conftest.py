"""Shared test setup: offline model environment, the real Kafka broker fixture."""

import os

# No hub, no telemetry, nothing written to ~ (ENVIRONMENT.md).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The CLI's rich consoles wrap at the width they find when first imported: wide and the same in every
# process (an xdist worker found 80 columns and cut paths, tables and YAML that the tests read).
os.environ["COLUMNS"] = "200"

# Import (and so assertion-rewrite) hypothesis' terminal-summary module up front: rewriting it at the
# end of a long session has hit CPython 3.11's "AST constructor recursion depth mismatch" once here.
import hypothesis.internal.observability  # noqa: E402,F401

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.models"]


import pytest  # noqa: E402


def xdist_scope(nodeid: str) -> str:
    """What one pytest-xdist worker runs whole: a module, or all of tests/unit (fast, pure) or all of
    tests/k8s (one local control plane), so a module's fixtures (a Ray Serve app, a broker, a cluster)
    are built once."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 and parts[1] in ("unit", "k8s") else path


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):  # type: ignore[no-untyped-def]
    """``make test`` runs two pytest-xdist workers with ``--dist loadscope``: each :func:`xdist_scope` is a
    scope, sent whole to one worker. (xdist's own ``loadgroup`` marks each test's node id with its group,
    which pytest 9.2's node ids no longer take: with it every module was spread over both workers, each
    building its fixtures again.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return GroupScheduling(config, log)
