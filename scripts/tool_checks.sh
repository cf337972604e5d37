#!/usr/bin/env bash
# The `lora` tool's conventions, as a user meets them: nothing lost on Ctrl-C or SIGTERM, settings kept
# in the adapter folder, no silent no-ops, the flags and errors users carry over from mlx-lm, PEFT and
# llama.cpp, and the progress line in a real terminal (tmux). Run by .ci/run.
#   bash scripts/tool_checks.sh [path/to/lora]
set -uo pipefail
cd "$(dirname "$0")/.."
lora=${1:-.build/release/lora}
lora=$(cd "$(dirname "$lora")" && pwd)/$(basename "$lora")
source scripts/check_lib.sh
tiny=Tests/LoRAKitTests/Fixtures/tiny_chat

mkdir -p "$tmp/nothing"
word_data "$tmp/data"
args=(-m $tiny --data "$tmp/data" --batch-size 4 --learning-rate 1e-2 --mask-prompt --rank 4 --dropout 0.1 --steps-per-report 100)

# --- Nothing lost --------------------------------------------------------------------------------
# Ctrl-C (SIGINT), SIGTERM and SIGUSR1 mid-run: the step is saved, the resume command printed, and the process
# ends by the signal (exit status 128+signal); resuming with that command alone ends on the same
# adapter bits as an uninterrupted run. The signal goes out at the first report, 50 of 1000 steps in.
sargs=("${args[@]}" --iters 1000 --steps-per-report 50)
"$lora" train "${sargs[@]}" --adapter-path "$tmp/whole" >/dev/null 2>&1
for sig in INT TERM USR1; do
    "$lora" train "${sargs[@]}" --adapter-path "$tmp/stop$sig" >"$tmp/out$sig" 2>&1 &
    pid=$!
    for _ in $(seq 1 1000); do grep -q "^step 50/1000" "$tmp/out$sig" 2>/dev/null && break; sleep 0.01; done
    kill -$sig $pid; wait $pid; rc=$?
    want=$(case $sig in INT) echo 130;; TERM) echo 143;; USR1) echo 138;; esac)
    resume=$(sed -n 's/^resume with: //p' "$tmp/out$sig")
    step=$(sed -n 's/.*stopped after step \([0-9]*\) of 1000.*/\1/p' "$tmp/out$sig")
    if [ $rc -eq $want ] && [ "$resume" = "lora train --resume --adapter-path $tmp/stop$sig" ] && [ -n "$step" ] && [ "$step" -lt 1000 ] \
        && [ -f "$tmp/stop$sig/checkpoint.safetensors" ]; then
        (cd "$tmp" && "$lora" ${resume#lora } >"$tmp/resumed$sig" 2>&1)
        grep -q "^resuming at step $step of 1000" "$tmp/resumed$sig" && cmp -s "$tmp/whole/adapter_model.safetensors" "$tmp/stop$sig/adapter_model.safetensors" \
            && ok "SIG$sig at step $step: saved, exit $rc, and '$resume' ends on the uninterrupted run's adapter bits" \
            || bad "SIG$sig resume: $(tail -3 "$tmp/resumed$sig")"
    else
        bad "SIG$sig (exit $rc, step '$step', resume '$resume'): $(tail -4 "$tmp/out$sig")"
    fi
done

# Ended by the signal itself rather than exiting 130, so a shell script running lora train stops too.
python3 - "$lora" "$tmp/sig" "${sargs[@]}" <<'PY' && ok "after saving, SIGINT ends the process (returncode -2, not exit 130)" || bad "the process was not ended by SIGINT"
import signal, subprocess, sys, time
p = subprocess.Popen([sys.argv[1], "train", *sys.argv[3:], "--adapter-path", sys.argv[2]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
for line in p.stdout:
    if line.startswith("step 50/1000"):
        p.send_signal(signal.SIGINT)
        break
p.stdout.read()
sys.exit(0 if p.wait() == -signal.SIGINT else 1)
PY

# --save-every is 100 by default; --keep-checkpoints N keeps the last N saves' adapters; --save-best the best one.
"$lora" train "${args[@]}" --iters 120 --keep-checkpoints 5 --adapter-path "$tmp/k1" >/dev/null 2>&1
[ "$(ls -d "$tmp/k1"/*_adapters | xargs -n1 basename | tr '\n' ' ')" = "0000100_adapters 0000120_adapters " ] \
    && cmp -s "$tmp/k1/adapter_model.safetensors" "$tmp/k1/0000120_adapters/adapter_model.safetensors" \
    && ok "--save-every defaults to 100: step-numbered adapters 0000100 and 0000120, the last equal to the adapter" \
    || bad "default save-every / keep-checkpoints: $(ls "$tmp/k1")"
"$lora" train "${args[@]}" --iters 40 --save-every 10 --steps-per-eval 10 --keep-checkpoints 2 --save-best --adapter-path "$tmp/k2" >"$tmp/k2out" 2>&1
best=$(sed -n 's/.*(best [0-9.]* at step \([0-9]*\))$/\1/p' "$tmp/k2out")
[ "$(ls -d "$tmp/k2"/*_adapters | xargs -n1 basename | tr '\n' ' ')" = "0000030_adapters 0000040_adapters best_adapters " ] && [ -n "$best" ] \
    && "$lora" train "${args[@]}" --iters $best --save-every 10 --adapter-path "$tmp/k3" >/dev/null 2>&1 \
    && cmp -s "$tmp/k2/best_adapters/adapter_model.safetensors" "$tmp/k3/adapter_model.safetensors" \
    && ok "--keep-checkpoints 2 keeps 0000030 and 0000040; --save-best keeps step $best's adapter (equal to a run stopped there)" \
    || bad "keep-checkpoints / save-best (best at '$best'): $(ls "$tmp/k2")"

# The settings live in the adapter folder; eval, generate and export-adapter find the base model there.
grep -q '"save-every" : 100' "$tmp/k1/training_args.json" && grep -q "\"model\" : \"$PWD/$tiny\"" "$tmp/k1/training_args.json" \
    && grep -q "\"base_model_name_or_path\" : \"$PWD/$tiny\"" "$tmp/k1/adapter_config.json" \
    && ok "training_args.json and base_model_name_or_path hold the run's settings and the model's absolute path" || bad "training_args: $(cat "$tmp/k1/training_args.json")"
e1=$("$lora" eval -m $tiny --data "$tmp/data" --split valid --mask-prompt --json --adapter-path "$tmp/k1" 2>&1)
e2=$((cd "$tmp" && "$lora" eval --data data --split valid --mask-prompt --json --adapter-path k1) 2>&1)
[ -n "$e1" ] && [ "$e1" = "$e2" ] && ok "eval without --model uses the adapter's base model: $e2" || bad "eval without --model: '$e1' vs '$e2'"
g1=$("$lora" generate -m $tiny --adapter-path "$tmp/k1" -p "word 40" --max-tokens 8 2>/dev/null)
g2=$("$lora" generate --adapter-path "$tmp/k1" --prompt "word 40" --max-tokens 8 2>/dev/null)
[ -n "$g1" ] && [ "$g1" = "$g2" ] && ok "generate without --model, and -m/-p: $g2" || bad "generate without --model: '$g1' vs '$g2'"
"$lora" export-adapter --adapter-path "$tmp/k1" --output "$tmp/k1.gguf" >/dev/null 2>&1 && [ -f "$tmp/k1.gguf" ] \
    && ok "export-adapter without --model" || bad "export-adapter without --model"

"$lora" merge --adapter-path "$tmp/k1" --output "$tmp/merged/k1" >/dev/null 2>&1 && [ -f "$tmp/merged/k1/model.safetensors" ] \
    && ok "merge without --model, into a missing folder" || bad "merge without --model"

"$lora" train "${args[@]}" --epochs 2 --save-every 2 --adapter-path "$tmp/ep" >/dev/null 2>&1
"$lora" train --resume --adapter-path "$tmp/ep" --epochs 3 >"$tmp/epout" 2>&1 && grep -q "^resuming at step 12 of 18" "$tmp/epout" \
    && ok "--resume with --epochs replaces the saved steps: $(grep '^resuming' "$tmp/epout")" || bad "resume with --epochs: $(tail -2 "$tmp/epout")"
expect_error "resume from a folder without settings" "$tmp/none has no training_args.json to resume with" train --resume --adapter-path "$tmp/none"

# Output paths are checked before anything is loaded or trained.
touch "$tmp/afile"
expect_error "adapter folder is a file" "is a file, but a folder is needed" train "${args[@]}" --iters 1 --adapter-path "$tmp/afile"
expect_error "adapter folder under a file" "$tmp/afile is a file, not a folder" train "${args[@]}" --iters 1 --adapter-path "$tmp/afile/a"
expect_error "metrics file is a folder" "is a folder, but a file is needed" train "${args[@]}" --iters 1 --adapter-path "$tmp/m1" --metrics-file "$tmp/nothing"
[ ! -e "$tmp/m1" ] && ok "a refused run leaves no adapter folder" || bad "a refused run left $tmp/m1"
"$lora" train "${args[@]}" --iters 2 --adapter-path "$tmp/new/deeper/a" --metrics-file "$tmp/new/m/metrics.jsonl" \
    --summary-file "$tmp/new/s/summary.json" >/dev/null 2>&1 && [ -f "$tmp/new/deeper/a/adapter_model.safetensors" ] \
    && [ -s "$tmp/new/m/metrics.jsonl" ] && [ -s "$tmp/new/s/summary.json" ] \
    && ok "the adapter folder, metrics file and summary file are created in missing folders" || bad "outputs in missing folders"

# --- No silent no-ops ----------------------------------------------------------------------------
expect_error "a target that matches nothing" "vproj matches no linear layer of this model; its modules are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" \
    train "${args[@]}" --iters 1 --targets q_proj,vproj --adapter-path "$tmp/n1"
"$lora" train "${args[@]}" --iters 1 --targets q_proj,v_proj,lm_head --adapter-path "$tmp/n2" >"$tmp/n2out" 2>&1
grep -q "^  q_proj: 2 layers, 512; v_proj: 2 layers, 384; lm_head: 1 layer, [0-9,]*$" "$tmp/n2out" && ok "the trainable-parameter line is followed by a per-target count: $(grep '^  q_proj' "$tmp/n2out")" \
    || bad "per-target count: $(cat "$tmp/n2out")"
expect_error "--alpha 0" "--alpha must be a finite number above 0" train "${args[@]}" --alpha 0
expect_error "--rank 0" "--rank must be at least 1" train "${args[@]}" --rank 0
# Rows whose assistant turn --max-seq-length cuts off have nothing to train on.
long=$(printf 'word %.0s' $(seq 1 200))
printf '{"messages": [{"role": "user", "content": "%s"}, {"role": "assistant", "content": "ok"}]}\n' "$long" "$long" >"$tmp/long.jsonl"
expect_error "no target token after masking" "has a token to train on after --mask-prompt" \
    train -m $tiny --data "$tmp/long.jsonl" --mask-prompt --max-seq-length 64 --adapter-path "$tmp/n3"
cat "$tmp/data/train.jsonl" "$tmp/long.jsonl" >"$tmp/some.jsonl"
"$lora" train -m $tiny --data "$tmp/some.jsonl" --mask-prompt --max-seq-length 64 --iters 1 --steps-per-eval 5 --adapter-path "$tmp/n4" >/dev/null 2>"$tmp/n4err"
grep -q "^warning: 2 of 26 training rows have no token to train on after --mask-prompt" "$tmp/n4err" \
    && grep -q "^warning: --steps-per-eval 5 does nothing: there is no validation set" "$tmp/n4err" \
    && ok "rows without targets and --steps-per-eval without a validation set are warned about" || bad "no-op warnings: $(cat "$tmp/n4err")"
LORA_BLAS=builtin "$lora" train "${args[@]}" --iters 1 --adapter-path "$tmp/n5" >/dev/null 2>"$tmp/n5err"
[ "$(grep -c '^note: matrix products run on the portable Swift kernel' "$tmp/n5err")" -eq 1 ] \
    && ok "the slow path is announced once: $(cat "$tmp/n5err")" || bad "slow-path note: $(cat "$tmp/n5err")"
"$lora" train "${args[@]}" --iters 10 --steps-per-report 5 --adapter-path "$tmp/n6" >"$tmp/n6out" 2>&1
grep -q "^step 5/10  avg loss [0-9.]*  val loss [0-9.]*\|^step 5/10  avg loss [0-9.]*  lr .* [0-9]* tok/s ([0-9]* target)" "$tmp/n6out" \
    && grep -q "tok/s, [0-9]* target tok/s this session" "$tmp/n6out" \
    && ok "throughput counts all tokens and target tokens: $(grep '^step 5/10' "$tmp/n6out")" || bad "throughput: $(cat "$tmp/n6out")"

# --- The conventions users carry over ------------------------------------------------------------
[ "$("$lora" --version)" = "$(sed -n 's/^    static let version = "\(.*\)"$/\1/p' Sources/lora/Lora.swift)" ] \
    && ok "lora --version: $("$lora" --version)" || bad "--version: $("$lora" --version 2>&1)"
c1=$("$lora" generate -m $tiny --adapter-path "$tmp/k1" --chat -p "word 40" --max-tokens 8 2>/dev/null)
c2=$("$lora" generate -m $tiny --adapter-path "$tmp/k1" --no-chat -p "word 40" --max-tokens 8 2>/dev/null)
c3=$(echo "word 40" | "$lora" generate -m $tiny --adapter-path "$tmp/k1" -p - --max-tokens 8 2>/dev/null)
c4=$("$lora" generate -m $tiny --adapter-path "$tmp/k1" -p "word 40" --system-prompt "Be brief." --max-tokens 8 2>/dev/null)
c5=$("$lora" generate -m $tiny --adapter-path "$tmp/k1" -p "word 40" --system "Be brief." --max-tokens 8 2>/dev/null)
# echo adds a newline, which the chat template keeps; compare with the same prompt given as a flag.
c6=$("$lora" generate -m $tiny --adapter-path "$tmp/k1" -p "word 40
" --max-tokens 8 2>/dev/null)
[ "$c1" = "$g1" ] && [ "$c2" != "$c1" ] && [ "$c3" = "$c6" ] && [ -n "$c4" ] && [ "$c4" = "$c5" ] \
    && ok "generate: chat template by default (= --chat), --no-chat differs, --prompt - reads stdin, --system aliases --system-prompt" \
    || bad "generate chat defaults: '$c1' '$c2' '$c3'/'$c6' '$c4'/'$c5' (default '$g1')"
ld=$("$lora" generate -m $tiny --adapter-path "$tmp/k1.gguf" -p "word 40" --max-tokens 8 2>/dev/null)
[ -n "$ld" ] && [ "$ld" = "$g1" ] && ok "generate --adapter-path X.gguf reads a llama.cpp LoRA adapter: $ld" || bad "llama.cpp adapter: '$ld' vs '$g1'"

expect_error "unknown option, by initials" "Unknown option '--lr'; did you mean --learning-rate?" train "${args[@]}" --lr 1e-3
expect_error "unknown option, misspelt" "did you mean --max-tokens?" generate -m $tiny -p hi --max-token 5
expect_error "unknown subcommand" "did you mean train?" trian
expect_error "a missing model" "model $tmp/nope not found" eval -m "$tmp/nope" --data "$tmp/data"
expect_error "a file given as the model" "is a file but not a .gguf" eval -m $tiny/config.json --data "$tmp/data"
expect_error "missing data" "data file $tmp/nodata not found" train -m $tiny --data "$tmp/nodata"
expect_error "resume with another rank" "rank 4 in the checkpoint, 8 requested" train --resume --adapter-path "$tmp/k1" --iters 200 --rank 8
expect_error "no model and no adapter settings" "--model is required" train --data "$tmp/data" --adapter-path "$tmp/n7"

# The progress line in a real terminal: one line, redrawn in place, fitted to 80 and to 60 columns.
if command -v tmux >/dev/null; then
    for cols in 80 60; do
        tmux kill-session -t lora$cols 2>/dev/null
        tmux new-session -d -s lora$cols -x $cols -y 20 "'$lora' train ${args[*]} --iters 100000 --save-every 0 --adapter-path '$tmp/bar$cols'"
        tmux set-option -t lora$cols remain-on-exit on  # the screen stays after Ctrl-C ends the run
        line=""
        for _ in $(seq 1 100); do
            sleep 0.1
            line=$(tmux capture-pane -p -t lora$cols | grep 'ETA' || true)
            [ -n "$line" ] && break
        done
        sleep 1
        screen=$(tmux capture-pane -p -t lora$cols)
        tmux send-keys -t lora$cols C-c
        sleep 1
        after=$(tmux capture-pane -p -t lora$cols)
        tmux kill-session -t lora$cols 2>/dev/null
        bars=$(echo "$screen" | grep -c 'ETA')
        width=$(echo "$screen" | grep 'ETA' | python3 -c 'import sys; print(len(sys.stdin.buffer.read().decode().rstrip()))')
        # At 60 columns the bar cells give way to the speed when it has six digits (a fast machine).
        if [ "$bars" -eq 1 ] && [ "$width" -le $((cols - 3)) ] && { [ "$cols" -lt 80 ] || echo "$screen" | grep 'ETA' | grep -q '█\|·'; } \
            && echo "$after" | grep -q "^resume with: " && ! echo "$after" | grep -q 'ETA'; then
            ok "tmux at $cols columns: one progress line of $width columns, redrawn; Ctrl-C clears it and prints the resume command"
        else
            bad "tmux at $cols columns ($bars progress lines, width '$width'): $screen // $after"
        fi
    done
else
    echo "skipped: the terminal checks need tmux"
fi

finish
