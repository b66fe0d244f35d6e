# lowbit: `make demo` runs the main job, `make test` the tests. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
# Extras to install: every tool lowbit drives, and the tests (CI adds onnx-ref,brevitas).
# A user who only compiles and runs models needs none: pip install lowbit.
EXTRAS ?= all,test

.PHONY: demo test test-fast bench clean-cache

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lowbit demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -m "not cocotb and not synth"

bench: $(STAMP)
	$(BIN)/python -m lowbit.bench

clean-cache:
	rm -rf .cache
