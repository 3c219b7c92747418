#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the multi-DC
# end-to-end scenarios against real mariadbd and redis-server processes that
# the tests start themselves on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
