# Two commands on a fresh machine:  make demo   and   make test
# Both create/refresh .venv. torch==2.13.0 goes in FIRST: that CPU build lies on
# local disk; anything torch-dependent installed before it pulls a multi-GB CUDA build.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgecompress-installed

.PHONY: demo test setup clean bench fuzz system-deps arm64-board

$(STAMP): pyproject.toml runtime/pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e runtime -e '.[dev,export,compat,farm]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgecompress demo --json out/demo.json

# The deploy tests stand up real OpenSSH boards (sshd in network namespaces, nftables for packet loss);
# the report test renders report.html in headless Chromium.
# Installed here when missing and we are root; without them those tests are skipped.
system-deps:
	@test -x /usr/sbin/sshd -a -x /usr/sbin/nft -a -x /usr/sbin/ip -a -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server nftables iproute2 chromium)

# The emulated aarch64 board of device_tests/test_arm64.py: a Debian arm64 userland (debootstrap +
# qemu-user-static + binfmt) cached as a tarball in ~/.cache/edgecompress/boards (cold ~5-9 min, then a no-op).
# Exit status 77 = this machine cannot run it (not root, no binfmt_misc, no namespaces): the tests skip.
arm64-board:
	@device_tests/boards/arm64.sh build >/dev/null || [ $$? = 77 ]

test: $(STAMP) system-deps arm64-board
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/runtime_gather.py

# Coverage-guided fuzzing of the bundle loader (atheris / libFuzzer), 10 minutes; FUZZ_ARGS=--signed to
# require signatures. Results: benchmarks/results/fuzz_coverage.json, findings in benchmarks/results/fuzz_findings/.
fuzz: $(STAMP)
	$(PY) -m pip install -q atheris
	$(PY) benchmarks/fuzz_coverage.py --seconds $${FUZZ_SECONDS:-600} $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) out build *.egg-info runtime/*.egg-info
