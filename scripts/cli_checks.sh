#!/usr/bin/env bash
# Drives the `lora` binary as a user would: a merge that must succeed, and bad inputs that must
# each fail with exit code 1 and exactly one line on standard error. Run by .ci/run.
#   bash scripts/cli_checks.sh [path/to/lora]
set -uo pipefail
cd "$(dirname "$0")/.."
lora=${1:-.build/release/lora}
fx=Tests/LoRAKitTests/Fixtures/llama_tied
source scripts/check_lib.sh

if "$lora" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/merged" >/dev/null \
    && [ -f "$tmp/merged/model.safetensors" ] && [ -f "$tmp/merged/config.json" ]; then
    ok "merge writes a model folder"
else
    bad "merge writes a model folder"
fi

expect_error "missing model folder" "not found" merge --model "$tmp/nope" --adapter-path $fx/adapter --output "$tmp/o1"
expect_error "output exists" "already exists" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/merged"
expect_error "bad dtype" "dtype" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/o2" --dtype f8
expect_error "adapter of another model" "has shape" merge --model Tests/LoRAKitTests/Fixtures/mistral_layers/model --adapter-path $fx/adapter --output "$tmp/o3"
mkdir -p "$tmp/pickle" && cp $fx/adapter/adapter_config.json "$tmp/pickle/" && echo junk >"$tmp/pickle/adapter_model.bin"
expect_error "pickled adapter" "pickle" merge --model $fx/model --adapter-path "$tmp/pickle" --output "$tmp/o4"
mkdir -p "$tmp/trunc" && cp $fx/adapter/adapter_config.json "$tmp/trunc/" && head -c 100 $fx/adapter/adapter_model.safetensors >"$tmp/trunc/adapter_model.safetensors"
expect_error "truncated safetensors" "adapter_model.safetensors" merge --model $fx/model --adapter-path "$tmp/trunc" --output "$tmp/o5"
[ ! -e "$tmp/o5" ] && ok "a failed merge leaves no output folder" || bad "a failed merge left $tmp/o5"

expect_error "gguf dtype" "base, f32, f16, q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0 (got bf16)" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/m.gguf" --format gguf --dtype bf16
expect_error "gguf from an HF base" "GGUF base" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/m.gguf" --format gguf
# merge by extension: an output ending in .gguf asks for a GGUF (from an HF base, refused as above).
expect_error "merge by extension" "GGUF base" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/m.gguf"
expect_error "merge by extension: q4_k is a gguf dtype" "GGUF base" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/m.gguf" --dtype q4_k
expect_error "--format hf with a .gguf output" "ends in .gguf but --format hf writes a folder" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/m.gguf" --format hf
expect_error "unknown format" "format" merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/m.x" --format onnx
expect_error "convert needs a gguf" "not a .gguf" convert --model $fx/model --output "$tmp/c"
LORA_CACHE="$tmp/empty-cache" expect_error "alias not fetched" "fetch_smollm2" convert --model smollm2-135m --output "$tmp/c"

expect_error "tokenizer missing" "tokenizer" tokenize --model $fx/model "hello"
expect_error "zero max tokens" "max-tokens" generate --model $fx/model --prompt hi --max-tokens 0

# The whole workflow on a tiny chat model (2 layers, hidden 32): train → eval → merge → generate.
tiny=Tests/LoRAKitTests/Fixtures/tiny_chat
word_data "$tmp/tdata"
targs=(--model $tiny --data "$tmp/tdata" --iters 30 --batch-size 4 --learning-rate 1e-2 --mask-prompt --rank 4 --dropout 0.1 --steps-per-report 10)
if "$lora" train "${targs[@]}" --adapter-path "$tmp/t1" --metrics-file "$tmp/tm.jsonl" >"$tmp/train" 2>&1 \
    && [ -f "$tmp/t1/adapter_model.safetensors" ] && [ -f "$tmp/t1/checkpoint.safetensors" ] && grep -q "<svg" "$tmp/t1/loss.svg" \
    && [ "$(wc -l <"$tmp/tm.jsonl")" -eq 3 ] && grep -q '"val_loss"' "$tmp/tm.jsonl" && grep -q "trainable params: " "$tmp/train"; then
    ok "train writes the adapter, checkpoint, loss.svg and one metrics line per report"
else
    bad "train: $(cat "$tmp/train")"
fi
grep -q $'\r' "$tmp/train" && bad "progress bar drawn into a file" || ok "off a terminal, train prints plain lines"
grep -q "validation loss .* at step 0 → .* at step 30" "$tmp/train" && ok "train's summary: $(grep 'validation loss' "$tmp/train" | tail -1)" \
    || bad "train summary: $(tail -3 "$tmp/train")"
eval_args=(--model $tiny --data "$tmp/tdata" --split valid --mask-prompt --json)
before=$("$lora" eval "${eval_args[@]}" 2>&1)
after=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/t1" 2>&1)
python3 -c "import json,sys; sys.exit(0 if json.loads(sys.argv[2])['loss'] < json.loads(sys.argv[1])['loss'] - 1 else 1)" "$before" "$after" \
    && ok "eval: the adapter lowers the validation loss by more than 1, $before → $after" || bad "eval: $before → $after"
