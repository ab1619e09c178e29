# podnet — see README.md. Everything here runs as root (namespaces, TAPs).
# go from PATH, else where the Go distribution installs itself.
GO        ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export GOTOOLCHAIN := local
BIN       := bin/podnet
# An execution count, not a duration: go1.26's fuzz coordinator can fail a
# target with a bare "context deadline exceeded" when a duration runs out
# (golang/go#75804, fixed in go1.27).
FUZZTIME  ?= 300000x
# Fuzz targets run briefly by `make test`: package and target names.
FUZZ      := ./internal/packet:FuzzParseIPv4Frame ./internal/packet:FuzzParseARPFrame \
             ./internal/packet:FuzzSegmentTCPv4 ./internal/packet:FuzzVirtioDecode \
             ./internal/packet:FuzzBuildICMPError ./encap:FuzzDecapIPIP \
             ./encap:FuzzDecapVXLAN ./api:FuzzDecode ./ipam:FuzzDecodeBlock

.PHONY: build deps test unit race fuzz lab lab-down bench lint clean

build:
	$(GO) build -o $(BIN) ./cmd/podnet

deps:
	@scripts/deps.sh

# The test command of README.md and CI: vet, every test with the race
# detector (real namespaces, TAPs and daemons; needs root), then each fuzz
# target for $(FUZZTIME).
test: deps lint race fuzz

race:
	$(GO) test -race -count=1 -timeout 25m ./...

unit:
	$(GO) test -count=1 ./...

fuzz:
	@set -e; for t in $(FUZZ); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
	  $(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# The main job: a two-node lab with three pods on one machine.
lab: deps build
	$(BIN) lab up

lab-down: build
	$(BIN) lab down

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
