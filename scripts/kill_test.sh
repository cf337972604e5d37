#!/usr/bin/env bash
# The kill test: trains the tiny chat model with a save after every step, SIGKILLs it N times at
# random moments (during startup, steps and saves), and after each kill checks with `lora inspect`
# that the adapter folder holds a loadable checkpoint and adapter of the same step (or, before the
# first save, neither); then resumes with --resume. At the end the adapter must equal, bit for bit,
# the adapter of the same run left uninterrupted.
#   bash scripts/kill_test.sh [N=50] [path/to/lora]
set -uo pipefail
cd "$(dirname "$0")/.."
kills=${1:-50}
lora=${2:-.build/release/lora}
tiny=Tests/LoRAKitTests/Fixtures/tiny_chat
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/data"
for i in $(seq 1 24); do
    printf '{"messages": [{"role": "user", "content": "word %d"}, {"role": "assistant", "content": "the word is %d"}]}\n' $i $i
done >"$tmp/data/train.jsonl"
iters=$((kills * 8 + 40))
args=(--model $tiny --data "$tmp/data" --iters $iters --batch-size 4 --learning-rate 1e-3 --mask-prompt --rank 4 --dropout 0.1
      --save-every 1 --steps-per-report 1000)

"$lora" train "${args[@]}" --adapter-path "$tmp/whole" >"$tmp/log" 2>&1 || { echo "FAILED: the uninterrupted run: $(tail -2 "$tmp/log")"; exit 1; }

fail() { echo "FAILED after kill $killed: $1"; exit 1; }
killed=0 early=0 pending=0 committed=0 resume=() steps=()
while [ $killed -lt $kills ]; do
    "$lora" train "${args[@]}" --adapter-path "$tmp/run" "${resume[@]}" >"$tmp/log" 2>&1 &
    pid=$!
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.3f", r / 32767 * 0.3 }')"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    rc=$?
    if [ $rc -ne 137 ]; then
        # The run ended before the kill: it must have finished, and then it starts over.
        [ $rc -eq 0 ] || fail "the run failed by itself (exit $rc): $(tail -2 "$tmp/log")"
        cmp -s "$tmp/whole/adapter_model.safetensors" "$tmp/run/adapter_model.safetensors" || fail "a run that finished differs"
        early=$((early + 1)); rm -rf "$tmp/run"; resume=(); continue
    fi
    killed=$((killed + 1))
    # A kill during a save leaves its staging folder: before the commit (discarded) or after (finished).
    [ -e "$tmp/run/.save-pending" ] && pending=$((pending + 1))
    [ -e "$tmp/run/.save-committed" ] && committed=$((committed + 1))
    if "$lora" inspect "$tmp/run" >"$tmp/inspect" 2>&1; then
        line=$(grep "training step" "$tmp/inspect")
        a=$(sed -n 's/^ *training step *\([0-9]*\) (checkpoint: step \([0-9]*\))$/\1/p' <<<"$line")
        c=$(sed -n 's/^ *training step *\([0-9]*\) (checkpoint: step \([0-9]*\))$/\2/p' <<<"$line")
        [ -n "$a" ] && [ "$a" = "$c" ] || fail "adapter and checkpoint disagree: '$line'"
        steps+=("$a")
        resume=(--resume)
    else
        # Killed before its first save completed: neither file may be there.
        [ ! -e "$tmp/run/adapter_model.safetensors" ] && [ ! -e "$tmp/run/checkpoint.safetensors" ] \
            || fail "inspect fails on a folder with files: $(cat "$tmp/inspect")"
        steps+=("-")
        resume=()
    fi
done

"$lora" train "${args[@]}" --adapter-path "$tmp/run" "${resume[@]}" >"$tmp/log" 2>&1 || fail "the last resume: $(tail -2 "$tmp/log")"
cmp "$tmp/whole/adapter_model.safetensors" "$tmp/run/adapter_model.safetensors" || fail "the resumed adapter differs from the uninterrupted one"
echo "steps saved at each kill: ${steps[*]}"
echo "ok: $killed SIGKILLs ($pending while writing a save, $committed between a save's commit and its end; $early runs finished" \
     "before their kill), each leaving an adapter and checkpoint of the same step;" \
     "resumed to step $iters, the adapter is bit-identical to the uninterrupted run's"