if "$lora" merge --model $tiny --adapter-path "$tmp/t1" --output "$tmp/tmerged" >/dev/null 2>&1; then
    merged=$("$lora" eval --model "$tmp/tmerged" --data "$tmp/tdata" --split valid --mask-prompt --json 2>&1)
    python3 -c "import json,sys; a=json.loads(sys.argv[1])['loss']; b=json.loads(sys.argv[2])['loss']; sys.exit(0 if abs(a-b) <= 1e-5*a else 1)" "$after" "$merged" \
        && ok "merged model evaluates as base + adapter: $merged" || bad "merged eval $merged vs $after"
    g1=$("$lora" generate --model $tiny --adapter-path "$tmp/t1" --chat --prompt "word 40" --max-tokens 8 2>/dev/null)
    g2=$("$lora" generate --model "$tmp/tmerged" --chat --prompt "word 40" --max-tokens 8 2>/dev/null)
    [ -n "$g1" ] && [ "$g1" = "$g2" ] && ok "generate: adapter and merged model write the same text: $g1" || bad "generate: '$g1' vs '$g2'"
else
    bad "merge of the trained adapter"
fi

# Killed with SIGKILL after a checkpoint, then resumed: the same final adapter bits as an uninterrupted run.
rargs=(--model $tiny --data "$tmp/tdata" --iters 400 --batch-size 4 --learning-rate 1e-3 --dropout 0.1 --save-every 5 --steps-per-report 100)
"$lora" train "${rargs[@]}" --adapter-path "$tmp/whole" >/dev/null 2>&1
"$lora" train "${rargs[@]}" --adapter-path "$tmp/killed" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 500); do [ -f "$tmp/killed/checkpoint.safetensors" ] && break; sleep 0.01; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
echo half >"$tmp/killed/checkpoint.safetensors.tmp-99999"  # as a kill during a write leaves it
"$lora" train "${rargs[@]}" --adapter-path "$tmp/killed" --resume >"$tmp/resumed" 2>&1
[ ! -e "$tmp/killed/checkpoint.safetensors.tmp-99999" ] && ok "resume removes a half-written temporary file" || bad "stale temporary file left"
at=$(sed -n 's/^resuming at step \([0-9]*\) of 400$/\1/p' "$tmp/resumed")
if [ -n "$at" ] && [ "$at" -lt 400 ] && cmp -s "$tmp/whole/adapter_model.safetensors" "$tmp/killed/adapter_model.safetensors"; then
    ok "killed at a checkpoint (step $at of 400) and resumed: identical adapter bits"
else
    bad "resume after SIGKILL (resumed at '${at}'): $(tail -2 "$tmp/resumed")"
fi

"$lora" export-adapter --model $tiny --adapter-path "$tmp/t1" --output "$tmp/t1.gguf" >/dev/null 2>&1
[ "$(head -c 4 "$tmp/t1.gguf" 2>/dev/null)" = "GGUF" ] && ok "export-adapter writes a llama.cpp LoRA GGUF" || bad "export-adapter"
expect_error "export-adapter: output exists" "already exists" export-adapter --model $tiny --adapter-path "$tmp/t1" --output "$tmp/t1.gguf"
expect_error "export-adapter: not .gguf" ".gguf" export-adapter --model $tiny --adapter-path "$tmp/t1" --output "$tmp/t1.bin"

# --grad-checkpoint recomputes activations in the backward: the same bits, dropout included.
"$lora" train "${targs[@]}" --adapter-path "$tmp/gc" --grad-checkpoint >/dev/null 2>&1
cmp -s "$tmp/t1/adapter_model.safetensors" "$tmp/gc/adapter_model.safetensors" \
    && ok "--grad-checkpoint trains the same adapter bits" || bad "--grad-checkpoint changed the adapter"

