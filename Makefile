# The README's commands. `make test` is what CI runs.

.PHONY: test test-deps fmt-check clippy doc unit bench bench-proxy bench-scale bench-apps

test: test-deps fmt-check clippy doc unit

# Installs what the tests need (a real redis-server, Prometheus and promtool,
# Node.js, Python) when it is missing, then the pinned WeChat SDKs the SDK
# tests drive (under target/sdk; quick when already there).
test-deps:
	@scripts/install-test-deps.sh
	@scripts/install-sdks.sh

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --all-targets --locked -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked

unit:
	cargo test --locked

bench:
	scripts/bench.sh
	mkdir -p docs/bench
	scripts/bench_proxy.sh | tee docs/bench/forwarding.md

# The forwarding case alone: the proxy against nginx's proxy_pass.
bench-proxy:
	mkdir -p docs/bench
	scripts/bench_proxy.sh | tee docs/bench/forwarding.md

# The Open Platform at scale: 10,000 authorizers in one broker
# (docs/open-platform.md shows the figures); and a WeCom suite with
# 10,000 installed corps (docs/wecom-providers.md).
bench-scale:
	cargo build --release --locked --bin wxbroker --example platform_scale --example suite_scale
	mkdir -p docs/bench
	target/release/examples/platform_scale --authorizers 10000 | tee docs/bench/platform-scale.md
	target/release/examples/suite_scale --corps 10000 | tee docs/bench/suite-scale.md

# The cost of a configured app: 10,000 classic apps in one broker against
# one, memory and /metrics series per app, scrape time (a few minutes:
# the daemon's quota poll runs a minute after start).
bench-apps:
	cargo build --release --locked --bin wxbroker --example app_scale
	mkdir -p docs/bench
	target/release/examples/app_scale --apps 10000 | tee docs/bench/app-scale.md
