# infertide: `make test` and `make demo` set up everything they need on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKOV := .cache/tools/checkov/bin/checkov
KUSTOMIZE := .cache/tools/bin/kustomize
KUSTOMIZE_VERSION := v5.7.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE ?= 1
export YOLO_OFFLINE ?= 1
export YOLO_AUTOINSTALL ?= 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0

.PHONY: install system-deps jars test test-bench test-unit test-fast demo bench bench-workers bench-engine bench-gpu schemas clean

# Python packages go in with uv (PyPI's `uv`, in a venv of its own): a clean clone's .venv (torch's CUDA
# wheels, about 3 GB) and checkov's took 125 + 27 s with pip and take 44 s with uv once its cache
# (~/.cache/uv) holds the wheels (README, "Two commands"). `make INSTALLER=pip ...` installs with pip
# as before. uv reads none of pip's settings, so the machine's find-links, constraint, index and CA
# (PIP_* variables or `pip config`) are handed to it. --compile-bytecode as pip does: these machines set
# PYTHONDONTWRITEBYTECODE, so without it every process (each Ray worker, replica and test worker) compiled
# torch, transformers and Ray from source on import, and pytest took 18.7-19.2 min instead of 13.
INSTALLER ?= uv
UV := .cache/tools/uv/bin/uv
# pip's settings, read once per make run: a clean install expands pip_setting eighteen times (was a pip call each).
PIP_CONFIG := .cache/tools/pip-config.txt
.PHONY: $(PIP_CONFIG)
$(PIP_CONFIG):
	@mkdir -p $(@D) && { $(PY) -m pip config list 2>/dev/null || true; } > $@
pip_setting = $(shell sed -n "s/^[^.]*\.$(1)='\(.*\)'$$/\1/p" $(PIP_CONFIG) | head -1)
UV_FLAGS = $(foreach f,$(call pip_setting,find-links),--find-links $(f)) \
	$(foreach c,$(call pip_setting,constraint),--constraint $(c)) \
	$(foreach i,$(call pip_setting,index-url),--index-url $(i)) \
	$(foreach i,$(call pip_setting,extra-index-url),--extra-index-url $(i))
UV_ENV = UV_NATIVE_TLS=1 $(if $(call pip_setting,cert),SSL_CERT_FILE=$(call pip_setting,cert))
# pip_install VENV, REQUIREMENTS: into an existing venv, with uv or pip.
pip_install = $(if $(filter pip,$(INSTALLER)),$(1)/bin/pip install -q $(2),$(UV_ENV) $(UV) pip install -q --compile-bytecode --python $(1)/bin/python $(UV_FLAGS) $(2))
INSTALLER_DEPS := $(if $(filter pip,$(INSTALLER)),,$(UV) $(PIP_CONFIG))

$(UV):
	$(PY) -m venv .cache/tools/uv
	.cache/tools/uv/bin/pip install -q "uv>=0.5"

$(STAMP): pyproject.toml | $(INSTALLER_DEPS)
	$(PY) -m venv $(VENV)
	$(call pip_install,$(VENV),--upgrade pip)
	$(call pip_install,$(VENV),-e ".[test]")
	touch $@

# Debian tools the tests use: kcat (an independent Kafka client), chromium (dashboard test),
# Java + Maven (the local Apache Kafka broker).
system-deps:
	@missing=""; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

# checkov pins networkx<2.7, which scikit-image cannot share: it gets a venv of its own.
$(CHECKOV): | $(INSTALLER_DEPS)
	$(PY) -m venv .cache/tools/checkov
	$(call pip_install,.cache/tools/checkov,checkov)

jars: $(STAMP)
	$(BIN)/infertide kafka fetch

install: $(STAMP) system-deps jars $(CHECKOV) $(KUSTOMIZE) k8s-tools k8s-crds

# Two pytest-xdist workers (tests/conftest.py's scheduler: a module, or all of unit / k8s, runs whole on one
# worker, in collection order): most e2e and fault tests wait on brokers, sessions and restarts, not on the CPU.
test: install
	$(BIN)/python -m pytest tests -m "not bench" -n 2 --dist loadscope --no-loadscope-reorder

# The benchmarks' own code paths on CPU (the GPU bench's --quick run): minutes, so not in `make test`.
test-bench: install
	$(BIN)/python -m pytest tests -m bench

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

schemas: $(STAMP)
	$(BIN)/python -m schemas.generate

demo: install
	$(BIN)/infertide demo

bench: install
	$(BIN)/infertide bench

bench-workers: install
	$(BIN)/python -m infertide.bench.workers

