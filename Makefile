# cocos-manager: every target does its own set-up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
.DEFAULT_GOAL := build

NODE_DEPS := node_modules/.package-lock.json

.PHONY: build deps system-deps test check-deps run clean

system-deps:
	@bash scripts/install-system-deps.sh

$(NODE_DEPS): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: system-deps $(NODE_DEPS)

build: deps
	npm run build --silent

# The core (config, qemu, request validation) never imports the edges; see .dependency-cruiser.cjs.
check-deps: deps
	npm run deps:check --silent

test: build check-deps
	npm test

# The daemon in the foreground with the development profile (no KVM, no SEV-SNP/TDX).
run: build
	@mkdir -p state
	set -a && . profiles/dev.env && set +a && exec node dist/cli.js serve

clean:
	rm -rf dist build src/api/grpc/generated
