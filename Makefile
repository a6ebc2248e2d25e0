# chatd — the two commands are `make run` and `make test`.
#
#   make deps          install missing Debian packages (scripts/deps.sh; root or sudo)
#   make build         release build (RelWithDebInfo) in build/
#   make build-asan    AddressSanitizer + UBSan build in build-asan/
#   make run           deps, build, dev stack (var/stack), migrate, then chatd in the
#                      foreground on 127.0.0.1:3000 (Ctrl-C stops chatd; the stack stays)
#   make stop          stop chatd started by `make run`, the dev stack, and the cluster
#   make cluster       deps, build, then scripts/cluster.sh start: on loopback under
#                      var/cluster, PostgreSQL primary + streaming replica (each behind
#                      its PgBouncer), a Redis Cluster (3 masters + 3 replicas), 3 chatd
#                      instances on 127.0.0.1:3001-3003 and HAProxy on 127.0.0.1:3000
#   make test          deps, format check, lint, both builds, unit tests in both, the fuzz
#                      smoke (every harness of tests/fuzz for 20 s), then the integration
#                      suite on a private test stack (var/test-stack) twice, then the
#                      compose test once
#   make unit          unit tests of both builds only
#   make fuzz          scripts/fuzz.sh: build the libFuzzer harnesses (clang-14, ASan + UBSan)
#                      in build-fuzz/ and run each for FUZZ_SECONDS (default 300); prints
#                      executions, coverage and crashes per harness, fails on a crash
#   make integration   the integration half of `make test` (builds must exist)
#   make images        scripts/images.sh: chatd's container images with podman, from a Debian 12
#                      base made by debootstrap (cached in var/images); prints their sizes
#   make compose-test  scripts/test-compose.sh: the images, then deploy/docker-compose.yml
#                      brought up, smoke-tested and taken down (part of make test, once)
#   make bench         bench/run.sh: the validation run (~25 min; ARGS=--quick: ~3 min),
#                      writes docs/performance.md and docs/perf/
#   make format-check  clang-format --dry-run -Werror on src/, tests/unit, tests/fuzz and
#                      tools/chatload
#                      (part of make test)
#   make lint          scripts/lint.sh: shellcheck over scripts/, bench/ and .ci/run, cppcheck
#                      over src/, zero findings (part of make test)
#   make openapi-check docs/openapi.yaml against the OpenAPI 3.1 schema with the npm tool
#                      pinned in tools/openapi (npm ci once, offline after; part of make test)
#   make clean         remove builds and var/ (stops stacks first)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
JOBS ?= 2
BUILD_TYPE ?= RelWithDebInfo
M := $(MAKE) --no-print-directory
FUZZ_SECONDS ?= 300

STACK_DIR := var/stack
LISTEN ?= 127.0.0.1:3000
PIDFILE := var/chatd.pid

.PHONY: all deps build build-asan run stop cluster test unit fuzz integration bench format-check lint clean monitor \
	openapi-check images compose-test

all: build

deps:
	@scripts/deps.sh

build:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build build -j$(JOBS)

build-asan:
	cmake -S . -B build-asan -DCHATD_SANITIZE=ON
	cmake --build build-asan -j$(JOBS)

# steps in order even under make -j
run:
	@$(M) deps
	@$(M) build
	@CHATD_STACK_DIR=$(STACK_DIR) scripts/stack.sh start
	@set -a; . $(STACK_DIR)/env; set +a; build/chatd migrate
	@echo "chatd: serving on http://$(LISTEN) — open http://$(LISTEN)/ for the web client, or try: curl -s http://$(LISTEN)/healthz ; Ctrl-C stops chatd, 'make stop' stops the stack"
	@mkdir -p var
	@set -a; . $(STACK_DIR)/env; set +a; export CHATD_LISTEN=$(LISTEN); \
	  echo $$$$ > $(PIDFILE); exec build/chatd

