# FishChat developer commands. Every target bootstraps .venv by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export FISHCHAT_CACHE ?= $(HOME)/.cache/fishchat
export PIP_CACHE_DIR ?= $(FISHCHAT_CACHE)/pip
STAMP := $(VENV)/.installed
PROTO_STAMP := services/fishchat/proto/gen/.stamp
PROTOS := $(shell find services/fishchat/proto -name "*.proto" 2>/dev/null) services/fishchat/proto/build.py
WEB_STAMP := services/fishchat/web/dist/.inputs
WEB_INPUTS := $(shell find services/fishchat/web/src -type f 2>/dev/null) services/fishchat/web/package.json \
	services/fishchat/web/package-lock.json services/fishchat/web/build.py $(wildcard services/fishchat/proto/external/*.proto)

.PHONY: venv proto web run test lint unit stack-up stack-down stack-status bench clean cluster images

venv: $(STAMP) $(PROTO_STAMP) $(WEB_STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,operator]'
	@touch $@

# Protobuf and gRPC code is generated from the .proto files, never edited by hand.
$(PROTO_STAMP): $(STAMP) $(PROTOS)
	$(PY) -m fishchat.proto.build
	@mkdir -p $(dir $@) && touch $@

proto: $(PROTO_STAMP)

# The browser client (served at /app/ by the HTTP API): protobuf code generated from the same .proto
# files, bundled with the npm tools pinned by the lockfile (installed under $(FISHCHAT_CACHE)/web).
$(WEB_STAMP): $(STAMP) $(WEB_INPUTS)
	$(PY) -m fishchat.web.build

web: $(WEB_STAMP)

# Every role in one process on the original ports (gateway 10000, access 11000, HTTP API 6001, admin
# 6003); data in $(FISHCHAT_DATA_DIR) (default .data). Extra flags: make run RUN_ARGS="--log-level debug".
FISHCHAT_DATA_DIR ?= .data
run: venv
	$(PY) -m fishchat up --data-dir "$(FISHCHAT_DATA_DIR)" $(RUN_ARGS)

# Every role as its own process (`fishchat serve <role>`) against the real servers, which come up
# first; prints the addresses as one JSON line, Ctrl-C stops it. E.g. make cluster CLUSTER_ARGS="--access 3".
cluster: venv
	$(VENV)/bin/fishchat-stack up redis mariadb etcd kafka hbase
	$(VENV)/bin/fishchat cluster up $(CLUSTER_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest -m unit

# Everything that can run here: lint, types and every test tier. The real servers and the tools
# (helm) come up first (so a cold install shows its progress), the tests reuse them, and the servers
# stop afterwards unless they were already running before this target started.
test: lint
	@running=$$($(VENV)/bin/fishchat-stack status >/dev/null 2>&1 && echo yes); \
	$(VENV)/bin/fishchat-stack up || exit 1; \
	$(VENV)/bin/fishchat-stack tools || exit 1; \
	$(VENV)/bin/fishchat-stack images || exit 1; \
	$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	[ -n "$$running" ] || $(VENV)/bin/fishchat-stack down; \
	exit $$rc

# The container images (ghcr.io/fishchat/fishchat, .../fishchat-operator, the node's pause) built
# without a Docker daemon: buildah on a Debian base made with debootstrap; caches in FISHCHAT_CACHE.
images: venv
	$(VENV)/bin/fishchat-stack images

stack-up: venv
	$(VENV)/bin/fishchat-stack up

stack-down: venv
	$(VENV)/bin/fishchat-stack down

stack-status: venv
	$(VENV)/bin/fishchat-stack status

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) services/fishchat/proto/gen services/fishchat/web/dist .mypy_cache .ruff_cache .pytest_cache
