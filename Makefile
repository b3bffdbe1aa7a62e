# pgvpd — the targets CI calls (.ci/run runs `make test`).
#   make build        debug build
#   make test         check + unit tests + integration, TLS, pool, transaction and resolver suites + fuzz regressions
#   make check        fmt, clippy -D warnings, purity grep of the pure layers
#   make demo         throw-away PostgreSQL + release proxy, two tenants, Ctrl-C to stop
#   make static       fully static musl release binary + size report
#   make fuzz-smoke   every fuzz target for 30 s (installs cargo-fuzz if missing)
#   make bench        release benchmark (tests/bench.rs); BENCH_ARGS=... passed through
#   make audit        duplicate crates and runtime dependency count
# Integration tests need PostgreSQL server binaries (initdb, postgres); they
# fail loudly, never skip, when those are missing (.ci/run installs them).

CARGO ?= cargo
MUSL  := x86_64-unknown-linux-musl
PURE  := src/protocol src/auth
BENCH_ARGS ?=

.PHONY: all build test check unit it fuzz-regressions demo static fuzz-smoke bench audit

all: build

build:
	$(CARGO) build

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --test demo --test bench -- -D warnings
	@for d in $(PURE); do test -d $$d || { echo "purity check: $$d missing"; exit 1; }; done
	@if grep -rnE 'std::net|mio::|Instant::now|std::fs' $(PURE); then \
		echo "purity check failed: the lines above use I/O or the clock in a pure module"; exit 1; \
	else echo "purity check: $(PURE) clean"; fi

# Same as `cargo test` (lib + bin unit tests, doc tests, every test target with
# test = true), spelled out so each part is visible in CI logs.
unit:
	$(CARGO) test --lib --bins
	$(CARGO) test --doc

fuzz-regressions:
	$(CARGO) test --test fuzz_regressions

it:
	$(CARGO) test --test integration
	$(CARGO) test --test tls
	PGVPD_CASE_TIMEOUT=$${PGVPD_CASE_TIMEOUT:-300} $(CARGO) test --test pool
	PGVPD_CASE_TIMEOUT=$${PGVPD_CASE_TIMEOUT:-300} $(CARGO) test --test txn
	$(CARGO) test --test resolvers
	$(CARGO) test --test tenants
	$(CARGO) test --test timeouts
	$(CARGO) test --test fair
	$(CARGO) test --test admin

test: check unit fuzz-regressions it

# Builds the release proxy (cargo builds bins for test targets) and runs the demo.
demo:
	$(CARGO) test --release --test demo

static:
	@rustup target list --installed | grep -qx $(MUSL) || rustup target add $(MUSL)
	CC_x86_64_unknown_linux_musl=gcc $(CARGO) build --release --target $(MUSL)
	ls -l target/$(MUSL)/release/pgvpd
	file target/$(MUSL)/release/pgvpd

fuzz-smoke:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@set -e; ls fuzz/fuzz_targets/*.rs >/dev/null; \
	for f in fuzz/fuzz_targets/*.rs; do \
		t=$$(basename $$f .rs); \
		echo "== fuzz $$t (30 s)"; \
		(cd fuzz && $(CARGO) fuzz run -s none $$t -- -max_total_time=30); \
	done

bench:
	$(CARGO) test --release --test bench -- $(BENCH_ARGS)

audit:
	$(CARGO) tree -d
	@echo "runtime dependency tree lines: $$($(CARGO) tree -e normal | wc -l)"
