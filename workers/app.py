"""Build the Ray Serve application from the topology: one deployment per entry under ``models:``.

Layout: one Serve application named ``topology.serve_app_name``; each model is a
deployment named by its key under ``models:`` (``sentiment``, ``detection``, ...),
and a small ``Ingress`` deployment (0 CPUs) binds them all, because an
application needs one ingress. Callers reach a model with
``serve.get_deployment_handle(model_name, app_name=topology.serve_app_name)`` and
``await handle.infer.remote(items)``. The ingress also answers HTTP:
``GET /`` lists models, ``POST /<model>`` with a JSON list of items returns results.

Import path for Serve config files / KubeRay: ``workers.app:build_app`` with
``args: {config: /path/to/topology.yaml}``.
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from schemas.topology import ModelConfig, Topology, load_topology
from workers.server import ModelServer

__all__ = [
    "INGRESS_NAME",
    "Ingress",
    "build_app",
    "build_application",
    "deploy",
    "deployment_options",
    "model_user_config",
    "serve_deploy_config",
]

INGRESS_NAME = "ingress"
_USER_CONFIG_KEYS = {"task", "model", "revision", "device", "half", "warmup", "batching", "options", "multiplex"}


class Ingress:
    """HTTP front door and the application's single ingress; model calls go straight to handles.

    Args:
        models: deployment name -> handle (Serve passes handles for bound deployments).
    """

    def __init__(self, models: dict[str, DeploymentHandle]) -> None:
        self.models = models

    async def __call__(self, request: Any) -> Any:
        name = request.url.path.strip("/").split("/")[-1]
        if request.method == "GET" or not name:
            return {"models": sorted(self.models)}
        if name not in self.models:
            from starlette.responses import JSONResponse

            return JSONResponse({"error": f"unknown model {name!r}", "models": sorted(self.models)}, 404)
        items = await request.json()
        return await self.models[name].infer.remote(items if isinstance(items, list) else [items])


def model_user_config(topology: Topology, name: str) -> dict[str, Any]:
    """The Serve ``user_config`` of one model: its config, with image/text limits (and where image
    URIs may point, ``limits.image_uris``) filled into ``options`` from ``limits:`` where the model
    does not set them."""
    cfg = topology.models[name]
    data = cfg.model_dump(mode="json", include=_USER_CONFIG_KEYS)
    if data.get("multiplex") is None:  # left out, so configs without checkpoints read as before
        data.pop("multiplex", None)
    limits = topology.limits
    data["options"] = {
        "max_text_chars": limits.max_text_chars,
        "max_image_bytes": limits.max_image_bytes,
        "max_image_pixels": limits.max_image_pixels,
        "max_image_aspect": limits.max_image_aspect,
        "image_uris": limits.image_uris.model_dump(mode="json"),
        **data["options"],
    }
    return data


def deployment_options(topology: Topology, name: str) -> dict[str, Any]:
    """Serve deployment options for one model (also the shape of a config file's ``deployments`` entry)."""
    cfg: ModelConfig = topology.models[name]
    opts: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "user_config": model_user_config(topology, name),
    }
    if cfg.autoscaling is not None:
        a = cfg.autoscaling
        opts["autoscaling_config"] = {
            "min_replicas": a.min_replicas,
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
        }
    else:
        opts["num_replicas"] = cfg.replicas
    return opts


def build_application(topology: Topology) -> Application:
    """The Serve application for an in-memory topology (see the module docstring for the layout)."""
    bound = {}
    for name in topology.models:
        opts = deployment_options(topology, name)
        dep = serve.deployment(ModelServer).options(**opts)
        mux = topology.models[name].multiplex
        # Config arrives via user_config -> reconfigure (no restart); the multiplex slot count is a
        # constructor argument, so changing it restarts the replicas (Serve's cache size is fixed).
        bound[name] = dep.bind(name, None, mux.max_models_per_replica) if mux else dep.bind(name)
    ingress = serve.deployment(Ingress).options(
        name=INGRESS_NAME, num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256,
    )
    return ingress.bind(bound)


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder: ``workers.app:build_app`` with ``args: {config: PATH}``.

    Args:
        args: ``{"config": "/path/to/topology.yaml"}``; without ``config``,
            ``$INFERTIDE_CONFIG`` or the packaged default topology.
    """
    # Serve calls this builder itself (serveConfigV2 import_path), so this is an edge: the one place here
    # that reads INFERTIDE_CONFIG.
    return build_application(load_topology((args or {}).get("config") or os.environ.get("INFERTIDE_CONFIG")))


def deploy(topology: Topology, blocking: bool = False) -> DeploymentHandle:
    """Run the application on the connected Ray cluster (``serve.run``) and return the ingress handle.

    Args:
        topology: the validated topology.
        blocking: block until interrupted (for a foreground ``serve`` command).
    """
    return serve.run(build_application(topology), name=topology.serve_app_name, route_prefix="/",
                     blocking=blocking)


def serve_deploy_config(topology: Topology, config_path: str) -> dict[str, Any]:
    """The Serve config-file dict (``serve deploy`` / KubeRay ``serveConfigV2``) for a topology.

    Args:
        topology: the validated topology (deployment settings are read from it).
        config_path: where the topology YAML lives on the cluster (e.g. the ConfigMap mount).
    """
    deployments = [deployment_options(topology, name) for name in topology.models]
    deployments.append({"name": INGRESS_NAME, "num_replicas": 1, "ray_actor_options": {"num_cpus": 0}})
    return {
        "applications": [
            {
                "name": topology.serve_app_name,
                "route_prefix": "/",
                "import_path": "workers.app:build_app",
                "args": {"config": config_path},
                "deployments": deployments,
            }
        ]
    }