# The training methods: LoRA+ and LoRA-FA train plain LoRA adapters that eval reads like any other.
"$lora" train "${targs[@]}" --method lora-fa --adapter-path "$tmp/fa" >"$tmp/fatrain" 2>&1
"$lora" train "${targs[@]}" --method lora-fa --adapter-path "$tmp/fagc" --grad-checkpoint >/dev/null 2>&1
fa_trainable=$(sed -n 's/^trainable params: \([0-9,]*\) .*/\1/p' "$tmp/fatrain")
lora_trainable=$(sed -n 's/^trainable params: \([0-9,]*\) .*/\1/p' "$tmp/train")
fa_after=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/fa" 2>&1)
[ -n "$fa_trainable" ] && [ "$fa_trainable" != "$lora_trainable" ] && python3 -c "
import json, sys; b = json.loads(sys.argv[1])['loss']; a = json.loads(sys.argv[2])['loss']; sys.exit(0 if a < b - 0.5 else 1)" "$before" "$fa_after" \
    && ok "--method lora-fa trains B only ($fa_trainable of LoRA's $lora_trainable parameters) and lowers the validation loss: $fa_after" \
    || bad "lora-fa: $(tail -3 "$tmp/fatrain") $fa_after"
cmp -s "$tmp/fa/adapter_model.safetensors" "$tmp/fagc/adapter_model.safetensors" \
    && ok "--method lora-fa with --grad-checkpoint trains the same adapter bits" || bad "lora-fa --grad-checkpoint changed the adapter"
"$lora" train "${targs[@]}" --method lora-plus --lora-plus-ratio 4 --iters 3 --adapter-path "$tmp/lp" >"$tmp/lptrain" 2>&1 \
    && grep -q '"peft_type" *: *"LORA"' "$tmp/lp/adapter_config.json" && ok "--method lora-plus saves a PEFT LoRA adapter" || bad "lora-plus: $(tail -2 "$tmp/lptrain")"
# DoRA: trained, evaluated, merged (the merged model evaluates as base + adapter); llama.cpp cannot hold it.
dargs=(--model $tiny --data "$tmp/tdata" --iters 30 --batch-size 4 --learning-rate 1e-2 --mask-prompt --rank 4 --steps-per-report 10)
"$lora" train "${dargs[@]}" --method dora --adapter-path "$tmp/dora" >"$tmp/dtrain" 2>&1
dora_after=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/dora" 2>&1)
grep -q '"use_dora" *: *true' "$tmp/dora/adapter_config.json" && python3 -c "
import json, sys; b = json.loads(sys.argv[1])['loss']; a = json.loads(sys.argv[2])['loss']; sys.exit(0 if a < b - 0.5 else 1)" "$before" "$dora_after" \
    && ok "--method dora trains a PEFT DoRA adapter that lowers the validation loss: $dora_after" || bad "dora: $(tail -3 "$tmp/dtrain") $dora_after"
"$lora" merge --model $tiny --adapter-path "$tmp/dora" --output "$tmp/dmerged" >/dev/null 2>&1
dora_merged=$("$lora" eval --model "$tmp/dmerged" --data "$tmp/tdata" --split valid --mask-prompt --json 2>&1)
python3 -c "
import json, sys; a = json.loads(sys.argv[1])['loss']; m = json.loads(sys.argv[2])['loss']; sys.exit(0 if abs(a - m) < 1e-5 * a else 1)" "$dora_after" "$dora_merged" \
    && ok "the merged DoRA model evaluates as base + adapter: $dora_merged" || bad "merged DoRA eval $dora_merged vs $dora_after"
g1=$("$lora" generate --model $tiny --adapter-path "$tmp/dora" --chat --prompt "word 40" --max-tokens 8 2>/dev/null)
g2=$("$lora" generate --model "$tmp/dmerged" --chat --prompt "word 40" --max-tokens 8 2>/dev/null)
[ -n "$g1" ] && [ "$g1" = "$g2" ] && ok "generate: the DoRA adapter and its merged model write the same text: $g1" || bad "DoRA generate: '$g1' vs '$g2'"
expect_error "export-adapter: DoRA" "plain LoRA adapters only (this one is DoRA)" export-adapter --model $tiny --adapter-path "$tmp/dora" --output "$tmp/dora.gguf"
"$lora" train "${dargs[@]}" --method dora --dropout 0.1 --adapter-path "$tmp/dora2" >/dev/null 2>&1
"$lora" train "${dargs[@]}" --method dora --dropout 0.1 --adapter-path "$tmp/dora2gc" --grad-checkpoint >/dev/null 2>&1
dora2=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/dora2" 2>&1)
python3 -c "
import json, sys; b = json.loads(sys.argv[1])['loss']; a = json.loads(sys.argv[2])['loss']; sys.exit(0 if a < b - 0.5 else 1)" "$before" "$dora2" \
    && cmp -s "$tmp/dora2/adapter_model.safetensors" "$tmp/dora2gc/adapter_model.safetensors" \
    && ok "--method dora --dropout 0.1 lowers the validation loss ($dora2), the same bits under --grad-checkpoint" || bad "dora with dropout: $dora2"
# VeRA: PEFT's VERA files, two trained vectors per layer; merged like any adapter; llama.cpp cannot hold it.
"$lora" train "${dargs[@]}" --method vera --rank 16 --learning-rate 5e-2 --adapter-path "$tmp/vera" >"$tmp/vtrain" 2>&1
vera_after=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/vera" 2>&1)
grep -q '"peft_type" *: *"VERA"' "$tmp/vera/adapter_config.json" && grep -q "^trainable params: " "$tmp/vtrain" && python3 -c "
import json, sys; b = json.loads(sys.argv[1])['loss']; a = json.loads(sys.argv[2])['loss']; sys.exit(0 if a < b - 0.2 else 1)" "$before" "$vera_after" \
    && ok "--method vera trains a PEFT VeRA adapter ($(sed -n 's/^trainable params: \([0-9,]*\) .*/\1/p' "$tmp/vtrain") parameters) that lowers the validation loss: $vera_after" \
    || bad "vera: $(tail -3 "$tmp/vtrain") $vera_after"
"$lora" merge --model $tiny --adapter-path "$tmp/vera" --output "$tmp/vmerged" >/dev/null 2>&1
vera_merged=$("$lora" eval --model "$tmp/vmerged" --data "$tmp/tdata" --split valid --mask-prompt --json 2>&1)
python3 -c "
import json, sys; a = json.loads(sys.argv[1])['loss']; m = json.loads(sys.argv[2])['loss']; sys.exit(0 if abs(a - m) < 1e-5 * a else 1)" "$vera_after" "$vera_merged" \
    && ok "the merged VeRA model evaluates as base + adapter: $vera_merged" || bad "merged VeRA eval $vera_merged vs $vera_after"
g1=$("$lora" generate --model $tiny --adapter-path "$tmp/vera" --chat --prompt "word 40" --max-tokens 8 2>/dev/null)
g2=$("$lora" generate --model "$tmp/vmerged" --chat --prompt "word 40" --max-tokens 8 2>/dev/null)
[ -n "$g1" ] && [ "$g1" = "$g2" ] && ok "generate: the VeRA adapter and its merged model write the same text: $g1" || bad "VeRA generate: '$g1' vs '$g2'"
"$lora" inspect "$tmp/vera" >"$tmp/vinspect" 2>&1 && grep -q "PEFT VeRA adapter" "$tmp/vinspect" && grep -q "trainable params  736" "$tmp/vinspect" \
    && ok "inspect describes a VeRA adapter: $(grep '^  projections' "$tmp/vinspect" | tr -s ' ')" || bad "inspect vera: $(cat "$tmp/vinspect")"
expect_error "flags: --alpha with vera" "--alpha does not apply to --method vera" train "${dargs[@]}" --method vera --alpha 8 --adapter-path "$tmp/vera2"
expect_error "flags: --projection-prng-key without vera" "applies to --method vera only" train "${dargs[@]}" --projection-prng-key 3 --adapter-path "$tmp/vera3"
expect_error "export-adapter: VeRA" "this one is VeRA" export-adapter --model $tiny --adapter-path "$tmp/vera" --output "$tmp/vera.gguf"
expect_error "resume with another method" "method lora-plus in the checkpoint, lora requested" train "${targs[@]}" --method lora --iters 5 --adapter-path "$tmp/lp" --resume
expect_error "flags: unknown method" "--method must be lora, lora-plus, lora-fa, dora, vera, adalora or lora-drop" train --model $tiny --data "$tmp/tdata" --method vera2
# AdaLoRA: PEFT's ADALORA files, pruned to the final ranks; the budget ends at target_r on average.
"$lora" train "${dargs[@]}" --method adalora --tinit 3 --tfinal 5 --adapter-path "$tmp/ada" >"$tmp/atrain" 2>&1
ada_after=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/ada" 2>&1)
grep -q '"peft_type" *: *"ADALORA"' "$tmp/ada/adapter_config.json" && grep -q "^AdaLoRA ranks: 56 in all over 14 layers" "$tmp/atrain" && python3 -c "
import json, sys; b = json.loads(sys.argv[1])['loss']; a = json.loads(sys.argv[2])['loss']; sys.exit(0 if a < b - 0.2 else 1)" "$before" "$ada_after" \
    && ok "--method adalora (init_r 6 → target_r 4) ends at 56 triplets over 14 layers and lowers the validation loss: $ada_after" \
    || bad "adalora: $(tail -3 "$tmp/atrain") $ada_after"
# AdaLoRA killed at a checkpoint mid-allocation and resumed: its importance scores and budget come back,
# so the adapter (and its ranks) are bit for bit the uninterrupted run's.
aargs=("${dargs[@]}" --method adalora --iters 300 --tinit 3 --tfinal 20 --save-every 5 --steps-per-report 100)
"$lora" train "${aargs[@]}" --adapter-path "$tmp/ada_whole" >/dev/null 2>&1
"$lora" train "${aargs[@]}" --adapter-path "$tmp/ada_killed" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 500); do [ -f "$tmp/ada_killed/checkpoint.safetensors" ] && break; sleep 0.01; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
"$lora" train "${aargs[@]}" --adapter-path "$tmp/ada_killed" --resume >"$tmp/ada_resumed" 2>&1
at=$(sed -n 's/^resuming at step \([0-9]*\) of 300$/\1/p' "$tmp/ada_resumed")
if [ -n "$at" ] && [ "$at" -lt 280 ] && cmp -s "$tmp/ada_whole/adapter_model.safetensors" "$tmp/ada_killed/adapter_model.safetensors" \
        && cmp -s "$tmp/ada_whole/adapter_config.json" "$tmp/ada_killed/adapter_config.json"; then
    ok "adalora killed during allocation (step $at of 300) and resumed: identical adapter bits and rank_pattern"
