# forkd: a multi-process prefork server (Swoole's BASE and PROCESS modes).
GO      ?= go
BIN     := bin/server

.PHONY: build run test test-short test-repeat fuzz bench vet deps clean

build:
	$(GO) build -o $(BIN) ./cmd/server

## run: the server in the foreground on its defaults (HTTP :9501, WebSocket :9502)
run: build
	./$(BIN) start --log-format console

## deps: what the tests need beyond Go modules (Debian packages: chromium, python3-websockets, systemd, nginx)
deps:
	bash .ci/install-deps.sh

## test: every test, with the race detector, bounded in time
test: deps vet
	$(GO) test -race -count=1 -timeout 25m ./...
	$(MAKE) test-repeat
	$(MAKE) fuzz FUZZTIME=50000x FUZZTIME_CONFIG=5000x

## test-repeat: the timing-sensitive bounds and liveness tests again, 4 times each
## (SIGSTOPped workers, the crash loop, a refused stop within a second, a skipped broadcast)
test-repeat:
	$(GO) test -race -count=4 -timeout 10m -run '^TestBounds(Watchdog|WatchdogTask|CrashLoop|PermissionDenied|BroadcastSkipped)$$' ./cmd/server/

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

## fuzz: each fuzz target briefly (seed corpora in testdata/)
# `make test` gives counts (Nx), not durations: with a duration, Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" at the
# deadline, no input written (golang/go#75804, fixed in Go 1.27); a count has
# no deadline to race. FuzzConfig runs the whole CLI per input: fewer of it.
FUZZTIME ?= 30s
FUZZTIME_CONFIG ?= $(FUZZTIME)
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzReader$$' -fuzztime=$(FUZZTIME) ./ipc/
	$(GO) test -run='^$$' -fuzz='^FuzzRoundTrip$$' -fuzztime=$(FUZZTIME) ./ipc/
	$(GO) test -run='^$$' -fuzz='^FuzzHandshake$$' -fuzztime=$(FUZZTIME) ./ipc/
	$(GO) test -run='^$$' -fuzz='^FuzzParseSize$$' -fuzztime=$(FUZZTIME) ./internal/command/
	$(GO) test -run='^$$' -fuzz='^FuzzConfig$$' -fuzztime=$(FUZZTIME_CONFIG) ./internal/command/
	$(GO) test -run='^$$' -fuzz='^FuzzFrameReader$$' -fuzztime=$(FUZZTIME) ./reactor/

## bench: micro-benchmarks, then the mode comparison
bench: build
	$(GO) test -run='^$$' -bench=. -benchmem ./ipc/
	./$(BIN) bench --workers 2 --duration 5s --out docs/bench-report.md --chart docs/bench-chart.svg

clean:
	rm -rf bin run
