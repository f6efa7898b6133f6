# detkit's commands. `make test` and `make demo` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.detkit-installed
PYTEST_ARGS ?=

.PHONY: setup test lint demo bench parity clean docs docs-serve

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

# The OpenVINO backend's tests (and mypy's view of it) need the `openvino` extra (OpenVINO + NNCF, ~40 s to
# install); the demo does not, so only `make test` and `make lint` install it.
OPENVINO_STAMP := $(VENV)/.detkit-openvino-installed
$(OPENVINO_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[openvino]'
	touch $@

# The OpenVINO tests run in a pytest process of their own. With OpenVINO's runtime loaded in the process, a Python
# signal handler running in the main thread faulted (SIGSEGV, si_code SI_KERNEL: not a signal sent by another
# process): torch's DataLoader SIGCHLD handler as torchrun's processes exited (tests/fixtures/runs.py now launches
# torchrun with SIGCHLD at its default: that case passes), and tests/engine/test_faults.py's in-process training
# stopped by SIGINT still dies. The state comes from the int8 test (NNCF's quantize): test_int8_detections_overlap_fp32
# + that test_faults test crash, the fp32 OpenVINO tests + it pass. Cause inside NNCF/OpenVINO not pinned down.
test: setup $(OPENVINO_STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) --ignore=tests/deploy/test_openvino.py --ignore=tests/deploy/test_int8_accuracy.py
	$(PY) -m pytest -q $(PYTEST_ARGS) tests/deploy/test_openvino.py tests/deploy/test_int8_accuracy.py

# ruff (lint + import order) and mypy (strict on the typed core), as configured in pyproject.toml; both come with
# the `dev` extra. `ruff format` is not enforced (see pyproject.toml).
lint: setup $(OPENVINO_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

demo: setup
	$(PY) tools/demo.py

# The documentation site (mkdocs.yml): the `docs` extra installs MkDocs, Material and mkdocstrings into .venv;
# `mkdocs build --strict` fails on a broken link, a page missing from the nav or a bad API reference.
DOCS_STAMP := $(VENV)/.detkit-docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# Comparison tools (ultralytics, faster-coco-eval) live only in the benchmark's own venv.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.detkit-installed
bench-setup: $(BENCH_STAMP)
$(BENCH_STAMP): setup.cfg pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q torch torchvision
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[onnx,openvino]' ultralytics faster-coco-eval onnxslim
	touch $@

bench: setup bench-setup
	$(BENCH_VENV)/bin/python benchmarks/run_all.py

# Assigner presets against the peers' own code: the peers (yolov5, yolox, mmdet/mmyolo) go into the
# benchmark venv only, without their compiled ops (yolox's sdist is installed with its C++ extension
# left out; mmcv-lite has none; the parity script stubs mmcv.ops, which the assigners never call).
PARITY_STAMP := $(BENCH_VENV)/.parity-installed
$(PARITY_STAMP): $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m pip install -q --no-deps yolov5==7.0.14 mmengine==0.10.7 mmdet==3.3.0 \
		mmyolo==0.6.0 mmcv-lite==2.0.1
	$(BENCH_VENV)/bin/python -m pip install -q loguru pandas seaborn 'setuptools<80' yapf addict termcolor \
		tabulate rich shapely six terminaltables
	rm -rf $(BENCH_VENV)/yolox-src && mkdir -p $(BENCH_VENV)/yolox-src
	$(BENCH_VENV)/bin/python -m pip download -q --no-deps --no-build-isolation --no-binary yolox \
		-d $(BENCH_VENV)/yolox-src yolox==0.3.0
	tar -xzf $(BENCH_VENV)/yolox-src/yolox-0.3.0.tar.gz -C $(BENCH_VENV)/yolox-src
	sed -i 's/ext_modules=get_ext_modules(),/ext_modules=[],/' $(BENCH_VENV)/yolox-src/yolox-0.3.0/setup.py
	$(BENCH_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation $(BENCH_VENV)/yolox-src/yolox-0.3.0
	touch $@

# Each script prints its figures and exits non-zero on a mismatch; all run, then the status is 1 if any failed.
PARITY_SCRIPTS := parity_assigners parity_ultralytics_weights parity_yolo11_arch parity_losses_ultralytics parity_losses_rtmdet parity_losses_yolox parity_musgd parity_train_loop_ultralytics parity_losses_yolov5
parity: setup $(PARITY_STAMP)
	status=0; for s in $(PARITY_SCRIPTS); do $(BENCH_VENV)/bin/python benchmarks/$$s.py || status=1; done; exit $$status

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache site
