#!/usr/bin/env bash
# Data-parallel training under Open MPI's mpirun: 2 ranks of 1 thread equal one process at the same
# global batch, unsupported settings are refused, and a killed rank ends the job, which --resume then
# finishes on the same adapter. Run by .ci/run (which installs openmpi-bin).
#   bash scripts/mpi_checks.sh [path/to/lora]
set -uo pipefail
cd "$(dirname "$0")/.."
lora=${1:-.build/release/lora}
source scripts/check_lib.sh
if ! command -v mpirun >/dev/null; then echo "skipped: mpirun not found (apt-get install openmpi-bin)"; exit 0; fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI runs as root
mpi() { mpirun --oversubscribe -np 2 -x LORA_THREADS=1 "$lora" "$@"; }
tiny=Tests/LoRAKitTests/Fixtures/tiny_chat
word_data "$tmp/data"
args=(-m $tiny --data "$tmp/data" --iters 20 --batch-size 4 --learning-rate 1e-2 --mask-prompt --rank 4 --steps-per-report 10 --steps-per-eval 10)
# The final validation loss as summary files hold it; |a - b| ≤ 1e-6.
same_loss() { python3 -c "
import json, sys; a, b = (json.load(open(p))['final_validation_loss'] for p in sys.argv[1:]); sys.exit(0 if abs(a - b) <= 1e-6 else 1)" "$1" "$2"; }

LORA_THREADS=1 "$lora" train "${args[@]}" --adapter-path "$tmp/one" --summary-file "$tmp/one.json" >/dev/null 2>&1
mpi train "${args[@]}" --adapter-path "$tmp/two" --summary-file "$tmp/two.json" >"$tmp/two.log" 2>&1
if diff=$(python3 scripts/compare_adapters.py "$tmp/one/adapter_model.safetensors" "$tmp/two/adapter_model.safetensors" --tolerance 1e-5) \
    && same_loss "$tmp/one.json" "$tmp/two.json"; then
    ok "mpirun -np 2 (1 thread each) equals one process after 20 steps: $diff; validation loss equal within 1e-6"
else
    bad "2 ranks vs 1: $diff; $(tail -3 "$tmp/two.log")"
fi
[ "$(grep -c '^trained 20 steps' "$tmp/two.log")" -eq 1 ] && ok "only rank 0 prints" || bad "rank output: $(cat "$tmp/two.log")"

mpi train "${args[@]}" --batch-size 3 --adapter-path "$tmp/r1" >"$tmp/out" 2>&1
[ $? -ne 0 ] && grep -q "batch-size 3 does not split over 2 MPI ranks" "$tmp/out" && ok "a batch size the ranks do not divide is refused" || bad "batch split: $(cat "$tmp/out")"
# Dropout: each rank draws the masks of the other ranks' rows and drops them, so every row gets one process's mask.
LORA_THREADS=1 "$lora" train "${args[@]}" --dropout 0.1 --adapter-path "$tmp/d1" >/dev/null 2>&1
mpi train "${args[@]}" --dropout 0.1 --adapter-path "$tmp/d2" >"$tmp/d2.log" 2>&1
diff=$(python3 scripts/compare_adapters.py "$tmp/d1/adapter_model.safetensors" "$tmp/d2/adapter_model.safetensors" --tolerance 1e-5) \
    && ok "--dropout 0.1 on 2 ranks equals one process: $diff" || bad "dropout on 2 ranks: $diff $(tail -2 "$tmp/d2.log")"
mkdir -p "$tmp/odd" && cp "$tmp/data/train.jsonl" "$tmp/odd/" && head -1 "$tmp/data/train.jsonl" >>"$tmp/odd/train.jsonl"
mpi train "${args[@]}" --data "$tmp/odd" --dropout 0.1 --adapter-path "$tmp/r2" >"$tmp/out" 2>&1
[ $? -ne 0 ] && grep -q "an epoch's last batch has 1 of the 25 examples for 2 ranks" "$tmp/out" \
    && ok "dropout with a last batch too short for every rank is refused in one sentence" || bad "short last batch: $(cat "$tmp/out")"
# The methods with state of their own: AdaLoRA's allocator (on the summed gradients) and LoRA-Drop's probe.
for method in "adalora --tinit 3 --tfinal 5" "lora-drop --drop-probe-steps 5" "lora-fa" "dora" "vera"; do
    name=${method%% *}
    LORA_THREADS=1 "$lora" train "${args[@]}" --method $method --adapter-path "$tmp/m1$name" >/dev/null 2>&1
    mpi train "${args[@]}" --method $method --adapter-path "$tmp/m2$name" >"$tmp/m2.log" 2>&1
    if diff=$(python3 scripts/compare_adapters.py "$tmp/m1$name/adapter_model.safetensors" "$tmp/m2$name/adapter_model.safetensors" --tolerance 1e-5); then
        ok "--method $name on 2 ranks equals one process: $diff"
    else
        bad "--method $name on 2 ranks: $diff $(tail -2 "$tmp/m2.log")"
    fi
done

# Two hosts: two network namespaces joined by a veth pair, rank 1 launched into the second by
# mpirun's remote agent (ip netns exec in place of ssh), all traffic over the veth; same adapter.
h1=lora$$a h2=lora$$b
if ip netns add $h1 2>/dev/null && ip netns add $h2 && ip link add ${h1}v type veth peer name ${h2}v \
    && ip link set ${h1}v netns $h1 && ip link set ${h2}v netns $h2 \
    && ip -n $h1 addr add 10.77.0.1/24 dev ${h1}v && ip -n $h2 addr add 10.77.0.2/24 dev ${h2}v \
    && ip -n $h1 link set ${h1}v up && ip -n $h2 link set ${h2}v up && ip -n $h1 link set lo up && ip -n $h2 link set lo up; then
    trap 'ip netns del $h1 2>/dev/null; ip netns del $h2 2>/dev/null; rm -rf "$tmp"' EXIT
    cat >"$tmp/agent" <<AGENT
#!/bin/sh
host=\$1; shift
case \$host in 10.77.0.1) ns=$h1;; 10.77.0.2) ns=$h2;; *) echo "no host \$host" >&2; exit 1;; esac
echo "\$host" >>"$tmp/agent.log"
exec ip netns exec \$ns sh -c "\$*"
AGENT
    chmod +x "$tmp/agent"
    timeout 120 ip netns exec $h1 mpirun --oversubscribe -np 2 --host 10.77.0.1,10.77.0.2 --mca plm_rsh_agent "$tmp/agent" \
        --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
        -x LORA_THREADS=1 -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
        "$(cd "$(dirname "$lora")" && pwd)/$(basename "$lora")" train "${args[@]}" --adapter-path "$tmp/hosts" >"$tmp/hosts.log" 2>&1
    if grep -qx "10.77.0.2" "$tmp/agent.log" 2>/dev/null \
        && diff=$(python3 scripts/compare_adapters.py "$tmp/one/adapter_model.safetensors" "$tmp/hosts/adapter_model.safetensors" --tolerance 1e-5); then
        ok "2 ranks on two hosts (network namespaces over a veth pair) equal one process: $diff"
    else
        bad "two hosts: $(tail -3 "$tmp/hosts.log")"
    fi
