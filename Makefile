# ganbench — the two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/sngan.yaml
ARGS   ?=
# make run: auto = configs/sngan.yaml as is with a GPU, its CPU profile without one; full = as is
PROFILE ?= auto
# torch 2.14.1 / torchvision 0.29.1 are the newest releases this project is tested with.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup data run test test-shipped test-slow lint bench clean

setup: $(BIN)/ganbench data

$(BIN)/ganbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e '.[dev]'
	touch $@

# Fashion-MNIST: Debian's dataset-fashion-mnist when apt is available and we are root;
# otherwise ganbench falls back to torchvision's download on first use.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ] || [ -n "$$GANBENCH_DATA" ]; then \
	  echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)); \
	else \
	  echo "Fashion-MNIST not installed; ganbench will try torchvision's download into ~/.cache/ganbench"; \
	fi

run: setup
	$(BIN)/ganbench run --profile $(PROFILE) --config $(CONFIG) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

# every file in configs/ and every sweep's base config, exactly as shipped, for one G iteration
test-shipped: setup
	$(BIN)/python -m pytest -q -m slow tests/test_shipped.py $(ARGS)

test-slow: setup
	$(BIN)/python -m pytest -q -m slow $(ARGS)

lint: setup
	$(BIN)/ruff check ganbench tests scripts

bench: setup
	$(BIN)/ganbench bench --config $(CONFIG) $(ARGS)

clean:
	rm -rf runs .pytest_cache
