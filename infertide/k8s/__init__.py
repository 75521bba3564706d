"""Kubernetes: the generator of the manifests under ``k8s/`` that must follow the topology (:mod:`.generate`),
the operators' CRDs (:mod:`.crds`), and a local control plane with the KubeRay and KEDA operators to apply
the manifests to (:mod:`.controlplane`, :mod:`.operators`)."""
