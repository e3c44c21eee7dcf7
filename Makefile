# The two commands of the README. Everything else is cargo.
.PHONY: quickstart test tools fuzz-smoke

# Local repositories from the embedded examples, tier-0 synced, the result shown. No cluster needed.
quickstart:
	rm -rf target/quickstart
	PATH="$(CURDIR)/.tools/bin:$$PATH" cargo run -q -p shopctl -- quickstart target/quickstart

# Installs every tool the tests drive (idempotent), then runs every test.
test: tools
	cargo build --workspace --locked
	PATH="$(CURDIR)/.tools/bin:$$PATH" cargo test --workspace --locked --no-fail-fast
	$(MAKE) fuzz-smoke

# Every fuzz target for FUZZ_SECONDS (default 30) each, with nightly and cargo-fuzz (installed on first use).
fuzz-smoke:
	fuzz/run

tools:
	e2e/install-tools
