# One-command entry points (see README.md).
#   make run     set up, then the main job (quick preset): teacher, CE/KD/DKD students, both frameworks, table
#   make test    set up, then the test suite (what .ci/run calls)
#   make test-fast  the suite without the tests marked slow (no stage processes): the edit loop
#   make setup   virtual environment with pinned packages + Jittor's offline/oneDNN setup (idempotent)
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup run test test-fast smoke data clean
setup: $(VENV)/.installed
	@$(PY) setup_jittor.py

$(VENV)/.installed: requirements.txt
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

run: setup
	$(PY) run_all.py $(ARGS)

test: setup
	$(PY) -m pytest -q -n 2 --no-loadscope-reorder --durations=15 tests

test-fast: setup
	$(PY) -m pytest -q -n 2 --no-loadscope-reorder -m "not slow" tests

# real CIFAR-10 smoke (CI runs it when ../shared/data/build_cifar10.py exists)
smoke: setup
	$(PY) tests/real_data_smoke.py

clean:
	rm -rf log ckpt
