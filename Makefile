# podnet — see README.md. Everything here runs as root (namespaces, TAPs).
# go from PATH, else where the Go distribution installs itself.
GO        ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export GOTOOLCHAIN := local
BIN       := bin/podnet
CNI_BIN   := bin/podnet-cni
# make install: DESTDIR stages a package root. /opt/cni/bin and
# /etc/cni/net.d are where containerd, CRI-O, Kubernetes and podman's CNI
# backend all look for plugins and network configurations.
DESTDIR   ?=
PREFIX    ?= /usr/local
CNI_BIN_DIR  ?= /opt/cni/bin
CNI_CONF_DIR ?= /etc/cni/net.d
CNI_CONF  := deploy/cni/10-podnet.conflist
SYSTEMD_DIR ?= /etc/systemd/system
UNIT      := deploy/systemd/podnet.service
DAEMON_CONF := deploy/systemd/daemon.yaml
# What `podnet version` and /metrics report: git's view of the tree, since
# builds here run with -buildvcs=false and carry no VCS stamp.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X podnet/internal/buildinfo.version=$(VERSION) -X podnet/internal/buildinfo.commit=$(COMMIT)
# An execution count, not a duration: go1.26's fuzz coordinator can fail a
# target with a bare "context deadline exceeded" when a duration runs out
# (golang/go#75804, fixed in go1.27).
FUZZTIME  ?= 300000x
# Fuzz targets run briefly by `make test`: package and target names.
FUZZ      := ./internal/packet:FuzzParseIPv4Frame ./internal/packet:FuzzParseARPFrame \
             ./internal/packet:FuzzSegmentTCPv4 ./internal/packet:FuzzVirtioDecode \
             ./internal/packet:FuzzBuildICMPError ./encap:FuzzDecapIPIP \
             ./encap:FuzzDecapVXLAN ./api:FuzzDecode ./ipam:FuzzDecodeBlock \
             ./switch:FuzzForward ./selector:FuzzParse \
             ./encap:FuzzGROSplit ./encap:FuzzGROSegment \
             ./nat:FuzzDatagramReply ./nat:FuzzICMPErrorToPod \
             ./resources:FuzzLoadClientConfig ./internal/packet:FuzzGRO \
             ./nat:FuzzHandle ./node:FuzzPodRecords ./internal/packet:FuzzSegmentUDPv4
# Where fuzz-long writes one log per target.
FUZZLOG   ?= /tmp/podnet-fuzz-logs

.PHONY: build deps test unit race allocs fuzz fuzz-long lab lab-down soak bench lint clean \
        install uninstall install-cni uninstall-cni

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/podnet
	$(GO) build -o $(CNI_BIN) ./cmd/podnet-cni

# podnet into $(PREFIX)/bin, the CNI plugin and its conflist where
# runtimes look (an edited conflist is replaced: keep changes elsewhere),
# the systemd unit (installed, not enabled: `systemctl enable --now podnet`)
# and an example daemon config, which never replaces an existing one.
install: build install-cni
	install -D -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/podnet
	sed 's|/usr/local/bin/podnet|$(PREFIX)/bin/podnet|' $(UNIT) > $(UNIT).tmp
	install -D -m 644 $(UNIT).tmp $(DESTDIR)$(SYSTEMD_DIR)/podnet.service
	rm -f $(UNIT).tmp
	test -e $(DESTDIR)/etc/podnet/daemon.yaml || install -D -m 644 $(DAEMON_CONF) $(DESTDIR)/etc/podnet/daemon.yaml
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# The daemon config in /etc/podnet stays: it is the administrator's.
uninstall: uninstall-cni
	rm -f $(DESTDIR)$(PREFIX)/bin/podnet $(DESTDIR)$(SYSTEMD_DIR)/podnet.service
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