else
    bad "adalora resume after SIGKILL (resumed at '${at}'): $(tail -2 "$tmp/ada_resumed")"
fi
"$lora" inspect "$tmp/ada" >"$tmp/ainspect" 2>&1 && grep -q "PEFT AdaLoRA adapter" "$tmp/ainspect" && grep -q "final 56 in all, 4.00 on average" "$tmp/ainspect" \
    && ok "inspect shows an AdaLoRA adapter's final ranks: $(grep '^  ranks' "$tmp/ainspect" | tr -s ' ')" || bad "inspect adalora: $(cat "$tmp/ainspect")"
"$lora" merge --model $tiny --adapter-path "$tmp/ada" --output "$tmp/amerged" >/dev/null 2>&1
ada_merged=$("$lora" eval --model "$tmp/amerged" --data "$tmp/tdata" --split valid --mask-prompt --json 2>&1)
python3 -c "
import json, sys; a = json.loads(sys.argv[1])['loss']; m = json.loads(sys.argv[2])['loss']; sys.exit(0 if abs(a - m) < 1e-5 * a else 1)" "$ada_after" "$ada_merged" \
    && ok "the merged AdaLoRA model evaluates as base + adapter: $ada_merged" || bad "merged AdaLoRA eval $ada_merged vs $ada_after"
expect_error "flags: --tinit without adalora" "--tinit applies to --method adalora only" train "${dargs[@]}" --tinit 3 --adapter-path "$tmp/ada2"
expect_error "flags: adalora schedule longer than the run" "tinit (40) must be below" train "${dargs[@]}" --method adalora --tinit 40 --adapter-path "$tmp/ada3"
# LoRA-Drop: a probe picks the layers that keep their own pair; the rest share one per shape.
"$lora" train "${dargs[@]}" --method lora-drop --drop-probe-steps 10 --drop-sample-ratio 0.5 --adapter-path "$tmp/drop" >"$tmp/dtrain" 2>&1
drop_after=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/drop" 2>&1)
python3 -c "
import json, sys
sel = json.load(open(sys.argv[3]))
b = json.loads(sys.argv[1])['loss']; a = json.loads(sys.argv[2])['loss']
shares = sum(s['importance'] for s in sel['sites'])
kept = sum(s['importance'] for s in sel['sites'] if s['kept'])
sys.exit(0 if a < b - 0.2 and abs(shares - 1) < 1e-9 and kept >= 0.9 and not all(s['kept'] for s in sel['sites']) else 1)" "$before" "$drop_after" "$tmp/drop/lora_drop.json" \
    && grep -q "^LoRA-Drop selection (threshold 0.9, 10 probe steps on 12 examples)" "$tmp/dtrain" \
    && ok "--method lora-drop writes its selection (lora_drop.json, $(grep -c '"kept" : true' "$tmp/drop/lora_drop.json") of 14 layers kept) and lowers the validation loss: $drop_after" \
    || bad "lora-drop: $(head -3 "$tmp/dtrain") $drop_after"
