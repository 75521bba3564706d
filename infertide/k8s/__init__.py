"""Kubernetes: the generator of the manifests under ``k8s/`` that must follow the topology (:mod:`.generate`)."""
