# Two commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This machine installs torch from a local mirror; override TORCH_SPEC for other platforms.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=
# Two pytest workers (pytest-xdist; a file's tests stay on one worker so its module fixtures are built once):
# the suite is dominated by single-threaded script start-ups, so this halves it on 2 cores.
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest tests -q -ra -n $(PYTEST_WORKERS) --dist loadfile --durations=15

.PHONY: install browser demo test test-fast bench clean

$(STAMP): requirements.txt submodules/cpu_rasterizer/setup.py submodules/cpu_rasterizer/build_config.py $(wildcard submodules/cpu_rasterizer/csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation ./submodules/cpu_rasterizer \
		|| echo "warning: C++ CPU rasterizer did not build; it will be JIT-built on first use or fall back to the torch backend"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for tests/test_viewer_browser.py (skipped, saying why, when it is absent).
browser:
	@[ -x /usr/bin/chromium ] || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
		|| echo "warning: could not install chromium; the browser tests will be skipped"

demo: install
	$(PY) scripts/demo.py --out $(DEMO_DIR)

test: install browser
	$(PYTEST) $(PYTEST_ARGS)

test-fast: install
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/bench_rasterizer.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_viewer.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) submodules/cpu_rasterizer/build