"$lora" inspect "$tmp/drop" >"$tmp/dinspect" 2>&1 && grep -q "^  shared pairs" "$tmp/dinspect" \
    && ok "inspect recognises LoRA-Drop's shared pairs: $(grep '^  shared pairs' "$tmp/dinspect" | tr -s ' ')" || bad "inspect lora-drop: $(cat "$tmp/dinspect")"
expect_error "flags: --drop-threshold above 1" "--drop-threshold must be above 0 and at most 1" train "${dargs[@]}" --method lora-drop --drop-threshold 1.5 --adapter-path "$tmp/drop2"
# compare: every method on the same data and seed, one table; a failing method gets its row; --resume skips what is done.
"$lora" compare --model $tiny --data "$tmp/tdata" --output "$tmp/cmp" --iters 10 --batch-size 4 --learning-rate 1e-2 --mask-prompt --rank 4 --alpha 8 \
    --steps-per-eval 5 --drop-probe-steps 5 >"$tmp/cmpout" 2>&1
python3 - "$tmp/cmp" <<'PY' && ok "compare trains all 7 methods into one table (compare.md, compare.csv, compare.svg with 7 curves)" || bad "compare: $(tail -12 "$tmp/cmpout")"
import csv, sys
folder = sys.argv[1]
rows = list(csv.reader(open(folder + "/compare.csv")))
assert rows[0][0] == "method" and [r[0] for r in rows[1:]] == ["lora", "lora-plus", "lora-fa", "vera", "dora", "adalora", "lora-drop"], rows
assert all(float(r[7]) > 0 and int(r[1]) > 0 for r in rows[1:]), rows
svg = open(folder + "/compare.svg").read()
assert svg.count("<polyline") == 7 and all(m in svg for m in ["lora-plus", "adalora", "lora-drop"])
assert open(folder + "/compare.md").read().count("\n") == 9
PY
rm "$tmp/cmp/adalora/summary.json"  # as if its run had been killed
"$lora" compare --model $tiny --data "$tmp/tdata" --output "$tmp/cmp" --iters 10 --methods lora,adalora --batch-size 4 --rank 4 --tinit 20 --resume >"$tmp/cmpout2" 2>&1
grep -q "^lora: done before" "$tmp/cmpout2" && grep -q "^| adalora | failed: .*tinit (20) must be below" "$tmp/cmpout2" \
    && ok "compare --resume skips a finished method; a failing one is reported in its row: $(grep '^| adalora' "$tmp/cmpout2" | cut -c1-90)" \
    || bad "compare resume/failure: $(cat "$tmp/cmpout2")"
expect_error "flags: zero LoRA+ ratio" "lora-plus-ratio" train --model $tiny --data "$tmp/tdata" --method lora-plus --lora-plus-ratio 0

# A config file holds settings; the command line wins.
printf 'model: %s\ndata: %s\niters: 3\nbatch_size: 2\nlearning_rate: 1e-3\ntargets: [q_proj, v_proj]\nmask_prompt: true\n' $tiny "$tmp/tdata" >"$tmp/c.yaml"
"$lora" train -c "$tmp/c.yaml" --iters 2 --adapter-path "$tmp/tc" >"$tmp/ctrain" 2>&1
grep -q "trained 2 steps" "$tmp/ctrain" && grep -q '"v_proj"' "$tmp/tc/adapter_config.json" && ! grep -q '"o_proj"' "$tmp/tc/adapter_config.json" \
    && ok "a config file sets the run and flags override it" || bad "config file: $(cat "$tmp/ctrain")"
"$lora" train --model $tiny --data "$tmp/tdata" --epochs 2 --batch-size 5 --adapter-path "$tmp/te" >"$tmp/etrain" 2>&1
grep -q "trained 10 steps" "$tmp/etrain" && ok "--epochs 2 over 24 rows in batches of 5 is 10 steps" || bad "epochs: $(tail -2 "$tmp/etrain")"

