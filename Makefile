# weft — build, test, demo. `make test` and `make demo` need root (network namespaces).
# `make demo TOPOLOGY=kubernetes` runs the demo with a real API server per cluster (needs make kubetools);
# add ENDPOINTS=weft for weft's own control plane (elected gateways, a broker) and a failover.
GO        ?= go
BIN       := bin
TOOLS     := $(CURDIR)/.tools/bin
CNI_VERSION     := v1.3.0
PLUGINS_VERSION := v1.9.0
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
TEST_TIMEOUT ?= 14m
KUBE_TOOLS := $(TOOLS)/kube-apiserver $(TOOLS)/etcd $(TOOLS)/kubectl \
	$(TOOLS)/kubelet $(TOOLS)/kube-controller-manager $(TOOLS)/kube-scheduler

export WEFT_BIN_DIR   := $(CURDIR)/$(BIN)
export WEFT_TOOLS_DIR := $(TOOLS)

.PHONY: all build image tools kubetools test unit integration e2e demo vet fmt clean bench fuzz

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/weft ./plugin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/weftd ./daemon

# weft's image as an OCI archive, without a container engine (the
# Dockerfile, for machines with one, makes the same content): the static
# weftd and weft over what the iptables backend execs (iptables-legacy/nft
# -save/-restore), unpacked from Debian's iptables package and its
# dependencies down to libc6 (integration/debroot; the .debs are cached in
# $(DEB_CACHE)). Also a pause image from a static Go binary, for containerd
# nodes without a registry (the end-to-end cluster). `ctr -n k8s.io images
# import` reads both.
IMAGE_REPO ?= ghcr.io/weft-net/weft
IMAGE_TAG  ?= v0.1.0
IMAGE_DEBS ?= iptables
DEB_CACHE  := $(CURDIR)/.tools/debs
image: build
	sh integration/debroot/debroot.sh $(DEB_CACHE) $(BIN)/image-root $(IMAGE_DEBS)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/pause ./integration/cmd/pause
	$(GO) run ./integration/cmd/ociimage -o $(BIN)/weft-image.tar -ref $(IMAGE_REPO):$(IMAGE_TAG) \
		-entrypoint weftd -cmd run,--config=/etc/weft/weft.yaml -tree $(BIN)/image-root \
		$(BIN)/weftd:/usr/local/bin/weftd $(BIN)/weft:/usr/local/bin/weft
	$(GO) run ./integration/cmd/ociimage -o $(BIN)/pause-image.tar -ref registry.k8s.io/pause:3.10 \
		-entrypoint /pause $(BIN)/pause:/pause

# cnitool and the reference plugins, pinned, built from the Go module proxy.
tools: $(TOOLS)/cnitool $(TOOLS)/bridge $(TOOLS)/ptp $(TOOLS)/host-local $(TOOLS)/tuning $(TOOLS)/portmap $(TOOLS)/loopback $(KUBE_TOOLS)

$(TOOLS)/cnitool:
	GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/cni/cnitool@$(CNI_VERSION)
$(TOOLS)/bridge $(TOOLS)/ptp $(TOOLS)/loopback:
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
# Rebuilt when the module's content changes, not its mtime: a fresh
# checkout or a git worktree sharing .tools must not relink them (a
# rebuild takes ~10 min, and a relink under running tests once broke them).
KUBE_STAMP := $(TOOLS)/.kubetools-$(shell cat integration/kubetools/go.mod integration/kubetools/go.sum | sha256sum | cut -c1-16)
kubetools: $(KUBE_TOOLS)
$(KUBE_STAMP):
	mkdir -p $(TOOLS)
	rm -f $(TOOLS)/.kubetools-*
	touch $@
$(KUBE_TOOLS): $(KUBE_STAMP)
	mkdir -p $(TOOLS)
	cd integration/kubetools && CGO_ENABLED=0 $(GO) build -trimpath -o $@.tmp ./$(@F)
	mv -f $@.tmp $@

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

# weft on a real cluster (root): kube-apiserver, controller-manager,
# scheduler, and nodes running containerd and the kubelet; weft installed by
# `kubectl apply -f daemon/deploy/`, removed as the README says. Needs `make
# kubetools tools` once and Debian's containerd and runc (.ci/run installs
# them); missing pieces fail the test, they are not skipped.
E2E_TIMEOUT ?= 10m
e2e: image
	WEFT_E2E=1 $(GO) test -count=1 -timeout $(E2E_TIMEOUT) -v -run '$(or $(E2E_RUN),.)' ./integration/kubecluster/

# CLUSTER=real: two real Kubernetes clusters, weft from daemon/deploy/ (needs
# what make e2e needs); with TOPOLOGY=kubernetes weft runs in topology:
# kubernetes mode there (Node objects, Submariner Endpoints). TOPOLOGY=kubernetes
# ENDPOINTS=weft: weft's own control plane (gateways elected on the Lease, a
# broker API server) and a gateway failover with its probe gap (netns only).
# DUALSTACK=1: dual-stack clusters (weft's VXLAN over the IPv4 underlay), the
# matrix over IPv4 and over IPv6; FAMILY=ipv6: IPv6-only clusters on an IPv6
# underlay (netns, file topology).
demo: build tools $(if $(filter real,$(CLUSTER)),image)
	$(GO) run ./integration/cmd/demo $(if $(BACKEND),-backend $(BACKEND)) $(if $(CLUSTER),-cluster $(CLUSTER)) $(if $(TOPOLOGY),-topology $(TOPOLOGY)) $(if $(ENDPOINTS),-endpoints $(ENDPOINTS)) $(if $(DUALSTACK),-family dual) $(if $(FAMILY),-family $(FAMILY))

clean:
	rm -rf $(BIN) .tools

# Fuzzing: each target for FUZZTIME (make test runs them for 5 s each).
FUZZTIME     ?= 10s
FUZZ_TARGETS := pkg/apiserver:FuzzDecodeEvent pkg/cniplugin:FuzzParseConfig pkg/config:FuzzParse pkg/config:FuzzPlainYAML pkg/cidrset:FuzzMerge pkg/pathprobe:FuzzDecode
.PHONY: fuzz-short reliability
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== fuzz $$fn (./$$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg; \
	done
# A count, not a duration: Go 1.26's fuzz coordinator can fail a target with
# "context deadline exceeded" when a duration ends while a starved worker is
# mid-exec (golang/go#75804, fixed in 1.27); a count has no deadline to race.
fuzz-short:
	$(MAKE) fuzz FUZZTIME=60000x
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
