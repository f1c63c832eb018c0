# `make demo` and `make test` each set up their own virtual environment on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint world bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/swapbench train && $(BIN)/swapbench eval

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q

# The report tests render HTML in headless Chromium (Debian package `chromium`); installed here when
# missing and we are root, otherwise those tests are skipped with the reason.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && apt-get install -y -q chromium; \
	else echo "chromium not installed: browser rendering tests will be skipped (sudo apt-get install chromium)"; fi

lint: $(STAMP)
	$(BIN)/ruff check swapbench tests benchmarks

world: $(STAMP)
	$(BIN)/swapbench world build

clean:
	rm -rf $(VENV) runs build dist
