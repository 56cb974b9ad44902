# pg_xsell - the README's two commands are `make demo` and `make test`.
#
#   make install   set-up (Debian packages, cargo-pgrx, model files) + release build + install
#   make demo      install, start a demo cluster if none is reachable, load the sample shop,
#                  run examples/walkthrough.sql
#   make test      install, then every test layer; closing line "N passed, N failed"
#
# Pins (pgrx, PostgreSQL major, model packages) live in pgrx.toml only; scripts/pins reads it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Read with sed, not scripts/pins: python3 may be missing until `deps` has installed it.
toml_value     = $(shell sed -n '/^\[$(1)\]/,/^\[/s/^$(2) *= *"\{0,1\}\([^" ]*\)"\{0,1\}.*/\1/p' pgrx.toml | head -n 1)
PG_MAJOR      := $(call toml_value,postgres,major)
PGRX_VERSION  := $(call toml_value,pgrx,version)
PG_CONFIG     ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
XSELL_CACHE   ?= $(HOME)/.cache/pg_xsell
export XSELL_CACHE
# Build outside the clone so reruns (and CI on the same machine) reuse compiled dependencies.
export CARGO_TARGET_DIR ?= $(XSELL_CACHE)/target
export PATH := $(HOME)/.cargo/bin:$(PATH)

DEMO_PORT     ?= 5433
DEMO_PGDATA   ?= /var/tmp/pg_xsell/demo
DEMO_DB       ?= xsell_demo
# Big enough that the benchmark tables stay in shared buffers (the peers read numpy arrays in RAM).
DEMO_SHARED_BUFFERS ?= 1GB

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# The demo cluster belongs to a non-root user: `postgres` when run as root, else you.
CLUSTER_USER := $(if $(filter 0,$(shell id -u)),postgres,$(shell id -un))
AS_CLUSTER   := $(if $(filter 0,$(shell id -u)),sudo -u postgres,)
PSQL_DEMO    := psql -X -h localhost -p $(DEMO_PORT) -U postgres

.PHONY: help deps pgrx models build install demo demo-cluster test test-unit test-pg test-regress bench clean-demo

help:
	@echo "make demo     # install everything, start a demo cluster on port $(DEMO_PORT), run the walkthrough"
	@echo "make test     # install everything, run all test layers"
	@echo "make install  # set-up, release build, install extension and model files"

## --- set-up -----------------------------------------------------------------------------
DEB_PKGS := postgresql-$(PG_MAJOR) postgresql-server-dev-$(PG_MAJOR) clang libclang-dev sudo \
            python3 python3-pip libopenblas-dev pkg-config ca-certificates

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "ERROR: cargo not found: install Rust (rustup) first"; exit 1; }

pgrx: deps
	@if [ "$$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx $(PGRX_VERSION)" ]; then \
	  echo "==> installing cargo-pgrx $(PGRX_VERSION) (about 10 minutes on 2 cores)"; \
	  cargo install cargo-pgrx --version $(PGRX_VERSION) --locked; \
	fi
	@grep -qs '^pg$(PG_MAJOR) = "$(PG_CONFIG)"' $(HOME)/.pgrx/config.toml || \
	  cargo pgrx init --pg$(PG_MAJOR) $(PG_CONFIG) >/dev/null
	@python3 scripts/pins check

models: deps
	@echo "==> model files"
	@$(SUDO) python3 scripts/provision_models "$$($(PG_CONFIG) --sharedir)/extension/pg_xsell/models"

build: pgrx
	@echo "==> building and installing pg_xsell (release)"
	@cargo pgrx install --release --pg-config $(PG_CONFIG) $(if $(SUDO),--sudo,) 2>&1 | grep -Ev '^\s+(Compiling|Checking|Downloaded|Downloading)' || { echo "ERROR: build failed"; exit 1; }

install: build models
	@echo "==> pg_xsell installed into $$($(PG_CONFIG) --pkglibdir)"

## --- demo --------------------------------------------------------------------------------
demo-cluster: install
	@if pg_isready -q -h localhost -p $(DEMO_PORT); then \
	  echo "==> using the PostgreSQL server already listening on port $(DEMO_PORT)"; \
	else \
	  echo "==> starting a demo cluster in $(DEMO_PGDATA) (port $(DEMO_PORT), owner $(CLUSTER_USER))"; \
	  $(SUDO) mkdir -p $(DEMO_PGDATA); $(SUDO) chown $(CLUSTER_USER) $(DEMO_PGDATA); \
	  if [ ! -f $(DEMO_PGDATA)/PG_VERSION ]; then \
	    $(AS_CLUSTER) $$($(PG_CONFIG) --bindir)/initdb -D $(DEMO_PGDATA) -U postgres --auth=trust -E UTF8 --locale=C >/dev/null; \
	  fi; \
	  $(AS_CLUSTER) $$($(PG_CONFIG) --bindir)/pg_ctl -D $(DEMO_PGDATA) -l $(DEMO_PGDATA)/server.log -w \
	    -o "-p $(DEMO_PORT) -c listen_addresses=localhost -c unix_socket_directories=$(DEMO_PGDATA) -c shared_buffers=$(DEMO_SHARED_BUFFERS)" start >/dev/null; \
	fi

demo: demo-cluster
	@$(PSQL_DEMO) -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$(DEMO_DB)'" | grep -q 1 || \
	  $(PSQL_DEMO) -d postgres -qc "CREATE DATABASE $(DEMO_DB)"
	@$(PSQL_DEMO) -d $(DEMO_DB) -q -v ON_ERROR_STOP=1 -f examples/sample_shop.sql
	@echo "==> examples/walkthrough.sql"
	@$(PSQL_DEMO) -d $(DEMO_DB) -v ON_ERROR_STOP=1 -f examples/walkthrough.sql

clean-demo:
	-$(AS_CLUSTER) $$($(PG_CONFIG) --bindir)/pg_ctl -D $(DEMO_PGDATA) -m fast stop
	$(SUDO) rm -rf $(DEMO_PGDATA)

## --- tests -------------------------------------------------------------------------------
test: install
	@PG_CONFIG=$(PG_CONFIG) bash scripts/test-all

bench: install
	@bash bench/run
