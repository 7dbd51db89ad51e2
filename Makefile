# weft — build, test, demo. `make test` and `make demo` need root (network namespaces).
GO        ?= go
BIN       := bin
TOOLS     := $(CURDIR)/.tools/bin
CNI_VERSION     := v1.3.0
PLUGINS_VERSION := v1.9.0
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
TEST_TIMEOUT ?= 14m
KUBE_TOOLS := $(TOOLS)/kube-apiserver $(TOOLS)/etcd $(TOOLS)/kubectl

export WEFT_BIN_DIR   := $(CURDIR)/$(BIN)
export WEFT_TOOLS_DIR := $(TOOLS)

.PHONY: all build tools kubetools test unit integration demo vet fmt clean bench fuzz

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/weft ./plugin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/weftd ./daemon

# cnitool and the reference plugins, pinned, built from the Go module proxy.
tools: $(TOOLS)/cnitool $(TOOLS)/bridge $(TOOLS)/ptp $(TOOLS)/host-local $(TOOLS)/tuning $(TOOLS)/portmap $(KUBE_TOOLS)

$(TOOLS)/cnitool:
	GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/cni/cnitool@$(CNI_VERSION)
$(TOOLS)/bridge $(TOOLS)/ptp:
	GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/plugins/plugins/main/$(@F)@$(PLUGINS_VERSION)
$(TOOLS)/host-local:
	GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/plugins/plugins/ipam/host-local@$(PLUGINS_VERSION)
$(TOOLS)/tuning:
	GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/plugins/plugins/meta/tuning@$(PLUGINS_VERSION)
$(TOOLS)/portmap:
	GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/plugins/plugins/meta/portmap@$(PLUGINS_VERSION)

# A real kube-apiserver, etcd and kubectl for the tests that talk to
# Kubernetes, built from their own module (integration/kubetools) so that the
# product's go.mod never requires k8s.io/kubernetes. The first build takes
# ~10 min and ~3 GB; afterwards they are cached like cnitool.
kubetools: $(KUBE_TOOLS)
$(KUBE_TOOLS): integration/kubetools/go.mod integration/kubetools/go.sum
	cd integration/kubetools && CGO_ENABLED=0 GOBIN=$(TOOLS) $(GO) install -trimpath ./$(@F)

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w .

unit:
	$(GO) test -count=1 ./pkg/... ./plugin/... ./daemon/... ./conflist/...

# Everything: unit + kernel tests in throwaway namespaces + integration (root).
# The end-to-end packages run one at a time: their 1-second budgets (ready
# after the CNI interface appears, repair after drift) are promises about
# weft, not about a machine whose two cores run another suite too.
test: build tools vet
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -p 2 ./pkg/... ./plugin/... ./daemon/... ./conflist/...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -p 1 ./integration/...

integration: build tools
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./integration/...

demo: build tools
	$(GO) run ./integration/cmd/demo $(if $(BACKEND),-backend $(BACKEND))

clean:
	rm -rf $(BIN) .tools

# Fuzzing: each target for FUZZTIME (make test runs them for 5 s each).
FUZZTIME     ?= 10s
FUZZ_TARGETS := pkg/apiserver:FuzzDecodeEvent pkg/cniplugin:FuzzParseConfig pkg/config:FuzzParse pkg/cidrset:FuzzMerge
.PHONY: fuzz-short reliability
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== fuzz $$fn (./$$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg; \
	done
fuzz-short:
	$(MAKE) fuzz FUZZTIME=5s
test: fuzz-short

# Reliability, security and bad input, full form (make test runs the short form).
reliability: build tools
	WEFT_RELIABILITY=full $(GO) test -count=1 -timeout 20m -v ./integration/reliability/

# Benchmarks (root; not part of `make test`): weft next to its references in
# one run; one table on stdout, the rows in bench-results.json.
# BENCH_QUICK=1 for a short development run, BENCH_ONLY=1,3 for some figures.
bench: build tools
	WEFT_BENCH_COMMAND='make bench$(if $(BENCH_QUICK), BENCH_QUICK=1)$(if $(BENCH_ONLY), BENCH_ONLY=$(BENCH_ONLY))' \
		$(GO) run ./integration/bench/cmd/weftbench -v $(if $(BENCH_QUICK),-quick) $(if $(BENCH_ONLY),-only $(BENCH_ONLY)) -out bench-results.json