else
    echo "skipped: two hosts need network namespaces (root and iproute2)"
fi

# A rank killed mid-run: mpirun ends the job within seconds naming the rank; --resume finishes it on
# the bits of an uninterrupted 2-rank run (over hundreds of steps Adam amplifies the summation-order
# differences from one process: 8e-7 after 100 steps, 2e-2 after 500 on this tiny model).
long=(-m $tiny --data "$tmp/data" --iters 2000 --batch-size 4 --learning-rate 1e-3 --rank 4 --save-every 100 --steps-per-report 100)
mpi train "${long[@]}" --adapter-path "$tmp/whole" >/dev/null 2>&1
mpi train "${long[@]}" --adapter-path "$tmp/killed" >"$tmp/killed.log" 2>&1 &
job=$!
for _ in $(seq 1 1000); do grep -q "^step 200/2000" "$tmp/killed.log" 2>/dev/null && break; sleep 0.01; done
victim=""  # rank 1: the process whose environment says so
for pid in $(pgrep -f "$lora train"); do
    tr '\0' '\n' </proc/$pid/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && victim=$pid
done
start=$(date +%s); kill -9 "$victim"; wait $job; rc=$?; took=$(( $(date +%s) - start ))
if [ $rc -ne 0 ] && [ $took -le 10 ] && grep -qi "rank 1\|rank 0" "$tmp/killed.log"; then
    ok "a killed rank ends the job in ${took}s: $(grep -i 'exited on signal\|rank [01]' "$tmp/killed.log" | head -1 | tr -s ' ')"
else
    bad "killed rank (exit $rc after ${took}s): $(tail -5 "$tmp/killed.log")"
