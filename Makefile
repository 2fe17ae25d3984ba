# offload — every target does its own set-up: the venv, the package, a server.
SHELL       := /bin/bash
PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
TESTBED_DIR ?= .testbed
UP_ARGS     ?=
PYTEST_ARGS ?=
# the server: empty (the host's MariaDB), mariadb, mariadb-10.11, mariadb-11.8, mysql, mysql-9.7;
# one the host lacks is provided from Debian (docs/testbed.md).  Every testbed of a target
# (its pytest run, bench, lag) runs it: OFFLOAD_FLAVOR carries it.
FLAVOR      ?=
# native | compose (empty: compose where a Docker engine answers and no FLAVOR is named)
BACKEND     ?=
ifneq ($(FLAVOR),)
export OFFLOAD_FLAVOR := $(FLAVOR)
endif
# what makes the testbed's nova database: empty/offload (offload's own tables, fast) or nova
# (Nova 34's own migrations, `nova-manage db sync`, from a side environment `make nova-env`
# builds once and caches outside the clone; native backend).  Every testbed of a target
# (`make up`, its pytest run) gets it: OFFLOAD_SCHEMA carries it; `make test SCHEMA=nova`
# also runs tests/nova_schema, which is skipped otherwise.
SCHEMA      ?=
ifneq ($(SCHEMA),)
export OFFLOAD_SCHEMA := $(SCHEMA)
endif
NOVA_ENV    := $(if $(filter nova,$(SCHEMA)),nova-env)
# on (empty: the default) | off: the testbeds' servers (native and compose) require verified TLS
# (docs/testbed.md); OFFLOAD_TLS carries it to every testbed of a target
TLS         ?=
ifneq ($(TLS),)
export OFFLOAD_TLS := $(TLS)
endif

.DEFAULT_GOAL := help
.PHONY: help up down status logs test soak lint clean distclean server venv images test-compose \
	nova-env

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# lab: matplotlib (make lag, make bench); compose: the Docker SDK (make up, test-compose,
	@# images); test: the suite's tools (it exercises both)
	$(BIN)/python -m pip install --quiet -e '.[lab,compose,test]'
	@touch $@

venv: $(BIN)/.installed ## create .venv with offload, its extras (lab, compose) and its test tools

server: venv ## make sure a server of FLAVOR is at hand (installs or provides it when it can)
	@OFFLOAD=$(BIN)/offload bash mysql/ensure-server.sh $(FLAVOR)

nova-env: venv ## Nova 34 + PyMySQL in a side virtualenv (SCHEMA=nova needs it; cached, never in .venv)
	$(BIN)/python -m offload.testbed.nova

OFFLOAD     := $(BIN)/offload --config $(TESTBED_DIR)/offload.conf
SEED_ARGS   ?= --instances 1000 --hosts 2

up: venv $(NOVA_ENV) ## start primary + GTID replica + the compute service (FLAVOR=mysql, SCHEMA=nova, UP_ARGS="--replicas 2")
	@# compose needs no local server; a named FLAVOR (or SCHEMA=nova) means native unless BACKEND=compose
	@if [ "$(BACKEND)" != compose ] && { [ -n "$(FLAVOR)$(BACKEND)$(NOVA_ENV)" ] || ! docker info >/dev/null 2>&1; }; \
	  then OFFLOAD=$(BIN)/offload bash mysql/ensure-server.sh $(FLAVOR); fi
	$(BIN)/offload testbed up --dir $(TESTBED_DIR)$(if $(BACKEND), --backend $(BACKEND)) $(UP_ARGS)
	$(OFFLOAD) db sync
	$(OFFLOAD) seed --if-empty $(SEED_ARGS)
	$(OFFLOAD) service start

down: venv ## stop the compute service and every server `make up` started
	@if [ -f $(TESTBED_DIR)/offload.conf ]; then $(OFFLOAD) service stop; fi
	$(BIN)/offload testbed down --dir $(TESTBED_DIR)

status: venv ## replication state and GTIDs of every server; per task: runs, routes, rejections
	@$(OFFLOAD) testbed status; echo; $(OFFLOAD) status

