# cocos-manager: every target does its own set-up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
.DEFAULT_GOAL := build

NODE_DEPS := node_modules/.package-lock.json

.PHONY: build deps system-deps guest test check-deps run demo clean

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

# The test guest: Debian's kernel and an initramfs of busybox-static and a few modules (build/guest/).
guest:
	@bash scripts/build-guest.sh

test: build check-deps guest
	npm test

# The daemon in the foreground with the development profile (no KVM, no SEV-SNP/TDX).
run: build guest
	@mkdir -p state
	set -a && . profiles/dev.env && set +a && exec node dist/cli.js serve

# Boots one CVM through the API, prints its agent's report, removes it.
demo: build guest
	@mkdir -p state
	set -a && . profiles/dev.env && set +a && node scripts/demo.mjs

clean:
	rm -rf dist build src/api/grpc/generated
