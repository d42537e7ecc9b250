# cocos-manager: every target does its own set-up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
.DEFAULT_GOAL := build

NODE_DEPS := node_modules/.package-lock.json
# The node flags of the systemd unit's ExecStart, so `make run` and `make bench` run the daemon as installed.
NODE_FLAGS := $(shell sed -n 's|^ExecStart=/usr/bin/node \(.*\) /opt/cocos-manager/dist/cli.js serve$$|\1|p' systemd/cocos-manager.service)

.PHONY: build deps system-deps guest guest-disk qemu-bed test check-deps run demo bench install install-files clean

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

# The test guest as a UEFI-bootable disk (build/guest/disk.qcow2): a GPT disk whose EFI system
# partition holds one unified kernel image (kernel, initramfs, command line), for the disk boot.
guest-disk: guest
	@bash scripts/build-disk.sh

# QEMU 11 from Debian trixie-backports in a tree of its own (build/qemu-11/), never installed on
# the host; the real-QEMU tests run on it as well as on the host's QEMU. Skipped with a reason offline.
qemu-bed:
	@bash scripts/build-qemu-bed.sh

test: build check-deps guest guest-disk qemu-bed
	npm test

# The daemon in the foreground with the development profile (no KVM, no SEV-SNP/TDX).
run: build guest
	@mkdir -p state
	set -a && . profiles/dev.env && set +a && exec node $(NODE_FLAGS) dist/cli.js serve

# Boots one CVM through the API, prints its agent's report, removes it. DISK=1: the CVM boots
# from a disk of its own, an overlay of build/guest/disk.qcow2 (MANAGER_QEMU_ENABLE_DISK).
demo: build guest $(if $(DISK),guest-disk)
	@mkdir -p state
	set -a && . profiles/dev.env && set +a && node scripts/demo.mjs $(if $(DISK),--disk)

# Benchmarks (not part of `make test`): figures against floors measured in the same run.
# The restart at scale compiles its light stand-in QEMU (bench/fake-qemu-lite.c) with gcc, statically.
bench: build
	@bash scripts/install-system-deps.sh gcc libc6-dev
	COCOS_NODE_FLAGS="$(NODE_FLAGS)" node bench/run.mjs
	COCOS_NODE_FLAGS="$(NODE_FLAGS)" node bench/restart-at-scale.mjs

# Installs the build, the systemd unit and the env file. The build is the bundle (dist/cli.js,
# dist/bundle/: every runtime dependency is in it, so no node_modules), the protos it reads, and
# package.json (its "type": "module" makes Node read the bundle's .js files as ES modules).
# DESTDIR stages the whole tree elsewhere (packaging, tests). An existing env file is kept.
PREFIX ?= /opt/cocos-manager
install: build install-files

install-files:
	@test -f dist/bundle/cli.js || { echo "nothing built: run 'make install'" >&2; exit 1; }
	install -d -m 0755 $(DESTDIR)$(PREFIX) $(DESTDIR)/etc/systemd/system $(DESTDIR)/usr/local/bin
	install -d -m 0750 $(DESTDIR)/etc/cocos
	rm -rf $(DESTDIR)$(PREFIX)/dist $(DESTDIR)$(PREFIX)/node_modules
	install -d -m 0755 $(DESTDIR)$(PREFIX)/dist
	cp -r dist/cli.js dist/build-info.json dist/bundle $(DESTDIR)$(PREFIX)/dist/
	cp -r proto docs package.json README.md $(DESTDIR)$(PREFIX)/
	sed 's|/opt/cocos-manager|$(PREFIX)|g' systemd/cocos-manager.service > $(DESTDIR)/etc/systemd/system/cocos-manager.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/cocos-manager.service
	[ -e $(DESTDIR)/etc/cocos/cocos-manager.env ] || install -m 0640 cocos-manager.env $(DESTDIR)/etc/cocos/cocos-manager.env
	ln -sf $(PREFIX)/dist/cli.js $(DESTDIR)/usr/local/bin/cocos-manager
	@echo "installed; enable with: systemctl daemon-reload && systemctl enable --now cocos-manager"

clean:
	rm -rf dist build src/api/grpc/generated
