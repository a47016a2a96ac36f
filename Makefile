# The two commands a new user needs (see README.md):
#   make demo   set everything up, then run the main job end to end on a generated corpus
#   make test   set everything up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
PYTEST_WORKERS ?= 2

.PHONY: venv test test-fast demo an4 clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile tests

# The developer's edit-test loop: everything but the tests marked `large` (whole jobs, trainings,
# multi-process runs). CI runs the full `make test`.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not large" tests

demo: $(STAMP)
	$(BIN)/dsnn-job --out $(DEMO_DIR)

# The same chain on real speech (AN4 training speakers; 10 % of the speakers held out as dev).
AN4 ?= ../shared/data/an4/train
an4: $(STAMP)
	$(BIN)/dsnn-job --corpus $(AN4) --config configs/an4.yaml --tokenizer_type char --speed_perturb 0.9,1.0,1.1 --out runs/an4

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