fi
mpi train --resume --adapter-path "$tmp/killed" >"$tmp/resumed.log" 2>&1
at=$(sed -n 's/^resuming at step \([0-9]*\) of 2000$/\1/p' "$tmp/resumed.log")
if [ -n "$at" ] && [ "$at" -lt 2000 ] && cmp -s "$tmp/whole/adapter_model.safetensors" "$tmp/killed/adapter_model.safetensors"; then
    ok "--resume under mpirun from step $at ends on the uninterrupted 2-rank run's adapter bits"
else
    bad "resume after a killed rank (at '$at'): $(tail -3 "$tmp/resumed.log")"
fi

# Signals mpirun ($1) once log $2 shows step $3, then waits for it: sets rc.
signal_at() { local sig=$1 log=$2 step=$3; shift 3
    mpirun --oversubscribe -np 2 -x LORA_THREADS=1 "$lora" train "$@" >"$log" 2>&1 &
    local job=$!  # mpirun itself (the mpi function would run in a subshell)
    for _ in $(seq 1 6000); do grep -q "^step $step/" "$log" 2>/dev/null && break; sleep 0.01; done
    kill -$sig "$job"; wait $job; rc=$?
}
# Resumes folder $1 under mpirun and checks it restarts at step $2 of $3 and ends on $4's adapter bits.
resumes_to() { mpi train --resume --adapter-path "$1" >"$1.resumed.log" 2>&1
    grep -q "^resuming at step $2 of $3" "$1.resumed.log" && cmp -s "$4/adapter_model.safetensors" "$1/adapter_model.safetensors"
}

# SIGUSR1 at mpirun (forwarded to every rank; what a batch scheduler sends ahead of its time limit):
# all ranks stop after the same step, rank 0 saves it off the --save-every schedule, and the printed
# resume command ends on the uninterrupted run's bits.
signal_at USR1 "$tmp/usr1.log" 100 "${long[@]}" --adapter-path "$tmp/usr1"
at=$(sed -n 's/^SIGUSR1: stopped after step \([0-9]*\) of 2000.*/\1/p' "$tmp/usr1.log")
resume=$(grep '^resume with: ' "$tmp/usr1.log" | sed 's/^resume with: //')
if [ $rc -ne 0 ] && [ -n "$at" ] && [ "$at" -gt 100 ] && [ "$resume" = "mpirun -np 2 lora train --resume --adapter-path $tmp/usr1" ]; then
    resumes_to "$tmp/usr1" "$at" 2000 "$tmp/whole" \
        && ok "SIGUSR1 at mpirun: every rank stops after step $at, saved (exit $rc); the resume ends on the uninterrupted run's bits" \
        || bad "resume after SIGUSR1: $(tail -3 "$tmp/usr1.resumed.log")"
else
    bad "SIGUSR1 under mpirun (exit $rc, step '$at', resume '$resume'): $(tail -4 "$tmp/usr1.log")"
fi

# Ctrl-C at mpirun: it sends the ranks SIGTERM and, a second later, SIGKILL, shorter than a step of
# a real model (SmolLM2 at batch 8: about 1.5 s on 2 ranks here). The ranks give up the step in
# flight and rank 0 saves the one before; resuming ends on the uninterrupted run's bits.
smol=$(bash scripts/fetch_smollm2.sh 2>/dev/null | tail -n 1)
if [ -f "$smol" ]; then
    mkdir -p "$tmp/q" && head -64 data/quickstart/train.jsonl >"$tmp/q/train.jsonl"  # no validation split: no final evaluation
    real=(-m "$smol" --data "$tmp/q" --batch-size 8 --iters 5 --steps-per-report 1 --save-every 100)
    mpi train "${real[@]}" --adapter-path "$tmp/rwhole" >/dev/null 2>&1
    signal_at INT "$tmp/rint.log" 2 "${real[@]}" --adapter-path "$tmp/rint"
    at=$(sed -n 's/^SIGTERM: stopped during step [0-9]* of 5; the adapter and checkpoint of step \([0-9]*\) are saved.*/\1/p' "$tmp/rint.log")
    if [ $rc -ne 0 ] && [ -n "$at" ]; then
        resumes_to "$tmp/rint" "$at" 5 "$tmp/rwhole" \
            && ok "Ctrl-C at mpirun on SmolLM2: the step in flight given up, step $at saved off schedule; the resume ends on the uninterrupted run's bits" \
            || bad "resume after Ctrl-C at mpirun: $(tail -3 "$tmp/rint.resumed.log")"
    else
        bad "Ctrl-C at mpirun (exit $rc): $(tail -4 "$tmp/rint.log")"
    fi
else
    echo "skipped: Ctrl-C at mpirun needs SmolLM2 (scripts/fetch_smollm2.sh)"
fi

finish
