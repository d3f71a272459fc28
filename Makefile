# The two commands of the README are `make run` and `make test`.
# Everything installs into the project's own virtual environment: a stock Debian or
# Ubuntu Python refuses system-wide pip installs (PEP 668).
BASE_PYTHON ?= python3
VENV ?= .venv
PYTHON = $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The default native build of llama.cpp crashes on the first token on AMX Xeons;
# the portable build works everywhere. pip's wheel cache ignores CMAKE_ARGS, so
# the build must bypass it, or a crashing cached wheel comes back.
LLAMA_CMAKE_ARGS = -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# The database of the second test run (the test runner creates its own test_chat_<pid>
# database there and drops it afterwards).
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: install run test lint lint-py lint-js js-deps test-sqlite test-postgres browser bench bench-quick collectstatic

# The portable build is kept as a wheel outside the checkout, one per version, flags and
# Python, so that a second install (a fresh clone, CI on the same machine) skips the
# ten-minute compile. The key holds the flags, so a wheel built otherwise is never used.
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' requirements.txt)
LLAMA_KEY := $(shell echo '$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)' "$$($(BASE_PYTHON) -c 'import sys; print(sys.implementation.cache_tag)')" | md5sum | cut -c1-12)
LLAMA_WHEELS ?= $(HOME)/.cache/chat-llama-wheels/$(LLAMA_KEY)

$(PYTHON):
	$(BASE_PYTHON) -m venv $(VENV)

install: $(PYTHON)
	@ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PYTHON) -m pip wheel --no-cache-dir --no-deps -w $(LLAMA_WHEELS) "llama-cpp-python==$(LLAMA_VERSION)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PYTHON) -m pip install --no-cache-dir --no-deps --find-links $(LLAMA_WHEELS) -r requirements.txt
	$(PYTHON) -c "import llama_cpp"

run: install
	$(PYTHON) manage.py migrate --noinput
	$(PYTHON) -m daphne -b $(HOST) -p $(PORT) config.asgi:application

browser:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y --no-install-recommends chromium)

# The whole suite on SQLite, then once more on PostgreSQL. Browser and live-server
# tests (markers browser, slow) do not depend on the database engine and run only on
# SQLite; the PostgreSQL run fails loudly when the server cannot be reached.
test: lint test-sqlite test-postgres

# Python (ruff) and the page's JavaScript (ESLint): both pinned, configured under .ci/.
lint: lint-py lint-js

lint-py: install
	$(VENV)/bin/ruff check --config .ci/ruff.toml .

test-sqlite: install browser js-deps
	$(PYTHON) -m pytest

test-postgres: install
	@$(PYTHON) -c "import sys, psycopg; from dj_database_url import parse; \
	db = parse(sys.argv[1]); \
	psycopg.connect(host=db['HOST'], port=db['PORT'] or 5432, user=db['USER'], password=db['PASSWORD'], \
	dbname=db['NAME'], connect_timeout=5).close()" "$(POSTGRES_URL)" \
	|| { echo "make test-postgres: PostgreSQL is unreachable at $(POSTGRES_URL) (set POSTGRES_URL)" >&2; exit 1; }
	DATABASE_URL="$(POSTGRES_URL)" $(PYTHON) -m pytest -m "not browser and not slow"

# The full run, with the py-spy profile of the 200-conversation case (issue 14).
bench: install
	$(PYTHON) -m bench --profile

bench-quick: install
	$(PYTHON) -m bench --quick

collectstatic:
	$(PYTHON) manage.py collectstatic --noinput

# ESLint over the chat page's scripts (static/chat; static/vendor is not ours), with the
# exact versions pinned in .ci/js/package-lock.json. Needs Node.js 20.19+ and npm.
JS_LINT = .ci/js
# The pinned npm packages: ESLint for lint-js, axe-core for the browser suite.
js-deps:
	@command -v npm >/dev/null || { echo "make js-deps: npm is missing (install Node.js 20.19 or later)" >&2; exit 1; }
	npm ci --prefix $(JS_LINT) --no-audit --no-fund

lint-js: js-deps
	$(JS_LINT)/node_modules/.bin/eslint --config $(JS_LINT)/eslint.config.js --max-warnings 0 static/chat
