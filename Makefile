# The README's two commands. Each sets up .venv on first use (torch first, pinned to the CPU wheel
# these machines carry; any other order lets pip pull a multi-GB CUDA build), then reuses it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=
ARGS ?=

.PHONY: setup run rehearse test lint bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The main job: record demos → cache S² features → train the BC policy → evaluate at the 16 cube positions,
# with the embedded default of configs/pipeline.yaml (sized for 2 CPU cores). Re-running resumes.
run: setup
	$(PY) scripts/run_pipeline.py $(ARGS)

# The same pipeline on the Franka arm in the franky-sim rehearsal (configs/rehearse.yaml, 2 CPU cores): demos recorded
# through franky, evaluation at the 16 positions × 3 and 32 held-out ones with the 10 Hz loop's timing table.
rehearse: setup
	$(PY) scripts/run_pipeline.py --config-name rehearse $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The full encoder benchmark (ViT-B, ViT-B-S², ViT-L; fp32 and bf16) on the default device.
bench: setup
	$(PY) benchmarks/bench_encoder.py

clean-venv:
	rm -rf $(VENV)
