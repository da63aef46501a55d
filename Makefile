# Two commands: `make test` and `make train` (see README.md). Both create .venv
# in the repository on first use and install the package editable, built
# against the jaxlib in that venv (--no-build-isolation).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hypereca-installed
# pytest-xdist workers: two fill a 2-core machine (compiles are single-threaded);
# TEST_WORKERS=0 runs in one process. worksteal: an idle worker takes queued
# tests from the other, so a minute-long test near the end does not run alone.
TEST_WORKERS ?= 2
NATIVE := CMakeLists.txt pyproject.toml $(shell find ffi cmake -type f 2>/dev/null)
# Without a GPU nothing loads the CUDA module (built when nvcc is found): it is
# skipped (the build takes 28 s instead of 101 s on 2 cores), or with
# CUDA_CHECK=1 compiled as sm_90 PTX only, a compile check (73 s). A CMAKE_ARGS
# of your own comes after these, so its settings win.
NO_GPU_CUDA_ARGS := $(shell nvidia-smi -L >/dev/null 2>&1 || echo \
	$(if $(CUDA_CHECK),-DCMAKE_CUDA_ARCHITECTURES=90-virtual,-DHYPERECA_CUDA=OFF))

.PHONY: test train bench clean

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25

train: $(STAMP)
	@if [ -f models/train.py ]; then $(PY) -m models.train $(ARGS); \
	else echo "make train: the train command (models/train.py) is not written yet; see README.md"; exit 2; fi

bench: $(STAMP)
	$(PY) -m experiments.bench_ops --quick

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) $(NATIVE)
	$(PY) -m pip install -q "scikit-build-core>=0.10" "nanobind>=2.0" cmake ninja \
		"jax>=0.10.2,<0.12" "jaxlib>=0.10.2,<0.12"
	CMAKE_ARGS="$(NO_GPU_CUDA_ARGS) $$CMAKE_ARGS" $(PY) -m pip install -q --no-build-isolation -e ".[test]"
	@touch $@

clean:
	rm -rf build $(VENV)
