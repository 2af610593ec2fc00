# Every day-to-day command of sesame-pi. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
ARCH ?= arm64
INVENTORY ?= ansible/inventory/example.yml
LIMIT ?= all
ANSIBLE_ARGS ?=
# Absolute, and with ~ expanded (make's wildcard does; zsh leaves INVENTORY=~/x to make as it is).
INVENTORY_PATH = $(abspath $(or $(wildcard $(INVENTORY)),$(INVENTORY)))

.DEFAULT_GOAL := help
.PHONY: help install install-pi test lint demo run bench test-faults container container-test \
        ansible-test image image-test boot-test deploy collect-logs ci clean

help: ## List the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV)/.installed: app/pyproject.toml app/scripts/install-system-deps.sh
	bash app/scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e 'app[dev,bench,lint]'
	touch $@

install: $(VENV)/.installed ## Install system packages and the app (editable) into .venv

# On the Pi itself, to run the app outside its container: no test or lint tools (a Pi Zero has
# 512 MB, and hadolint has no armv7 build), lgpio for the GPIO button (PYPI=1: lgpio builds its C
# library itself; swig makes its binding).
install-pi: ## On a Pi: only what the app needs to run, with the GPIO pin factory, into .venv
	bash app/scripts/install-system-deps.sh python3-venv python3-dev gcc swig portaudio19-dev \
	  libasound2-plugins alsa-utils libspeexdsp1
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PYPI=1 $(PY) -m pip install -q -c app/requirements.lock -e 'app[pi]'

test: install ## Lint, then unit, integration and benchmark-instrument tests (fast; no Docker, no root file systems)
	$(MAKE) --no-print-directory lint
	$(PYTEST) tests/unit tests/integration tests/bench/test_bench_tools.py

lint: install ## ruff, mypy, shellcheck, yamllint, ansible-lint, hadolint
	$(VENV)/bin/ruff check app tests
	$(VENV)/bin/ruff format --check app tests
	$(VENV)/bin/mypy --config-file app/pyproject.toml app/src
	bash tests/lint-files.sh

demo: install ## A whole call with no token and no hardware (stand-in server, virtual audio)
	$(PY) tests/demo.py

bench: install ## Benchmarks: latency, CPU, memory, press-to-live, reconnect, underruns, echo
	$(PY) tests/bench/run.py
	$(PY) tests/bench/echo_live.py
	$(PY) tests/bench/echo_offline.py --plot bench-out/echo-offline.png
	$(PY) tests/bench/gc_pause.py

test-faults: install ## Network, protocol, token, device faults and a compressed soak (needs root)
	$(PYTEST) tests/faults

container: ## Build the app image (linux/arm64; ARCH=armv7 for 32-bit; as root)
	ARCH=$(ARCH) bash app/container/build.sh

container-test: install ## Build the image under qemu and place a whole call inside it
	ARCH=$(ARCH) $(PYTEST) -s tests/system/test_container.py

ansible-test: install ## Lint the playbooks and apply them twice to an arm64 root file system
	$(PYTEST) -s tests/system/test_ansible.py

image: ## Build the SD card image with pi-gen (needs internet and Docker; as root)
	bash image/build.sh

image-test: install ## Run the image's custom stage and first boot against an arm64 root file system
	$(PYTEST) -s tests/system/test_image.py

boot-test: install ## Boot the provisioned card under qemu (Cortex-A53, 512 MB): first boot, a call, a second boot
	$(PYTEST) -s tests/system/test_boot.py

# The fleet's controller needs Ansible alone (a Mac too), not the app, its apt packages or the
# test tools: .venv's ansible-playbook after `make install`, else the one on the PATH.
ANSIBLE_PLAYBOOK = $(firstword $(abspath $(wildcard $(VENV)/bin/ansible-playbook)) $(shell command -v ansible-playbook))
define fleet_play
	@test -e "$(INVENTORY_PATH)" || { echo "make: no inventory at $(INVENTORY_PATH) (INVENTORY=path)" >&2; exit 2; }
	@test -n "$(ANSIBLE_PLAYBOOK)" || { echo "make: no ansible-playbook: make install, or pip install 'ansible-core>=2.16'" >&2; exit 2; }
	cd ansible && $(ANSIBLE_PLAYBOOK) -i $(INVENTORY_PATH) --limit '$(LIMIT)' $(ANSIBLE_ARGS) $(1)
endef

deploy: ## Provision a fleet: make deploy INVENTORY=path [LIMIT=group] [ANSIBLE_ARGS='--vault-password-file F']
	$(call fleet_play,site.yml)

collect-logs: ## Fetch the JSON event logs from the fleet into ./fleet-logs
	$(call fleet_play,collect-logs.yml)

ci: ## What CI runs
	bash .ci/run

clean: ## Remove the virtual environment and build output
	rm -rf $(VENV) build dist app/build app/src/*.egg-info
