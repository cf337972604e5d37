#!/usr/bin/env bash
# Fuzzes the readers of outside input with libFuzzer and AddressSanitizer.
#   scripts/fuzz.sh [HARNESS|all] [RUNS]     (default: all 10000)
# FUZZ_MAX_SECONDS=N also stops each harness after N seconds (libFuzzer's -max_total_time); FUZZ_FLAGS
# adds libFuzzer flags (e.g. "-seed=1", or "-fork=1 -ignore_crashes=1" to go on past a known crash).
# Harnesses: safetensors gguf-header gguf tokenizer tokenize chat-template model-config adapter-config dataset
# yaml-config checkpoint (Sources/LoRAFuzzHarnesses). Each starts from the committed seeds in
# Fuzz/Seeds/HARNESS and grows a working corpus in $FUZZ_WORK/HARNESS (default: /tmp/lora-fuzz).
# A crash, a sanitizer report, an input slower than 1 s or a 2 GB process is a finding: its input is
# saved to $FUZZ_WORK/HARNESS-findings/ and the script exits 1 after the remaining harnesses.
# Replay a finding without sanitizers: swift run lora-fuzz HARNESS FILE.
set -euo pipefail
cd "$(dirname "$0")/.."

all=(safetensors gguf-header gguf tokenizer tokenize chat-template model-config adapter-config dataset yaml-config checkpoint)
which=${1:-all}
runs=${2:-10000}
work=${FUZZ_WORK:-/tmp/lora-fuzz}
if [[ $which == all ]]; then harnesses=("${all[@]}"); else harnesses=("$which"); fi

# The largest input worth trying, per harness: a little above its largest seed. Text for `tokenize`
# stops at 1 KB: its work grows with the length, a kilobyte already spans every pre-tokenizer split
# and regex branch of its seeds, and it quadruples the inputs per second of the 4 KB default.
max_len() {
    case $1 in
        tokenize) echo 1024 ;;
        gguf | gguf-header) echo 65536 ;;
        tokenizer) echo 24576 ;;
        safetensors | chat-template) echo 8192 ;;
        checkpoint) echo 32768 ;;
        *) echo 4096 ;;
    esac
}

scratch=.build-fuzz
log=$(mktemp)
# The debug configuration optimized with -O: ten times the inputs per second of -Onone, and Swift's
# checks stay on (the release configuration's -Ounchecked would hide overflows). --export-dynamic lets
# lora-fuzz find libFuzzer's LLVMFuzzerRunDriver.
if ! swift build --scratch-path "$scratch" --product lora-fuzz -Xswiftc -O \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -DLIBFUZZER -Xlinker --export-dynamic >"$log" 2>&1; then
    grep -v "Cannot export local symbol" "$log" | tail -40
    exit 1
fi
binary=$scratch/debug/lora-fuzz

failed=0
for name in "${harnesses[@]}"; do
    [[ -d Fuzz/Seeds/$name ]] || { echo "unknown harness $name (harnesses: ${all[*]})"; exit 2; }
    mkdir -p "$work/$name" "$work/$name-findings"
    start=$(date +%s)
    status=0
    # Swift's own backtracer off, so libFuzzer reports a trap with its stack and saves the input.
    LORA_FUZZ_HARNESS=$name ASAN_OPTIONS=detect_leaks=0 SWIFT_BACKTRACE=enable=no "$binary" "$work/$name" "Fuzz/Seeds/$name" \
        -runs="$runs" -timeout=1 -rss_limit_mb=2048 -max_len="$(max_len "$name")" -detect_leaks=0 \
        -max_total_time="${FUZZ_MAX_SECONDS:-0}" -print_final_stats=1 -artifact_prefix="$work/$name-findings/" ${FUZZ_FLAGS:-} \
        >"$log" 2>&1 || status=$?
    seconds=$(( $(date +%s) - start ))
    executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    # Fork mode prints no final stats: its last status line counts the inputs.
    [[ -n $executed ]] || executed=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    slowest=$(sed -n 's/^stat::slowest_unit_time_sec: *//p' "$log")
    if [[ $status == 0 ]]; then
        result=ok
    else
        failed=1
        finding=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
        reason=$(grep -oE 'Fatal error: .*|ERROR: [A-Za-z]+: [a-z -]+|timeout after [0-9]+ seconds|out-of-memory' "$log" | head -1 || true)
        # The first frame in the library, else in the harnesses.
        at=$(grep -oE 'Sources/LoRA(Kit|Formats|Tokenizers)/[A-Za-z0-9/+_-]+\.swift:[0-9]+' "$log" | head -1 || true)
        [[ -n $at ]] || at=$(grep -oE 'Sources/[A-Za-z0-9/+_-]+\.swift:[0-9]+' "$log" | head -1 || true)
        result="FINDING (${reason:-exit $status}${at:+ at $at}): ${finding:-see log}"
        cp "$log" "$work/$name-findings/last.log"
    fi
    printf '%-15s %10s inputs %6s s  slowest %ss  %s\n' "$name" "${executed:-?}" "$seconds" "${slowest:-?}" "$result"
done
rm -f "$log"
exit $failed