logs: ## the servers' error logs and the compute service's log
	@if [ -f $(TESTBED_DIR)/compose.env ]; then $(BIN)/offload testbed logs --dir $(TESTBED_DIR); exit; fi; \
	for f in $(TESTBED_DIR)/*/error.log $(TESTBED_DIR)/service.log; do \
	  [ -f "$$f" ] && { echo "== $$f"; tail -n 30 "$$f"; }; done; true

test: venv server $(NOVA_ENV) ## the whole suite on its own testbed (free ports; stopped afterwards; FLAVOR=mysql, SCHEMA=nova)
	$(BIN)/pytest $(PYTEST_ARGS)

# the compose subset: every task's replica-read proof, routing, the stack itself
COMPOSE_TESTS ?= tests/integration/test_task_*.py tests/integration/test_routing.py tests/compose
# the flavors `make test-compose` and `make images` cover (FLAVOR= narrows them to one)
COMPOSE_FLAVORS ?= $(if $(FLAVOR),$(FLAVOR),mariadb mysql)
images: venv ## local images for the compose testbed without a registry (debootstrap, root; cached)
	$(BIN)/offload testbed images $(foreach f,$(COMPOSE_FLAVORS),--flavor $(f))

test-compose: venv ## COMPOSE_TESTS on the compose stack, per flavor (mariadb, mysql; FLAVOR= one)
	@BIN=$(BIN) bash scripts/test-compose.sh $(COMPOSE_FLAVORS) -- $(COMPOSE_TESTS) $(PYTEST_ARGS)

SOAK_SECONDS ?= 600
soak: venv server ## the service for SOAK_SECONDS (600) under writes and replica pauses
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest -m soak -s tests/soak

BENCH ?= quick
# the default flavor's results are the documented ones; another FLAVOR's go beside them
BENCH_OUT ?= bench/results$(if $(FLAVOR),-$(FLAVOR)).json
.PHONY: bench
$(BIN)/.bench-installed: $(BIN)/.installed
	@# bench: oslo.db, the peer of the routing benchmark (not a dependency of offload)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@

bench: venv server $(BIN)/.bench-installed ## benchmarks on their own testbed (free ports; stopped after); BENCH=full, FLAVOR=mysql
	$(BIN)/offload bench --$(BENCH) --out $(BENCH_OUT)$(if $(FLAVOR),, --docs docs/benchmarks.md)

# the default experiment: every kind of injection once, in 50 s (docs/experiments.md)
LAG_SCENARIO ?= pause:3@5+pause:0.5@12+burst:300k@17+delay:2@25..35+kill-replica@41..43
LAG_ARGS     ?= --duration 50 --max-lag 0.5 --policy primary --write-rate 20
LAG_OUT      ?= lag-results
LAG_CONFIG   ?=
.PHONY: lag
lag: venv server ## lag experiment, ~1 min, on its own testbed (LAG_CONFIG=FILE: an existing one); results in LAG_OUT
	$(BIN)/offload lag run --scenario '$(LAG_SCENARIO)' $(LAG_ARGS) --out $(LAG_OUT)$(if $(LAG_CONFIG), --config $(LAG_CONFIG))

# the lag matrix: one load across link RTT x write rate x appliers (docs/experiments.md)
MATRIX_ARGS ?=
MATRIX_OUT  ?= matrix-results
.PHONY: lag-matrix
lag-matrix: venv server ## RTT 0/40 ms x 50/400 writes/s x 1/4 appliers, ~3 min, own testbed; MATRIX_ARGS="--rtt 0,10,40,80 --semi-sync off,on"
	$(BIN)/offload lag matrix --out $(MATRIX_OUT) $(MATRIX_ARGS)

# the fleet: simulated compute hosts, with and without the replica (docs/fleet.md)
FLEET_ARGS ?=
FLEET_OUT  ?= fleet-results
.PHONY: fleet
fleet: venv server ## 10, 50, 200 simulated hosts ± replica, < 10 min; FLEET_ARGS="--hosts 500,1000 --window 15 --pairs 1" / "--replicas 2"
	$(BIN)/offload fleet --out $(FLEET_OUT) $(FLEET_ARGS)

lint: venv ## ruff (check and format), mypy --strict, actionlint on the shipped workflow
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests
	$(BIN)/mypy
	@BIN=$(BIN) bash scripts/actionlint.sh

clean: ## stop the testbed and delete its data
	@if [ -x $(BIN)/offload ] && [ -f $(TESTBED_DIR)/state.json ]; then $(MAKE) --no-print-directory down; fi
	rm -rf $(TESTBED_DIR)

distclean: clean ## also delete .venv
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
