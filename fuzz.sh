#!/usr/bin/env bash
# libFuzzer on every decoder that reads outside bytes, on stable Rust.
#
#   ./fuzz.sh [--seconds S | --runs N] [TARGET ...]
#
# Builds each target with the coverage instrumentation cargo-fuzz adds (no
# sanitizer: the decoders are safe Rust; debug assertions and overflow checks
# on), then runs it from its committed seeds (<crate>/fuzz/seeds/TARGET) plus
# what earlier runs found (<crate>/fuzz/corpus/TARGET, not committed). A crash
# stops the script with a non-zero status and leaves the input in
# <crate>/fuzz/artifacts/TARGET/. Default: every target for 60 seconds.
# Targets: gallery_decode, model_blob (shared/fuzz); script_line,
# model_metadata, door_image (firmware/fuzz).
set -euo pipefail
cd "$(dirname "$0")"

limit=(-max_total_time=60)
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) limit=("-max_total_time=${2:?--seconds needs a number}"); shift 2 ;;
    --runs) limit=("-runs=${2:?--runs needs a number}"); shift 2 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(gallery_decode model_blob script_line model_metadata door_image)

crate_of() {
    case "$1" in
    gallery_decode | model_blob) echo shared/fuzz ;;
    script_line | model_metadata | door_image) echo firmware/fuzz ;;
    *) echo "unknown fuzz target $1 (gallery_decode, model_blob, script_line, model_metadata, door_image)" >&2; return 1 ;;
    esac
}

host=$(rustc -vV | sed -n 's/^host: //p')
# What cargo-fuzz passes, less its sanitizer; --target keeps build scripts
# and proc macros uninstrumented.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
for t in "${targets[@]}"; do
    dir=$(crate_of "$t")
    printf '\n== %s (%s): build\n' "$t" "$dir"
    cargo build --release --quiet --manifest-path "$dir/Cargo.toml" --target "$host" --bin "$t"
    mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
    printf '== %s: run (%s)\n' "$t" "${limit[*]}"
    log="$dir/artifacts/$t/last-run.log"
    status=0
    "$dir/target/$host/release/$t" "$dir/corpus/$t" "$dir/seeds/$t" "${limit[@]}" \
        -artifact_prefix="$dir/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units|==[0-9]+== ERROR|SUMMARY)|panicked|Test unit written' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 30 "$log" >&2
        echo "fuzz target $t failed (status $status): its input is in $dir/artifacts/$t/, the log in $log" >&2
        exit 1
    fi
done