# Malformed data, config and flags: one line each, exit 1.
bad_data() { printf '%s\n' "$2" >"$tmp/$1.jsonl"; }
bad_data notjson '{"text": "ok"}
{"text": "unclosed'
expect_error "data: not JSON" "notjson.jsonl:2" train --model $tiny --data "$tmp/notjson.jsonl"
bad_data nokeys '{"question": "why"}'
expect_error "data: no known keys" "nokeys.jsonl:1" train --model $tiny --data "$tmp/nokeys.jsonl"
bad_data wrongtype '{"prompt": "a", "completion": 3}'
expect_error "data: completion not a string" "wrongtype.jsonl:1" train --model $tiny --data "$tmp/wrongtype.jsonl"
bad_data mixed '{"text": "a b c"}
{"prompt": "a", "completion": "b"}'
expect_error "data: mixed row formats" "mixed.jsonl:2" train --model $tiny --data "$tmp/mixed.jsonl"
bad_data badmsg '{"messages": [{"role": "user"}]}'
expect_error "data: message without content" "badmsg.jsonl:1" train --model $tiny --data "$tmp/badmsg.jsonl"
: >"$tmp/empty.jsonl"
expect_error "data: empty file" "no rows" train --model $tiny --data "$tmp/empty.jsonl"
expect_error "data: missing" "nothere.jsonl not found" train --model $tiny --data "$tmp/nothere.jsonl"
expect_error "data: folder without train.jsonl" "t1/train.jsonl not found" train --model $tiny --data "$tmp/t1"
printf 'lerning_rate: 1\n' >"$tmp/k.yaml"
expect_error "config: unknown key" "lerning_rate" train -c "$tmp/k.yaml"
printf 'batch_size: four\n' >"$tmp/t.yaml"
expect_error "config: wrong type" "batch_size must be an integer" train -c "$tmp/t.yaml"
printf 'iters: [1\n' >"$tmp/y.yaml"
expect_error "config: not YAML" "not valid YAML" train -c "$tmp/y.yaml"
printf -- '- a\n- b\n' >"$tmp/l.yaml"
expect_error "config: not a mapping" "mapping" train -c "$tmp/l.yaml"
expect_error "config: missing file" "cannot read config" train -c "$tmp/none.yaml"
printf 'model: %s\ndata: %s\nrank: 4294967296\n' $tiny "$tmp/tdata" >"$tmp/r.yaml"
expect_error "config: absurd rank" "--rank must be at most 8192" train -c "$tmp/r.yaml" --adapter-path "$tmp/never"
printf 'model: %s\ndata: %s\nepochs: 9223372036854775807\n' $tiny "$tmp/tdata" >"$tmp/e.yaml"
expect_error "config: absurd epochs" "--epochs must be at most" train -c "$tmp/e.yaml" --adapter-path "$tmp/never"
expect_error "flags: no model" "--model is required" train --data "$tmp/tdata"
expect_error "flags: zero iters" "iters" train --model $tiny --data "$tmp/tdata" --iters 0
expect_error "flags: iters and epochs" "not both" train --model $tiny --data "$tmp/tdata" --iters 5 --epochs 1
expect_error "flags: negative batch size" "batch-size" train --model $tiny --data "$tmp/tdata" --batch-size -2
expect_error "flags: dropout 1" "dropout" train --model $tiny --data "$tmp/tdata" --dropout 1
expect_error "flags: bad init" "init" train --model $tiny --data "$tmp/tdata" --init xavier
# PiSSA and OLoRA change the base in training; the adapter saved is PEFT's rank-2r conversion for the untouched base.
for init in pissa pissa_niter_2 olora; do
    "$lora" train "${dargs[@]}" --init $init --adapter-path "$tmp/$init" >/dev/null 2>&1
    after_init=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/$init" 2>&1)
    grep -q '"r" *: *8' "$tmp/$init/adapter_config.json" && grep -q '"init_lora_weights" *: *true' "$tmp/$init/adapter_config.json" && python3 -c "
import json, sys; b = json.loads(sys.argv[1])['loss']; a = json.loads(sys.argv[2])['loss']; sys.exit(0 if a < b - 0.5 else 1)" "$before" "$after_init" \
        && ok "--init $init: a rank-8 LoRA for the untouched base that lowers the validation loss: $after_init" || bad "--init $init: $after_init"
done
expect_error "flags: bad schedule" "lr-schedule" train --model $tiny --data "$tmp/tdata" --lr-schedule step
expect_error "flags: negative learning rate" "learning-rate" train --model $tiny --data "$tmp/tdata" --learning-rate -1
expect_error "flags: unknown target" "qq_proj matches no linear layer of this model; its modules are q_proj" train --model $tiny --data "$tmp/tdata" --targets qq_proj
expect_error "resume without a checkpoint" "no checkpoint.safetensors" train --model $tiny --data "$tmp/tdata" --adapter-path "$tmp/fresh" --resume
expect_error "resume with another learning rate" "learning rate" train "${rargs[@]}" --adapter-path "$tmp/killed" --iters 500 --learning-rate 5e-4 --resume
expect_error "resume a finished run" "end of a 400-step run" train "${rargs[@]}" --adapter-path "$tmp/killed" --resume

# User text with a newline is echoed escaped, and an unwritable path is named with the system's
# reason: still one line each.
expect_error "dtype with a newline" 'got f8\\nx' merge --model $fx/model --adapter-path $fx/adapter --output "$tmp/o6" --dtype $'f8\nx'
expect_error "target with a newline" 'q_proj\\nx' train --model $tiny --data "$tmp/tdata" --adapter-path "$tmp/tn" --targets $'q_proj\nx'
expect_error "flag value with a newline" "invalid for '--rank" train --model $tiny --data "$tmp/tdata" --rank $'1\n2'
expect_error "merge output under /proc" "cannot write /proc/lora-out: " merge --model $fx/model --adapter-path $fx/adapter --output /proc/lora-out
expect_error "export-adapter output under /proc" "cannot write /proc/lora-out.gguf: " export-adapter --model $tiny --adapter-path "$tmp/t1" --output /proc/lora-out.gguf
expect_error "train adapter under /proc" "/proc/lora-out" train --model $tiny --data "$tmp/tdata" --iters 1 --batch-size 4 --adapter-path /proc/lora-out
expect_error "metrics file under /proc" "/proc/lora-metrics" train --model $tiny --data "$tmp/tdata" --iters 1 --batch-size 4 \
    --adapter-path "$tmp/tm2" --steps-per-report 1 --metrics-file /proc/lora-metrics

# With the real model (fetched by scripts/fetch_smollm2.sh), when present.
if "$lora" tokenize --model smollm2-135m --json "Hello, world" >"$tmp/tok" 2>"$tmp/err"; then
    if grep -q '"ids":\[19556,28,905\]' "$tmp/tok"; then ok "tokenize smollm2-135m"; else bad "tokenize smollm2-135m: $(cat "$tmp/tok")"; fi
    "$lora" generate --model smollm2-135m --no-chat --prompt "The capital of France is" --max-tokens 20 >"$tmp/gen" 2>"$tmp/err"
    if [ "$(cat "$tmp/gen")" = "$(printf ' Paris.\n\nThe answer is: 2018-01-22 ')" ]; then ok "generate (greedy) prints transformers' text"; else bad "generate: $(cat "$tmp/gen")"; fi
    grep -q "tokens/s" "$tmp/err" && ok "generate reports tokens/s: $(cat "$tmp/err")" || bad "generate report: $(cat "$tmp/err")"
    "$lora" generate --model smollm2-135m --no-chat --prompt "Count: one, two, three," --max-tokens 30 --stop "five" >"$tmp/gen" 2>/dev/null
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
    # A GGUF base merged into a Hugging Face folder carries its tokenizer: the folder generates on its own.
    if "$lora" merge --model smollm2-135m --adapter-path "$tmp/adapter" --output "$tmp/smerged" >/dev/null 2>&1; then
        g1=$("$lora" generate --model smollm2-135m --adapter-path "$tmp/adapter" --chat --prompt "What is 2 plus 6?" --max-tokens 12 2>/dev/null)
        g2=$("$lora" generate --model "$tmp/smerged" --chat --prompt "What is 2 plus 6?" --max-tokens 12 2>/dev/null)
        [ -n "$g1" ] && [ "$g1" = "$g2" ] && ok "merge from the GGUF writes a folder with its tokenizer that generates: $g1" || bad "merged folder: '$g1' vs '$g2'"
    else
        bad "merge from the GGUF base"
    fi
    # merge by extension: an output ending in .gguf writes a GGUF, by default with the base's tensor types and size.
    if "$lora" merge --model smollm2-135m --adapter-path "$tmp/adapter" --output "$tmp/smerged.gguf" >/dev/null 2>"$tmp/err" \
        && [ "$(head -c 4 "$tmp/smerged.gguf")" = "GGUF" ]; then
        want=$("$lora" inspect smollm2-135m 2>&1 | grep -E "ggml types|on disk") got=$("$lora" inspect "$tmp/smerged.gguf" 2>&1 | grep -E "ggml types|on disk")
        [ -n "$want" ] && [ "$want" = "$got" ] && ok "merge by extension writes a GGUF in the base's types and size: $(echo $got)" \
            || bad "merged GGUF '$got' vs the base's '$want'"
    else
        bad "merge by extension: $(cat "$tmp/err")"
    fi
    # --dtype q4_0: SmolLM2's rows (576 and 1536 values) split into 32-value blocks, so every matrix is Q4_0;
    # q4_k: only ffn_down's 1536-value rows split into 256-value blocks, the others fall back to Q5_0 as in llama-quantize.
    "$lora" merge --model smollm2-135m --adapter-path "$tmp/adapter" --output "$tmp/q40.gguf" --dtype q4_0 >/dev/null 2>&1
    "$lora" inspect "$tmp/q40.gguf" 2>&1 | grep -q "ggml types  *Q4_0 ×211, F32 ×61$" && ok "merge --dtype q4_0 writes Q4_0 matrices" \
        || bad "merge --dtype q4_0: $("$lora" inspect "$tmp/q40.gguf" 2>&1 | grep "ggml types")"
    "$lora" merge --model smollm2-135m --adapter-path "$tmp/adapter" --output "$tmp/q4k.gguf" --dtype q4_k >/dev/null 2>&1
    "$lora" inspect "$tmp/q4k.gguf" 2>&1 | grep -q "ggml types  *Q5_0 ×181, F32 ×61, Q4_K ×30$" && ok "merge --dtype q4_k: Q4_K where rows split into 256, else Q5_0" \
        || bad "merge --dtype q4_k: $("$lora" inspect "$tmp/q4k.gguf" 2>&1 | grep "ggml types")"
    # Q8_0 keeps the adapter's effect: the merged GGUF evaluates within 0.01 of base + adapter's loss
    # (which the adapter brings near 0 here, so an absolute bound).
    "$lora" merge --model smollm2-135m --adapter-path "$tmp/adapter" --output "$tmp/q80.gguf" --dtype q8_0 >/dev/null 2>&1
    q80=$("$lora" eval --model "$tmp/q80.gguf" --data "$tmp/data" --split valid --mask-prompt --json 2>/dev/null)
    python3 -c "import json,sys; a=json.loads(sys.argv[1])['loss']; m=json.loads(sys.argv[2])['loss']; sys.exit(0 if abs(a-m) <= 0.01 else 1)" "$after" "$q80" \
        && ok "the merged Q8_0 GGUF evaluates as base + adapter within 0.01: $q80 vs $after" || bad "merged Q8_0 eval $q80 vs $after"
    expect_error "bad schedule" "lr-schedule" train --model smollm2-135m --data "$tmp/data" --lr-schedule step
    expect_error "convert output under /proc" "cannot write /proc/lora-out: " convert --model smollm2-135m --output /proc/lora-out
    printf '{"text": "fine"}\n{"text": 5}\n' >"$tmp/bad.jsonl"
    expect_error "malformed data row" "bad.jsonl:2" eval --model smollm2-135m --data "$tmp/bad.jsonl"
    grep -q "five" "$tmp/gen" && bad "stop string printed: $(cat "$tmp/gen")" || ok "stop string ends the output before it: $(cat "$tmp/gen" | tr '\n' ' ')"
fi

# Guards (issue 9): diverging runs, unwritable metrics, consistent saves, a locked folder, memory, --force.
expect_error "metrics file on a full disk" "cannot write metrics file /dev/full" train "${targs[@]}" --iters 10 --adapter-path "$tmp/g1" --metrics-file /dev/full
expect_error "metrics file under /proc" "cannot open metrics file /proc/" train "${targs[@]}" --adapter-path "$tmp/g2" --metrics-file /proc/no-such-file
expect_error "diverging run (learning rate 1e30, no clipping)" "training stopped at step" train "${targs[@]}" --adapter-path "$tmp/g3" \
    --learning-rate 1e30 --max-grad-norm 0 --save-every 1
if [ -f "$tmp/g3/adapter_model.safetensors" ]; then
    "$lora" inspect "$tmp/g3" >"$tmp/out" 2>&1 && grep -q "training step .*(checkpoint: step" "$tmp/out" \
        && ok "a diverged run leaves a finite adapter: $(grep 'training step' "$tmp/out")" || bad "diverged run's adapter: $(cat "$tmp/out")"
else
    ok "a run that diverged at its first step saved nothing"
fi
mkdir -p "$tmp/nan" && cp "$tmp/t1/adapter_config.json" "$tmp/t1/adapter_model.safetensors" "$tmp/nan/"
python3 - "$tmp/nan/adapter_model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
name = sorted(k for k in header if k != "__metadata__")[0]
start = 8 + n + header[name]["data_offsets"][0]
data[start + 12:start + 16] = struct.pack("<f", float("nan"))  # value 3
open(path, "wb").write(data)
PY
expect_error "inspect: NaN in an adapter" "holds a non-finite value (NaN) at index 3" inspect "$tmp/nan"
expect_error "eval: NaN in an adapter" "holds a non-finite value" eval --model $tiny --data "$tmp/tdata" --split valid --adapter-path "$tmp/nan"
expect_error "merge: NaN in an adapter" "holds a non-finite value" merge --model $tiny --adapter-path "$tmp/nan" --output "$tmp/nanmerged"
LORA_MEMORY_LIMIT_MB=1 expect_error "memory estimate over the limit" "at its peak, but 1 MB are available; lower --batch-size" \
    train "${targs[@]}" --adapter-path "$tmp/g4"
# A second train on a folder in use is refused; the lock goes with the process, even on SIGKILL.
"$lora" train "${targs[@]}" --iters 100000 --adapter-path "$tmp/g5" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 500); do [ "$(cat "$tmp/g5/.lock" 2>/dev/null)" = "$pid" ] && break; sleep 0.01; done
expect_error "adapter folder in use" "$tmp/g5 is in use by another lora train (pid $pid)" train "${targs[@]}" --adapter-path "$tmp/g5"
kill -9 $pid; wait $pid 2>/dev/null
"$lora" train "${targs[@]}" --iters 2 --adapter-path "$tmp/g5" >"$tmp/out" 2>&1 && ok "the lock is gone with the SIGKILLed run" || bad "after SIGKILL: $(cat "$tmp/out")"
expect_error "convert: output exists" "already exists; add --force" convert --model Tests/LoRAKitTests/Fixtures/gguf/metadata.gguf --output "$tmp/merged"
"$lora" merge --model $tiny --adapter-path "$tmp/t1" --output "$tmp/merged" --force >/dev/null 2>&1 && [ -f "$tmp/merged/model.safetensors" ] \
    && cmp -s "$tmp/merged/model.safetensors" "$tmp/tmerged/model.safetensors" && ok "merge --force replaces an existing folder" || bad "merge --force"

