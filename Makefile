# The two commands of the README are `make run` and `make test`.
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
# The default native build of llama.cpp crashes on the first token on AMX Xeons;
# the portable build works everywhere. pip's wheel cache ignores CMAKE_ARGS, so
# the build must bypass it, or a crashing cached wheel comes back.
LLAMA_CMAKE_ARGS = -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install run test test-postgres browser bench bench-quick collectstatic

install:
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PYTHON) -m pip install --no-cache-dir --no-deps -r requirements.txt
	$(PYTHON) -c "import llama_cpp"

run: install
	$(PYTHON) manage.py migrate --noinput
	$(PYTHON) -m daphne -b $(HOST) -p $(PORT) config.asgi:application

browser:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y --no-install-recommends chromium)

test: install browser
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) -m bench

bench-quick: install
	$(PYTHON) -m bench --quick

collectstatic:
	$(PYTHON) manage.py collectstatic --noinput
