# The two commands of the README. Everything else is cargo.
.PHONY: quickstart test tools

# Local repositories from the embedded examples, tier-0 synced, the result shown. No cluster needed.
quickstart:
	rm -rf target/quickstart
	PATH="$(CURDIR)/.tools/bin:$$PATH" cargo run -q -p shopctl -- quickstart target/quickstart

# Installs every tool the tests drive (idempotent), then runs every test.
test: tools
	cargo build --workspace --locked
	PATH="$(CURDIR)/.tools/bin:$$PATH" cargo test --workspace --locked --no-fail-fast

tools:
	e2e/install-tools