stop:
	@if [ -f $(PIDFILE) ]; then \
	  pid=$$(cat $(PIDFILE)); \
	  if [ "$$(cat /proc/$$pid/comm 2>/dev/null)" = chatd ]; then \
	    kill -TERM $$pid; \
	    for i in $$(seq 150); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	    kill -0 $$pid 2>/dev/null && kill -KILL $$pid || true; \
	    echo "chatd (pid $$pid) stopped"; \
	  fi; \
	  rm -f $(PIDFILE); \
	fi
	@CHATD_STACK_DIR=$(STACK_DIR) scripts/stack.sh stop
	@if [ -d var/cluster ]; then CLUSTER_DIR=var/cluster scripts/cluster.sh stop; fi

cluster:
	@$(M) deps
	@$(M) build
	@CLUSTER_DIR=var/cluster scripts/cluster.sh start

test:
	@$(M) deps
	@scripts/images.sh background
	@$(M) format-check
	@$(M) lint
	@$(M) build
	@$(M) build-asan
	@$(M) unit
	@$(M) openapi-check
	@$(M) fuzz FUZZ_SECONDS=20
	@$(M) integration
	@$(M) compose-test

unit:
	ctest --test-dir build --output-on-failure
	ctest --test-dir build-asan --output-on-failure

fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) JOBS=$(JOBS) scripts/fuzz.sh

integration:
	scripts/test-integration.sh

images:
	@scripts/deps.sh
	@scripts/images.sh build

compose-test:
	scripts/test-compose.sh

# Prometheus (127.0.0.1:19090), Alertmanager and exporters against the dev stack;
# `scripts/monitor.sh stop` stops them
monitor:
	@scripts/monitor.sh start

bench:
	@exec bash bench/run.sh $(ARGS)

format-check:
	@scripts/deps.sh clang-format
	@files=$$(find src tests/unit tests/fuzz tools/chatload -name '*.[ch]' | sort); \
	  clang-format --dry-run -Werror $$files && echo "format-check: $$(echo $$files | wc -w) files ok"

lint:
	@scripts/deps.sh
	@scripts/lint.sh

# the validator is fetched by npm ci when the lock file is newer than what is installed
OPENAPI_TOOL := tools/openapi/node_modules/.package-lock.json

$(OPENAPI_TOOL): tools/openapi/package-lock.json tools/openapi/package.json
	@scripts/deps.sh
	cd tools/openapi && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

openapi-check: $(OPENAPI_TOOL)
	@command -v node >/dev/null || scripts/deps.sh
	@out=$$(node tools/openapi/node_modules/@seriousme/openapi-schema-validator/bin/validate-api-cli.js \
	  docs/openapi.yaml 2>&1) || { echo "$$out"; echo "openapi-check: docs/openapi.yaml is NOT valid" >&2; exit 1; }
	@echo "openapi-check: docs/openapi.yaml is valid OpenAPI $$(sed -n 's/^openapi: //p' docs/openapi.yaml)"

# a stack directory may be a symlink to /tmp (see scripts/stack.sh): remove both
clean:
	-@if [ -d var/cluster ]; then CLUSTER_DIR=var/cluster scripts/cluster.sh stop 2>/dev/null; fi
	-@CHATD_STACK_DIR=var/test-stack scripts/stack.sh stop 2>/dev/null
	-@CHATD_STACK_DIR=var/test-stack-asan scripts/stack.sh stop 2>/dev/null
	-@CHATD_STACK_DIR=$(STACK_DIR) scripts/stack.sh stop 2>/dev/null
	@for d in var/test-stack var/test-stack-asan $(STACK_DIR) var/cluster/stack; do \
	  if [ -L $$d ]; then t=$$(readlink $$d); case $$t in /tmp/chatd-stack-*) rm -rf "$$t";; esac; fi; \
	done
	rm -rf build build-asan build-fuzz var
