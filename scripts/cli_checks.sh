#!/usr/bin/env bash
# Drives the `lora` binary as a user would: a merge that must succeed, and bad inputs that must
# each fail with exit code 1 and exactly one line on standard error. Run by .ci/run.
#   bash scripts/cli_checks.sh [path/to/lora]
set -uo pipefail
cd "$(dirname "$0")/.."
lora=${1:-.build/release/lora}
fx=Tests/LoRAKitTests/Fixtures/llama_tied
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

ok() { echo "ok: $1"; passed=$((passed + 1)); }
bad() { echo "FAILED: $1"; failed=$((failed + 1)); }

if "$lora" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/merged" >/dev/null \
    && [ -f "$tmp/merged/model.safetensors" ] && [ -f "$tmp/merged/config.json" ]; then
    ok "merge writes a model folder"
else
    bad "merge writes a model folder"
fi

# expect_error NAME EXPECTED_WORDS ARGS...
expect_error() {
    local name=$1 words=$2; shift 2
    "$lora" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "$words" "$tmp/err"; then
        ok "$name: $(cat "$tmp/err")"
    else
        bad "$name (exit $rc): $(cat "$tmp/err")"
    fi
}
expect_error "missing model folder" "does not exist" merge --model "$tmp/nope" --adapter-path $fx/adapter --output "$tmp/o1"
expect_error "output exists" "already exists" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/merged"
expect_error "bad dtype" "dtype" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/o2" --dtype f8
expect_error "adapter of another model" "has shape" merge --model Tests/LoRAKitTests/Fixtures/mistral_layers/model --adapter-path $fx/adapter --output "$tmp/o3"
mkdir -p "$tmp/pickle" && cp $fx/adapter/adapter_config.json "$tmp/pickle/" && echo junk >"$tmp/pickle/adapter_model.bin"
expect_error "pickled adapter" "pickle" merge --model $fx/model --adapter-path "$tmp/pickle" --output "$tmp/o4"
mkdir -p "$tmp/trunc" && cp $fx/adapter/adapter_config.json "$tmp/trunc/" && head -c 100 $fx/adapter/adapter_model.safetensors >"$tmp/trunc/adapter_model.safetensors"
expect_error "truncated safetensors" "adapter_model.safetensors" merge --model $fx/model --adapter-path "$tmp/trunc" --output "$tmp/o5"
[ ! -e "$tmp/o5" ] && ok "a failed merge leaves no output folder" || bad "a failed merge left $tmp/o5"

expect_error "gguf dtype" "q8_0" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/m.gguf" --format gguf --dtype bf16
expect_error "gguf from an HF base" "GGUF base" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/m.gguf" --format gguf
expect_error "unknown format" "format" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/m.x" --format onnx
expect_error "convert needs a gguf" "not a .gguf" convert --model $fx/model --output "$tmp/c"
LORA_CACHE="$tmp/empty-cache" expect_error "alias not fetched" "fetch_smollm2" convert --model smollm2-135m --output "$tmp/c"

expect_error "tokenizer missing" "tokenizer" tokenize --model $fx/model "hello"
expect_error "zero max tokens" "max-tokens" generate --model $fx/model --prompt hi --max-tokens 0

# With the real model (fetched by scripts/fetch_smollm2.sh), when present.
if "$lora" tokenize --model smollm2-135m --json "Hello, world" >"$tmp/tok" 2>"$tmp/err"; then
    if grep -q '"ids":\[19556,28,905\]' "$tmp/tok"; then ok "tokenize smollm2-135m"; else bad "tokenize smollm2-135m: $(cat "$tmp/tok")"; fi
    "$lora" generate --model smollm2-135m --prompt "The capital of France is" --max-tokens 20 >"$tmp/gen" 2>"$tmp/err"
    if [ "$(cat "$tmp/gen")" = "$(printf ' Paris.\n\nThe answer is: 2018-01-22 ')" ]; then ok "generate (greedy) prints transformers' text"; else bad "generate: $(cat "$tmp/gen")"; fi
    grep -q "tokens/s" "$tmp/err" && ok "generate reports tokens/s: $(cat "$tmp/err")" || bad "generate report: $(cat "$tmp/err")"
    "$lora" generate --model smollm2-135m --prompt "Count: one, two, three," --max-tokens 30 --stop "five" >"$tmp/gen" 2>/dev/null
    if "$lora" eval --model smollm2-135m --data Tests/LoRAKitTests/Fixtures/smollm2/eval.jsonl --json >"$tmp/eval" 2>"$tmp/err" \
        && grep -q '"tokens":47' "$tmp/eval"; then ok "eval --json: $(cat "$tmp/eval")"; else bad "eval: $(cat "$tmp/eval" "$tmp/err")"; fi
    # A short fine-tune that must lower the validation loss, then eval and generate with its adapter.
    mkdir -p "$tmp/data"
    for pair in "2 3" "4 5" "1 7" "6 2" "3 3" "8 1"; do
        set -- $pair
        printf '{"messages": [{"role": "user", "content": "What is %s plus %s?"}, {"role": "assistant", "content": "%s plus %s is %s."}]}\n' $1 $2 $1 $2 $(($1 + $2))
    done >"$tmp/data/train.jsonl"
    head -2 "$tmp/data/train.jsonl" >"$tmp/data/valid.jsonl"
    before=$("$lora" eval --model smollm2-135m --data "$tmp/data" --split valid --mask-prompt --json 2>/dev/null)
    if "$lora" train --model smollm2-135m --data "$tmp/data" --adapter-path "$tmp/adapter" --iters 4 --batch-size 3 \
            --learning-rate 2e-3 --mask-prompt --steps-per-report 2 --metrics-file "$tmp/metrics.jsonl" >"$tmp/train" 2>&1 \
        && [ -f "$tmp/adapter/adapter_model.safetensors" ] && [ "$(wc -l <"$tmp/metrics.jsonl")" -eq 2 ]; then
        after=$("$lora" eval --model smollm2-135m --data "$tmp/data" --split valid --mask-prompt --adapter-path "$tmp/adapter" --json 2>/dev/null)
        if python3 -c "import json,sys; b=json.loads(sys.argv[1])['loss']; a=json.loads(sys.argv[2])['loss']; sys.exit(0 if a < 0.5 * b else 1)" "$before" "$after"; then
            ok "train lowers the validation loss: before $before, after $after"
        else
            bad "train did not lower the validation loss: before $before, after $after"
        fi
    else
        bad "train: $(cat "$tmp/train")"
    fi
    expect_error "bad schedule" "lr-schedule" train --model smollm2-135m --data "$tmp/data" --lr-schedule step
    printf '{"text": "fine"}\n{"text": 5}\n' >"$tmp/bad.jsonl"
    expect_error "malformed data row" "bad.jsonl:2" eval --model smollm2-135m --data "$tmp/bad.jsonl"
    grep -q "five" "$tmp/gen" && bad "stop string printed: $(cat "$tmp/gen")" || ok "stop string ends the output before it: $(cat "$tmp/gen" | tr '\n' ' ')"
fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