# --precision: bf16 base products where the CPU has AVX-512 BF16, one sentence where it has not.
expect_error "precision: unknown value" "--precision must be fp32, bf16 or auto (got fp16)" eval "${eval_args[@]}" --precision fp16
if grep -q avx512_bf16 /proc/cpuinfo 2>/dev/null; then
    fp32=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/t1" 2>&1)
    bf16=$("$lora" eval "${eval_args[@]}" --adapter-path "$tmp/t1" --precision bf16 --batch-size 8 2>&1)
    python3 -c "
import json, sys; a = json.loads(sys.argv[1])['loss']; b = json.loads(sys.argv[2])['loss']; sys.exit(0 if abs(a - b) < 2e-2 * a else 1)" "$fp32" "$bf16" \
        && ok "eval --precision bf16 is within 2% of fp32's loss: $bf16 vs $fp32" || bad "precision bf16: $bf16 vs $fp32"
    "$lora" train "${targs[@]}" --iters 2 --precision bf16 --adapter-path "$tmp/p1" >"$tmp/out" 2>&1 && [ -f "$tmp/p1/adapter_model.safetensors" ] \
        && ok "train --precision bf16 writes an adapter" || bad "train --precision bf16: $(tail -2 "$tmp/out")"
else
    expect_error "precision: bf16 without AVX-512 BF16" "needs a CPU with bfloat16 dot products" eval "${eval_args[@]}" --precision bf16
fi

finish
