# make demo: set up and run the main job.  make test: set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(VENV)/.runtime $@

demo: $(VENV)/.runtime
	$(BIN)/python alexnet.py --graph-dir logs/graph
	@if [ -f weights/bvlc_alexnet.npy ]; then $(BIN)/python validate_alexnet_on_imagenet.py; \
	else echo "No weights/bvlc_alexnet.npy: run 'python download.py weights' to classify images/ with the real AlexNet."; \
	  $(BIN)/python validate_alexnet_on_imagenet.py --weights none; fi

test: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2 -q tests

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2 -q -m "not slow" tests

clean:
	rm -rf $(VENV)
