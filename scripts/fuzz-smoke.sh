#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while, on stable Rust (no sanitizer):
#
#   scripts/fuzz-smoke.sh [SECONDS]     each target SECONDS (default 10: the test command's smoke run)
#   FUZZ_TARGETS="grpc_web pow_solution" scripts/fuzz-smoke.sh 600    some targets, longer
#
# Installs cargo-fuzz when it is missing. Each target starts from its seeds (fuzz/seeds/<target>,
# committed, small) and the corpus earlier runs grew (fuzz/corpus/<target>, not committed). A
# crash leaves its input in fuzz/artifacts/<target>/ and fails the script; replay it with
#   cd fuzz && cargo fuzz run <target> -s none --dev artifacts/<target>/<file>
# then add the input to fuzz/seeds/<target>/ once fixed, so every later run tries it first.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null 2>&1; then
    echo "libFuzzer needs a C++ compiler (e.g. apt-get install g++)" >&2
    exit 1
fi

cd fuzz
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
# -s none: no sanitizer, so it builds on stable; the targets' own assertions and Rust's
# bounds/overflow checks do the checking. --dev: the debug profile (debug assertions and
# overflow checks on) builds in about half the time of an optimized one, which is what a
# smoke run in the test command needs; a long run may prefer the default release build
# (FUZZ_RELEASE=1).
profile=(--dev)
if [[ -n ${FUZZ_RELEASE:-} ]]; then
    profile=()
fi
echo "== building the fuzz targets (${profile[*]:-release})"
cargo fuzz build -s none "${profile[@]}"
failed=()
for target in $targets; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "corpus/$target"
    if ! cargo fuzz run "$target" -s none "${profile[@]}" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 2>"corpus/$target.log"; then
        tail -40 "corpus/$target.log" >&2
        failed+=("$target")
    else
        grep -E 'stat::number_of_executed_units|stat::new_units_added' "corpus/$target.log" \
            | sed "s/^/   $target: /" || true
    fi
done
if (( ${#failed[@]} )); then
    echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "== every fuzz target ran ${seconds}s without a failure"
