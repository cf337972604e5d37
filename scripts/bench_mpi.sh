#!/usr/bin/env bash
# Data-parallel speed-up: 2 MPI ranks of 1 thread against 1 process of 1 thread, at the same global
# batch, in alternating runs (this machine's load drifts; each pair sees the same), medians.
#   bash scripts/bench_mpi.sh [bench|train] [ROUNDS] [EXTRA FLAGS...]   (defaults: bench, 5 rounds)
# bench: `lora bench -m smollm2-135m --steps 3` (batch 4 x 256); train: the quickstart's `lora train`
# (batch 4 x <=128 tokens, 12 steps, summary file's tokens/s). Needs mpirun (apt-get install openmpi-bin).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-bench}
rounds=${2:-5}
shift $(( $# < 2 ? $# : 2 ))
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
swift build -c release --product lora >/dev/null
lora=.build/release/lora
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Tokens per second of one run; $1 is the launcher (a plain environment or mpirun).
run() {
    case $mode in
        bench) "$@" "$lora" bench -m smollm2-135m --steps 3 --json "${extra[@]}" | tail -n 1 \
                   | python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens_per_second"])' ;;
        train) rm -rf "$tmp/a"
               "$@" "$lora" train -m smollm2-135m --data data/quickstart --batch-size 4 --iters 12 --steps-per-report 12 \
                   --adapter-path "$tmp/a" --summary-file "$tmp/s.json" "${extra[@]}" >/dev/null
               python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["tokens_per_second"])' "$tmp/s.json" ;;
        *) echo "mode is bench or train" >&2; exit 2 ;;
    esac
}
extra=("$@")
one=() two=()
for r in $(seq "$rounds"); do
    a=$(run env LORA_THREADS=1)
    b=$(run mpirun -np 2 -x LORA_THREADS=1)
    one+=("$a") two+=("$b")
    printf 'round %d: 1 rank %.1f, 2 ranks %.1f tokens/s (%.2fx)\n' "$r" "$a" "$b" "$(python3 -c "print($b / $a)")"
done
python3 - "${one[*]}" "${two[*]}" <<'PY'
import statistics, sys
one, two = ([float(x) for x in s.split()] for s in sys.argv[1:])
ratios = [b / a for a, b in zip(one, two)]
print(f"median: 1 rank {statistics.median(one):.1f}, 2 ranks {statistics.median(two):.1f} tokens/s; "
      f"ratio of pairs median {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x)")
PY
