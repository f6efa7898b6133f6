# detkit's commands. `make test` and `make demo` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.detkit-installed
PYTEST_ARGS ?=

.PHONY: setup test demo bench clean

setup: $(STAMP)

# Re-installs only when setup.cfg / pyproject.toml change (the stamp is newer otherwise),
# so a second `make setup` is a no-op. torch and torchvision are installed in one pip call
# so the resolver picks a matching pair (a mismatched pair fails at `import torchvision`).
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)"
	touch $@

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(PY) tools/demo.py

# Comparison tools (ultralytics, faster-coco-eval) live only in the benchmark's own venv.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.detkit-installed
bench-setup: $(BENCH_STAMP)
$(BENCH_STAMP): setup.cfg pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q torch torchvision
	$(BENCH_VENV)/bin/python -m pip install -q -e . ultralytics faster-coco-eval
	touch $@

bench: setup bench-setup
	$(BENCH_VENV)/bin/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache
