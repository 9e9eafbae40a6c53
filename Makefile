# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# TensorFlow's C++ logs off but for fatal errors, as `nalu` sets them itself when the variable is
# unset: at 2, a run that loads XLA's cached compilations (nalu_cli/xla_cache.py) printed six
# "E0000 ... cpu_aot_loader" lines in `make demo` (LLVM tuning flags it reads as missing CPU
# features; the cache is per CPU model), which a user reads as a failure.
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[onnx,plot,ray,test,tflite]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nalu train --op mul --out runs/mul --overwrite
	$(BIN)/nalu eval runs/mul
	$(BIN)/nalu extrapolate runs/mul/saved_model
	$(BIN)/nalu inspect runs/mul
	$(BIN)/nalu export runs/mul --out exported/mul --format keras --format tflite --format onnx --overwrite

# The suite on every core (at most 4 workers: each imports TensorFlow, about 0.6 GB).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf runs exported $(VENV)
