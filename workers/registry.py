"""Which model class serves which task; imported lazily so echo needs no torch models.

The task names are the registry's (``schemas.tasks.TASKS``); everything else about a
task lives there. A test checks the two tables name the same tasks.
"""

from __future__ import annotations

import importlib

from workers.base import BatchedModel

__all__ = ["MODEL_CLASSES", "model_class"]

MODEL_CLASSES: dict[str, str] = {
    "sentiment": "workers.sentiment:SentimentModel",
    "detection": "workers.detection:DetectionModel",
    "tagging": "workers.tagging:TaggingModel",
    "classification": "workers.classification:ClassificationModel",
    "echo": "workers.echo:EchoModel",
}


def model_class(task: str) -> type[BatchedModel]:
    """The model class for a task name (see ``schemas.tasks.TASKS``)."""
    try:
        module, name = MODEL_CLASSES[task].split(":")
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {sorted(MODEL_CLASSES)}; "
                         f"add it to workers/registry.py (see docs/extending.md)") from None
    return getattr(importlib.import_module(module), name)
