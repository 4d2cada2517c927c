# Two entry points for a fresh machine: `make demo` (train the default DCGAN on the built-in digits)
# and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch that this project is developed and tested with; override for CUDA builds.
TORCH_SPEC ?= torch==2.13.0
RUN ?= runs/digits-dcgan
# 1,000 steps keeps the demo (set-up included) under 5 minutes on 2 CPU cores; the dcgan recipe's
# own default, 1,500 steps, reaches a lower digits-FID (benchmarks/results/digits_dcgan.jsonl).
DEMO_STEPS ?= 1000

.PHONY: setup demo test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/ganforge train --data digits --model dcgan --steps $(DEMO_STEPS) --out $(RUN) --resume auto
	$(VENV)/bin/ganforge sample $(RUN) --n 64 --out $(RUN)/demo_samples.png
	@echo "Samples: $(RUN)/demo_samples.png  (run folder: $(RUN))"

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) benchmarks/bench_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
