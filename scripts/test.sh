#!/usr/bin/env bash
# toolgate's whole test suite, as CI runs it (.ci/run calls this script).
#
# 1. installs what the tests need: Debian packages when missing, Python packages into .venv,
#    npm packages into node_modules (pinned, from package-lock.json);
# 2. checks formatting and lints;
# 3. starts a private Redis and PostgreSQL on loopback (scripts/services.sh), which the
#    shared-state tests use;
# 4. builds the workspace and runs the Rust tests;
# 5. runs the end-to-end tests (real MCP clients and servers, the official conformance suite).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "test dependencies"
bash scripts/setup-test-deps.sh

step "Redis and PostgreSQL (private, on loopback)"
services_dir="$(mktemp -d /tmp/toolgate-services.XXXXXX)"
trap 'bash scripts/services.sh stop "$services_dir"; rm -rf "$services_dir"' EXIT
eval "$(bash scripts/services.sh start "$services_dir")"

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --locked

step "Rust tests"
cargo test --workspace --locked

step "end-to-end tests"
.venv/bin/python -m pytest "$@"