install-cni:
	$(GO) build -o $(CNI_BIN) ./cmd/podnet-cni
	install -D -m 755 $(CNI_BIN) $(DESTDIR)$(CNI_BIN_DIR)/podnet-cni
	install -D -m 644 $(CNI_CONF) $(DESTDIR)$(CNI_CONF_DIR)/$(notdir $(CNI_CONF))

uninstall-cni:
	rm -f $(DESTDIR)$(CNI_BIN_DIR)/podnet-cni $(DESTDIR)$(CNI_CONF_DIR)/$(notdir $(CNI_CONF))

deps:
	@scripts/deps.sh

# The test command of README.md and CI: vet, every test with the race
# detector (real namespaces, TAPs and daemons; needs root), then each fuzz
# target for $(FUZZTIME).
test: deps lint race allocs fuzz

race:
	$(GO) test -race -count=1 -timeout 25m ./...

# The zero-allocation tests again without -race: under it sync.Pool drops
# entries on purpose, so the pooled paths skip their counts there.
allocs:
	$(GO) test -count=1 -run 'Allocs' ./switch ./encap ./internal/packet ./nat

unit:
	$(GO) test -count=1 ./...

fuzz:
	@set -e; for t in $(FUZZ); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
	  $(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# Every fuzz target for 10 minutes (FUZZTIME=10m; about 3 hours in all,
# not in CI), each logged to $(FUZZLOG)/NAME.log, with a summary line of
# its last exec count. A real finding writes its input to
# PKG/testdata/fuzz/NAME/ and prints "Failing input written"; a run that
# fails only with a bare "context deadline exceeded" and writes no input
# is go1.26's coordinator deadline bug (see FUZZTIME) after a clean run,
# and is reported as such. `make fuzz-long FUZZTIME=2m FUZZ=./pkg:Name`
# runs a subset for another duration.
fuzz-long: FUZZTIME = 10m
fuzz-long:
	@mkdir -p $(FUZZLOG); fail=0; for t in $(FUZZ); do \
	  pkg=$${t%%:*}; name=$${t##*:}; log=$(FUZZLOG)/$$name.log; \
	  echo "fuzz $$pkg $$name ($(FUZZTIME)), log $$log"; \
	  if $(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg >$$log 2>&1; then res=ok; \
	  elif grep -q 'Failing input written' $$log; then res="FAILED: finding in $$pkg/testdata/fuzz/$$name"; fail=1; \
	  elif grep -q 'context deadline exceeded' $$log; then res="ok (go1.26 deadline bug at the end; no failing input)"; \
	  else res="FAILED: see $$log"; fail=1; fi; \
	  echo "  $$name: $$(grep -o 'execs: [0-9]*' $$log | tail -1), $$(grep -o 'new interesting: [0-9]* (total: [0-9]*)' $$log | tail -1): $$res"; \
	done; exit $$fail

# The main job: a two-node lab with three pods on one machine.
lab: deps build
	$(BIN) lab up

lab-down: build
	$(BIN) lab down

# The soak (not in CI): a lab of its own ("soak"), traffic on every path
# while a pod is added and one removed every second and the default pool
# switches encapsulation live, for $(SOAK) (make soak SOAK=2m for less);
# fails on daemon memory, goroutine or fd growth, an IPAM leak or a
# duplicated address. docs/soak.md has the rules.
# Each daemon's heap profile and goroutine stacks at the start and end go
# to $(SOAK_PROFILES).
SOAK      ?= 20m
SOAK_PROFILES ?= /tmp/podnet-soak
soak: deps build
	$(BIN) lab soak --duration $(SOAK) --profiles=$(SOAK_PROFILES)

# Micro-benchmarks of the hot paths, then the bench suite (quick by
# default; the full suite: make bench BENCH_ARGS="--out bench/results").
BENCH_ARGS ?= --quick
bench: deps build
	$(GO) test -run='^$$' -bench=. -benchmem ./internal/packet ./router ./switch
	$(BIN) bench $(BENCH_ARGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
