#!/usr/bin/env bash
# Runs the cargo-fuzz target over the request parsing and validation layer for a while, on
# stable Rust (no sanitizer): `scripts/fuzz-smoke.sh [SECONDS]` (default 20). Installs
# cargo-fuzz when it is missing. A crash leaves its input in fuzz/artifacts/parse_requests/ and
# fails the script; replay it with
#   cd fuzz && cargo fuzz run parse_requests -s none fuzz/artifacts/parse_requests/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null 2>&1; then
    echo "libFuzzer needs a C++ compiler (e.g. apt-get install g++)" >&2
    exit 1
fi

echo "== fuzzing parse_requests for ${seconds}s"
cd fuzz
mkdir -p corpus/parse_requests
# -s none: no sanitizer, so it builds on stable; the target's own assertions and Rust's
# bounds/overflow checks (kept on in fuzz/Cargo.toml's release profile) do the checking.
# seeds/ holds a few hand-written inputs (one per request type); corpus/ is what the runs learn.
cargo fuzz run parse_requests -s none corpus/parse_requests seeds/parse_requests -- \
    -max_total_time="$seconds" -max_len=4096
