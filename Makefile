# make demo: set up and run the main job.  make test: set up and run the tests.
# make fuzz: 100,000 mutated weight files through the loader (SEED=0; 2-4 minutes).
# make mutation: plant each plausible bug of tests/mutations.py, show the fast tests fail.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
SEED ?= 0

.PHONY: demo test test-fast fuzz mutation clean

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
	$(BIN)/python -m pytest -n 2 --dist loadfile -q tests

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow" tests

fuzz: $(VENV)/.runtime
	$(BIN)/python tests/fuzz_weights.py --cases 100000 --seed $(SEED)

mutation: $(VENV)/.dev
	$(BIN)/python tests/mutations.py

clean:
	rm -rf $(VENV)