# The route engine alone (in-process echo, no Ray) on a local broker, both guarantees.
bench-engine: install
	$(BIN)/python -m infertide.bench.engine

# On a GPU machine: real-size models (random weights), end to end and per model; the report goes to docs/gpu-bench.md.
bench-gpu: install
	$(BIN)/python -m infertide.bench.gpu --out docs/gpu-bench.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis artifacts

# kustomize renders k8s/ in tests/k8s; built from the Go module proxy into .cache/tools/bin.
$(KUSTOMIZE):
	GOBIN=$(CURDIR)/.cache/tools/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

.PHONY: kustomize k8s-gen
kustomize: $(KUSTOMIZE)

# Regenerates the manifests that follow the topology (KafkaTopics, serveConfigV2, ConfigMap copy).
k8s-gen: $(STAMP)
	$(BIN)/python -m infertide.k8s.generate

# tests/k8s's local control plane and operators (k8s/README.md), built once from the Go module proxy into
# .cache/tools/bin: kube-apiserver and kubectl, etcd, the KubeRay and KEDA operators, controller-gen.
# Each tools module under k8s/tools pins its versions (go.mod, go.sum). Cold: about 35 min on 2 shared
# cores (KEDA 21 of them); with the Go build cache warm a clean clone needs about 20 s (k8s-tools + k8s-crds: k8s/README.md).
K8S_BIN := .cache/tools/bin
K8S_GO_BUILD ?= nice -n 10 go build -p 2 -trimpath
KUBE_VERSION := v1.37.2
KUBE_LDFLAGS := -s -w $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,-X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=37 -X $(p).gitTreeState=clean)
K8S_TOOLS := $(K8S_BIN)/kube-apiserver $(K8S_BIN)/kubectl $(K8S_BIN)/etcd $(K8S_BIN)/kuberay-operator $(K8S_BIN)/keda-operator $(K8S_BIN)/controller-gen
K8S_CRDS := .cache/crds/.stamp

.PHONY: k8s-tools k8s-crds k8s-control-plane test-k8s
k8s-tools: $(K8S_TOOLS)

$(K8S_BIN)/kube-apiserver $(K8S_BIN)/kubectl &: k8s/tools/kube/go.mod k8s/tools/kube/go.sum
	cd k8s/tools/kube && $(K8S_GO_BUILD) -ldflags "$(KUBE_LDFLAGS)" -o $(CURDIR)/$(K8S_BIN)/ k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl

# The others through their go.mod `tool` directives: `go tool -n` builds a tool once and keeps the
# executable in the Go build cache (Go 1.24+), so a clean clone copies it instead of relinking it
# (KEDA's 170 MB alone takes about a minute to link here). kube-apiserver needs -X ldflags, which
# `go tool` cannot take, so it is built and linked above.
GO_TOOL = @mkdir -p $(K8S_BIN) && cd k8s/tools/$(1) && exe=$$(nice -n 10 go tool -n $(2)) && cp "$$exe" $(CURDIR)/$@

$(K8S_BIN)/etcd: k8s/tools/etcd/go.mod k8s/tools/etcd/go.sum
	$(call GO_TOOL,etcd,server)

$(K8S_BIN)/kuberay-operator: k8s/tools/kuberay/go.mod k8s/tools/kuberay/go.sum
	$(call GO_TOOL,kuberay,ray-operator)

$(K8S_BIN)/keda-operator: k8s/tools/keda/go.mod k8s/tools/keda/go.sum
	$(call GO_TOOL,keda,operator)

$(K8S_BIN)/controller-gen: k8s/tools/crdgen/go.mod k8s/tools/crdgen/go.sum
	$(call GO_TOOL,crdgen,controller-gen)

# The operators' CRDs (KubeRay, KEDA, Strimzi KafkaTopic, Prometheus Operator PodMonitor), checked against k8s/tools/crds.sha256.
$(K8S_CRDS): $(K8S_BIN)/controller-gen k8s/tools/crds.sha256 k8s/tools/strimzi/pom.xml infertide/k8s/crds.py | $(STAMP)
	$(BIN)/python -m infertide.k8s.crds
	touch $@
k8s-crds: $(K8S_CRDS)

# A control plane for you (prints KUBECONFIG; Ctrl-C stops it).
k8s-control-plane: k8s-tools k8s-crds
	$(BIN)/infertide k8s control-plane

test-k8s: k8s-tools k8s-crds $(KUSTOMIZE) $(CHECKOV)
	$(BIN)/python -m pytest tests/k8s
