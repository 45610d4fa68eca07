# The README's two commands: `make demo` (the main job) and `make test` (the suite).
# Both create .venv in the checkout and install what they need on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install demo test bench lint clean

# What the demo needs: the library, the model stack and the pipeline (Prefect, MLflow).
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk, never a CUDA download.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[ml,pipeline]'
	# The checkout's bytecode now: an editable install leaves it to the first run, and where
	# PYTHONDONTWRITEBYTECODE is set, to every run (~80 ms of each `restrl verify`).
	$(BIN)/python -m compileall -q restrl flows tasks >/dev/null
	touch $(STAMP)

# The test tools on top.
$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[ml,pipeline,dev]'
	# DeepSpeed from its source package, built against the CPU torch above (no CUDA download):
	# the 2-process ZeRO-2/3 tests run on its CPU accelerator.
	$(BIN)/pip install -q --no-build-isolation deepspeed==0.19.8
	# Its CPU collectives op, compiled once here (~45 s) rather than by the first 2-process test.
	$(BIN)/python -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; \
		B().load(verbose=False)" >/dev/null 2>&1 \
		|| echo "note: DeepSpeed's CPU collectives op not prebuilt; the first ZeRO test builds it"
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/restrl demo

test: $(DEV_STAMP)
	$(BIN)/python -m pytest

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/verify_humaneval.py
	$(BIN)/python benchmarks/sandbox_profile.py
	$(BIN)/python benchmarks/verify_ds1000.py
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/mcts_batching.py
	$(BIN)/python benchmarks/stage1_cache.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check restrl tasks flows tests benchmarks

clean:
	rm -rf $(VENV) .restrl
