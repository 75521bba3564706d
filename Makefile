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

.PHONY: install system-deps jars test test-unit test-fast demo bench bench-workers bench-gpu schemas clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
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
$(CHECKOV):
	$(PY) -m venv .cache/tools/checkov
	.cache/tools/checkov/bin/pip install -q checkov

jars: $(STAMP)
	$(BIN)/infertide kafka fetch

install: $(STAMP) system-deps jars $(CHECKOV) $(KUSTOMIZE)

test: install
	$(BIN)/python -m pytest tests

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
