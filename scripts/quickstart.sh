#!/usr/bin/env bash
# The README quickstart: fine-tunes SmolLM2-135M-Instruct with LoRA to turn a one-sentence event
# note into a JSON object (data/quickstart, made by scripts/make_quickstart_data.py), then prints the
# base and the adapted model's answers to held-out notes, and the validation loss before and after.
#
#   bash scripts/quickstart.sh                              # builds .build/release/lora first
#   LORA=path/to/lora bash scripts/quickstart.sh            # uses that binary, no build
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LORA:-}" ]; then
    swift build -c release
    LORA=.build/release/lora
fi
bash scripts/fetch_smollm2.sh >/dev/null
M=smollm2-135m D=data/quickstart A=adapters/quickstart
SHOW="5 7 15 19"   # the rows of test.jsonl shown side by side

valid_loss() {
    "$LORA" eval --model $M --data $D --split valid --mask-prompt --json "$@" |
        python3 -c 'import json, sys; print("%.4f" % json.load(sys.stdin)["loss"])'
}
generate() {  # the answer on one line; the speed report goes to a log, shown only on failure
    "$LORA" generate --model $M --chat --max-tokens 60 --prompt "$@" </dev/null 2>"$A/generate.log" | paste -sd ' ' ||
        { cat "$A/generate.log" >&2; return 1; }
}

echo "== validation loss of the base model"
before=$(valid_loss)
echo "$before"

echo "== training the LoRA adapter"
"$LORA" train --model $M --data $D --adapter-path $A --mask-prompt --max-seq-length 128 \
    --iters 150 --batch-size 4 --learning-rate 5e-4 --lr-schedule cosine --warmup 10 --rank 8 --alpha 16 \
    --steps-per-eval 50

echo "== validation loss with the adapter"
after=$(valid_loss --adapter-path $A)
echo "$after"

echo
echo "== held-out notes (data/quickstart/test.jsonl), base vs adapted"
for n in $SHOW; do
    note=$(sed -n "${n}p" $D/test.jsonl | python3 -c 'import json, sys; print(json.load(sys.stdin)["messages"][0]["content"])')
    base=$(generate "$note")
    adapted=$(generate "$note" --adapter-path $A)
    printf '\nnote:     %s\nbase:     %s\nadapted:  %s\n' "$note" "$base" "$adapted"
done
echo
python3 -c 'import sys; b, a = map(float, sys.argv[1:]); print(f"validation loss: base {b:.4f} -> adapted {a:.4f} ({b - a:.4f} lower, {b / a:.0f}x)")' "$before" "$after"
