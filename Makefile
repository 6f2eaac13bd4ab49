# make demo: set up and run the main job.  make test: set up and run the tests.
# make test-tf1: the tests again on the course's TensorFlow 1.15 (Python 3.7); test-tf1-fast
# without the slow end-to-end runs, as CI runs it.
# make fuzz: 100,000 mutated weight files through the loader (SEED=0; 2-4 minutes).
# make mutation: plant each plausible bug of tests/mutations.py, show the fast tests fail.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
SEED ?= 0
PYTEST_OPTIONS = -n 2 --dist loadfile -q

.PHONY: demo test test-fast test-tf1 test-tf1-fast test-tf1-run test-tf1-fast-run fuzz mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-cache-dir --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-cache-dir --disable-pip-version-check -r requirements-dev.txt
	touch $(VENV)/.runtime $@

# Without weights/bvlc_alexnet.npz the demo trains from random weights, and says so.
DEMO_WEIGHTS = $(if $(wildcard weights/bvlc_alexnet.npz),,--weights none)

demo: $(VENV)/.runtime
	@echo "== Demo: fine-tune AlexNet's fc6-fc8 on the 5 photos in data/sample (a smoke run of the pipeline) =="
	$(BIN)/python finetune.py --data data/sample --val-fraction 0.4 --epochs 4 --batch-size 4 \
	    --learning-rate 0.001 --train-layers fc6,fc7,fc8 --keep-checkpoints 1 --summary-every 1 \
	    --run logs/demo-$$(date +%Y%m%d-%H%M%S) $(DEMO_WEIGHTS)
	@echo "== AlexNet alone: its layer table, and its graph in logs/graph for TensorBoard =="
	rm -rf logs/graph
	$(BIN)/python alexnet.py --graph-dir logs/graph
	@echo "== Next: .venv/bin/tensorboard --logdir logs (tab Graphs: run demo-<time>/train is the"
	@echo "   training graph, run graph AlexNet alone), and the README's homework commands =="

test: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_OPTIONS) tests

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_OPTIONS) -m "not slow" tests

# TensorFlow 1.15 has wheels for Python 3.5-3.7 only. PYTHON37 if given, else python3.7
# if it runs (a pyenv shim may not), else pyenv's newest 3.7.x. Without one, test-tf1 says
# so in one line and succeeds, so that CI can call it on any machine.
VENV_TF1 ?= .venv-tf1
FIND_PYTHON37 = python3.7 -c 'import sys; print(sys.executable)' 2>/dev/null || { \
    v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.7\.[0-9]+$$' | sort -t. -k3,3n | tail -n 1); \
    [ -z "$$v" ] || echo "$$(pyenv prefix "$$v")/bin/python3.7"; }
PYTHON37 ?= $(shell $(FIND_PYTHON37))

test-tf1 test-tf1-fast:
	@if [ -z "$(PYTHON37)" ]; then \
	    echo "make $@: skipped: no Python 3.7 here for TensorFlow 1.15 (install one: pyenv install 3.7.16)"; \
	else \
	    $(MAKE) --no-print-directory $@-run PYTHON37="$(PYTHON37)"; \
	fi

$(VENV_TF1)/.dev: requirements-tf1.txt
	$(PYTHON37) -m venv $(VENV_TF1)
	$(VENV_TF1)/bin/python -m pip install --quiet --no-cache-dir --disable-pip-version-check -r requirements-tf1.txt
	touch $@

test-tf1-run: $(VENV_TF1)/.dev
	$(VENV_TF1)/bin/python -m pytest $(PYTEST_OPTIONS) tests

test-tf1-fast-run: $(VENV_TF1)/.dev
	$(VENV_TF1)/bin/python -m pytest $(PYTEST_OPTIONS) -m "not slow" tests

fuzz: $(VENV)/.runtime
	$(BIN)/python tests/fuzz_weights.py --cases 100000 --seed $(SEED)

mutation: $(VENV)/.dev
	$(BIN)/python tests/mutations.py

clean:
	rm -rf $(VENV) $(VENV_TF1)
