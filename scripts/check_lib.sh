# Shared by the CLI check scripts: a scratch folder, ok/bad counters, and expect_error, which runs
# `lora ARGS...` and requires exit code 1 with exactly one line on standard error holding WORDS.
# Source it after setting $lora; call finish at the end.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAILED: $1"; failed=$((failed + 1)); }

# expect_error NAME EXPECTED_WORDS ARGS...
expect_error() {
    local name=$1 words=$2; shift 2
    "$lora" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q -- "$words" "$tmp/err"; then
        ok "$name: $(cat "$tmp/err")"
    else
        bad "$name (exit $rc): $(cat "$tmp/err")"
    fi
}

# word_data DIR: a tiny chat data set for the tiny models, 24 training and 4 validation rows.
word_data() {
    mkdir -p "$1"
    local i
    for i in $(seq 1 24) 30 31 32 33; do
        printf '{"messages": [{"role": "user", "content": "word %d"}, {"role": "assistant", "content": "the word is %d"}]}\n' $i $i
    done >"$1/all.jsonl"
    head -24 "$1/all.jsonl" >"$1/train.jsonl"
    tail -4 "$1/all.jsonl" >"$1/valid.jsonl"
    rm "$1/all.jsonl"
}

finish() {
    echo "$passed passed, $failed failed"
    [ $failed -eq 0 ]
}
