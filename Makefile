# The two commands of the README, and the longer runs beside them. Everything else is cargo.
.PHONY: quickstart test tools lint fuzz

# The tests need the controller's fault-injection points (crash tests); release builds have none.
FEATURES := --features shopset-controller/fault-injection

# Local repositories from the embedded examples, tier-0 synced, the result shown. No cluster needed.
quickstart:
	rm -rf target/quickstart
	PATH="$(CURDIR)/.tools/bin:$$PATH" cargo run -q -p shopctl -- quickstart target/quickstart

# Where cargo builds: CARGO_TARGET_DIR as cargo reads it, else target/.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

# Installs every tool the tests drive (idempotent), checks format and lints, then runs every test:
# `cargo test --workspace`, with three test binaries at a time (TEST_JOBS) rather than one.
TEST_JOBS ?= 3
test: tools lint
	cargo build --workspace --locked $(FEATURES)
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(TARGET_DIR)/debug/test-suite --jobs $(TEST_JOBS) --locked $(FEATURES)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked $(FEATURES) -- -D warnings

# Every fuzz target for FUZZ_SECONDS (default 30) each, with nightly and cargo-fuzz (installed on first use).
# The committed corpus is replayed by `make test` on stable; this is the fuzzing itself.
fuzz:
	fuzz/run

tools:
	e2e/install-tools
