#!/usr/bin/env bash
# Fuzzes every parser of outside input (the targets in fuzz/, cargo fuzz
# with libFuzzer on the nightly toolchain): each target runs for SECONDS
# (default 30) from the seeds kept in fuzz/seeds/TARGET. The corpus it grows
# goes to a temporary folder, removed at the end: only the seeds are kept
# in the repository.
#
#   scripts/fuzz.sh [SECONDS]
#
# Exits non-zero if any target crashes, runs out of memory or hangs on one
# input (10 s); the input is kept under target/fuzz-artifacts/RUN/ and the
# line that replays it is printed. Needs cargo-fuzz and the nightly toolchain
# (scripts/deps.sh installs cargo-fuzz when it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

die() {
    echo "fuzz.sh: $*" >&2
    exit 2
}

seconds=${1:-30}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive whole number, not '$seconds'"
command -v cargo-fuzz >/dev/null 2>&1 || die "cargo-fuzz is not installed (scripts/deps.sh installs it)"
rustup run nightly rustc --version >/dev/null 2>&1 || die "the nightly toolchain is not installed"

root=$PWD
# One folder a run, so that a failure names only its own inputs.
keep=$root/target/fuzz-artifacts/$(date +%Y%m%d-%H%M%S)
work=$(mktemp -d /tmp/kvmroll-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$keep"

# Debug assertions and overflow checks on (cargo fuzz leaves them off in
# its optimised builds): an overflow is a bug to find. 16 codegen units
# rebuild a changed kvmroll-core in a fraction of the time of one.
build_opts=(--debug-assertions --codegen-units 16)

cd fuzz
mapfile -t targets < <(cargo +nightly fuzz list)
[ "${#targets[@]}" -gt 0 ] || die "no fuzz targets in fuzz/"
start=$(date +%s)
echo "fuzz: building ${#targets[@]} targets"
cargo +nightly fuzz build "${build_opts[@]}" >"$work/build.log" 2>&1 || {
    tail -n 30 "$work/build.log" >&2
    die "cargo fuzz build failed"
}
echo "fuzz: built in $(($(date +%s) - start)) s; ${seconds} s per target"

failed=()
for t in "${targets[@]}"; do
    [ -d "seeds/$t" ] || die "no seeds for target $t (fuzz/seeds/$t)"
    mkdir -p "$work/corpus/$t"
    log=$work/$t.log
    # The first folder takes what libFuzzer finds; the seeds are only read.
    if cargo +nightly fuzz run "${build_opts[@]}" "$t" "$work/corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$keep/$t-" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
        echo "fuzz: $t: ${runs:-?} runs, no crash"
    else
        failed+=("$t")
        echo "fuzz: $t FAILED:" >&2
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -n 10 >&2 || tail -n 20 "$log" >&2
        for a in "$keep/$t-"*; do
            [ -e "$a" ] && echo "fuzz:   replay: (cd fuzz && cargo +nightly fuzz run ${build_opts[*]} $t $a)" >&2
        done
    fi
done
echo "fuzz: done in $(($(date +%s) - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
    exit 1
fi
rmdir "$keep" 2>/dev/null || true
