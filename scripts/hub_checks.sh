#!/usr/bin/env bash
# `--model ORG/NAME` against scripts/hub_server.py, a stand-in for the Hugging Face Hub on loopback:
# a download into huggingface_hub's cache layout, the cache alone afterwards, a resumed partial
# download (and one restarted by a server that ignores Range), a hash mismatch refused, a token, a
# GGUF repository, and missing repos. Run by .ci/run.
#   bash scripts/hub_checks.sh [path/to/lora]
set -uo pipefail
cd "$(dirname "$0")/.."
lora=${1:-.build/release/lora}
tiny=Tests/LoRAKitTests/Fixtures/tiny_chat
source scripts/check_lib.sh
server=""
trap '[ -n "$server" ] && kill $server 2>/dev/null; rm -rf "$tmp"' EXIT

# The served repositories: org/tiny (the tiny chat model) and org/ggufs (GGUF files only).
mkdir -p "$tmp/root/org/ggufs"
cp -r $tiny "$tmp/root/org/tiny"
cp Tests/LoRAKitTests/Fixtures/gguf/metadata.gguf "$tmp/root/org/ggufs/small.gguf"
sha256() { python3 -c "import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())" "$1"; }
gitsha1() { python3 -c "import hashlib, sys; d = open(sys.argv[1], 'rb').read(); print(hashlib.sha1(b'blob %d\0' % len(d) + d).hexdigest())" "$1"; }
weights_sha=$(sha256 $tiny/model.safetensors)
weights_size=$(wc -c <$tiny/model.safetensors)

# start_server [FLAGS...]: a fresh server (and request log) on a free port; HF_ENDPOINT points at it.
start_server() {
    [ -n "$server" ] && kill $server 2>/dev/null && wait $server 2>/dev/null
    rm -f "$tmp/port"
    : >"$tmp/log"
    python3 scripts/hub_server.py --root "$tmp/root" --port-file "$tmp/port" --log "$tmp/log" "$@" &
    server=$!
    for _ in $(seq 1 100); do [ -s "$tmp/port" ] && break; sleep 0.05; done
    export HF_ENDPOINT="http://127.0.0.1:$(cat "$tmp/port")"
}
stop_server() { kill $server 2>/dev/null; wait $server 2>/dev/null; server=""; }

mkdir -p "$tmp/data"
for i in 30 31 32 33; do
    printf '{"messages": [{"role": "user", "content": "word %d"}, {"role": "assistant", "content": "the word is %d"}]}\n' $i $i
done >"$tmp/data/valid.jsonl"
ev=(eval --data "$tmp/data" --split valid --json)
expected=$("$lora" "${ev[@]}" --model $tiny 2>&1)

# expect_hub_error NAME EXPECTED_WORDS ARGS...: exit 1, and one error line, the last on standard error
# (lines for files that did download may come before it).
expect_hub_error() {
    local name=$1 words=$2; shift 2
    "$lora" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -eq 1 ] && [ "$(grep -c '^error: ' "$tmp/err")" -eq 1 ] && tail -1 "$tmp/err" | grep -q "^error: .*$words"; then
        ok "$name: $(tail -1 "$tmp/err")"
    else
        bad "$name (exit $rc): $(cat "$tmp/err")"
    fi
}

start_server
commit=$(python3 -c "import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))['sha'])" "$HF_ENDPOINT/api/models/org/tiny/revision/main")
export HF_HUB_CACHE="$tmp/cache"
repo="$tmp/cache/models--org--tiny" snap="$tmp/cache/models--org--tiny/snapshots/$commit"
out=$("$lora" "${ev[@]}" --model org/tiny 2>"$tmp/err")
[ $? -eq 0 ] && [ "$out" = "$expected" ] && ok "eval --model org/tiny downloads the model and gives the local folder's loss: $out" \
    || bad "download: $out $(cat "$tmp/err")"
grep -q "^downloaded org/tiny/model.safetensors (122.6 KiB, " "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 5 ] && ! grep -q $'\r' "$tmp/err" \
    && ok "off a terminal, one plain line per file on stderr" || bad "download lines: $(cat "$tmp/err")"
[ "$(cat "$repo/refs/main")" = "$commit" ] && ok "refs/main holds the commit $commit" || bad "refs/main: $(cat "$repo/refs/main" 2>&1)"
[ "$(readlink "$snap/model.safetensors")" = "../../blobs/$weights_sha" ] && [ "$(readlink "$snap/config.json")" = "../../blobs/$(gitsha1 $tiny/config.json)" ] \
    && cmp -s "$repo/blobs/$weights_sha" $tiny/model.safetensors \
    && ok "snapshots/COMMIT/FILE link to ../../blobs/ETAG (SHA-256 for LFS files, git blob SHA-1 otherwise)" \
    || bad "layout: $(ls -l "$snap" 2>&1)"
[ "$(ls "$snap" | tr '\n' ' ')" = "config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json " ] \
    && ok "the snapshot holds the five files lora reads" || bad "snapshot files: $(ls "$snap")"

requests=$(wc -l <"$tmp/log")
out=$("$lora" "${ev[@]}" --model org/tiny 2>"$tmp/err")
[ "$out" = "$expected" ] && [ ! -s "$tmp/err" ] && [ "$(wc -l <"$tmp/log")" -eq "$requests" ] \
    && ok "a second run uses the cache without a request" || bad "second run: $out $(cat "$tmp/err")"
stop_server
out=$(HF_HUB_OFFLINE=1 "$lora" "${ev[@]}" --model org/tiny 2>"$tmp/err")
[ "$out" = "$expected" ] && ok "with the server gone and HF_HUB_OFFLINE=1, the cache alone serves" || bad "offline: $out $(cat "$tmp/err")"
"$lora" inspect "org/tiny@$commit" >"$tmp/out" 2>&1 && head -1 "$tmp/out" | grep -q "^$snap: Hugging Face model folder" \
    && grep -q "on disk .*(140,418 bytes)" "$tmp/out" && ok "inspect org/tiny@COMMIT: the snapshot, its size counted through the links" \
    || bad "inspect by commit: $(cat "$tmp/out")"
HF_HUB_OFFLINE=1 HF_HUB_CACHE="$tmp/empty" expect_hub_error "offline, not cached" \
    "org/tiny is not in the Hugging Face cache ($tmp/empty/models--org--tiny), and HF_HUB_OFFLINE is set" inspect org/tiny
HF_HUB_CACHE="$tmp/empty" expect_hub_error "hub unreachable" "cannot reach $HF_ENDPOINT for org/tiny" inspect org/tiny

# A download cut after 50000 bytes leaves blobs/SHA.incomplete; the next run continues it with a Range request.
start_server --cut model.safetensors:50000
export HF_HUB_CACHE="$tmp/cut"
repo="$tmp/cut/models--org--tiny" snap="$tmp/cut/models--org--tiny/snapshots/$commit"
expect_hub_error "a cut connection" "the download of org/tiny/model.safetensors stopped at 50000 of $weights_size bytes .*; run again to continue it" \
    inspect org/tiny
[ "$(wc -c <"$repo/blobs/$weights_sha.incomplete")" -eq 50000 ] && [ ! -e "$snap/model.safetensors" ] && [ ! -e "$repo/refs/main" ] \
    && ok "the cut download is kept as blobs/$weights_sha.incomplete (50000 bytes), nothing linked" || bad "after the cut: $(ls -lR "$repo")"
out=$("$lora" "${ev[@]}" --model org/tiny 2>"$tmp/err")
[ "$out" = "$expected" ] && grep -q "^GET /cdn/org/tiny/model.safetensors range=bytes=50000- " "$tmp/log" \
    && [ "$(grep -c "model.safetensors range=bytes=0-\|^GET .*model.safetensors range=- " "$tmp/log")" -eq 2 ] \
    && [ ! -e "$repo/blobs/$weights_sha.incomplete" ] && [ "$(sha256 "$repo/blobs/$weights_sha")" = "$weights_sha" ] \
    && ok "the next run resumes with Range: bytes=50000- and the blob checks out" || bad "resume: $out $(cat "$tmp/err") $(cat "$tmp/log")"

# A server that ignores Range answers 200 with the whole file: the partial file is started over.
start_server --cut model.safetensors:50000 --ignore-range
export HF_HUB_CACHE="$tmp/norange"
repo="$tmp/norange/models--org--tiny"
"$lora" inspect org/tiny >/dev/null 2>&1
out=$("$lora" "${ev[@]}" --model org/tiny 2>"$tmp/err")
[ "$out" = "$expected" ] && grep -q "^GET /cdn/org/tiny/model.safetensors range=bytes=50000- " "$tmp/log" \
    && [ "$(sha256 "$repo/blobs/$weights_sha")" = "$weights_sha" ] \
    && ok "a 200 to a Range request starts the file over, and it checks out" || bad "200 to Range: $out $(cat "$tmp/err")"

# Content that does not hash to the Hub's SHA-256 is deleted, and nothing of it enters the cache.
start_server --corrupt model.safetensors
export HF_HUB_CACHE="$tmp/corrupt"
repo="$tmp/corrupt/models--org--tiny"
expect_hub_error "hash mismatch" "org/tiny/model.safetensors from $HF_ENDPOINT has SHA-256 [0-9a-f]*, not the $weights_sha the Hub lists; the download was deleted" \
    inspect org/tiny
[ -z "$(ls "$repo/blobs" | grep "$weights_sha")" ] && [ -z "$(find "$repo/snapshots" -name model.safetensors)" ] && [ ! -e "$repo/refs/main" ] \
    && ok "after the mismatch: no blob, no .incomplete, no link, no ref" || bad "after the mismatch: $(ls -lR "$repo")"

# Missing repositories, revisions and files, a GGUF repository, and a token.
start_server --token secret-token
export HF_HUB_CACHE="$tmp/more"
expect_hub_error "no token" "org/tiny on $HF_ENDPOINT needs a token (HTTP 401): set HF_TOKEN, or check the name" inspect org/tiny
HF_TOKEN=wrong expect_hub_error "wrong token" "$HF_ENDPOINT refused the token for org/tiny (HTTP 401)" inspect org/tiny
echo secret-token >"$tmp/token"
HF_TOKEN_PATH="$tmp/token" "$lora" inspect org/tiny >"$tmp/out" 2>&1 && grep -q "^GET /api/models/org/tiny/revision/main range=- auth=yes" "$tmp/log" \
    && grep -q "^GET /cdn/org/tiny/model.safetensors range=- auth=no" "$tmp/log" \
    && ok "the token file is sent to the Hub, and not to the CDN it redirects to" || bad "token: $(cat "$tmp/out") $(cat "$tmp/log")"
export HF_TOKEN=secret-token
expect_hub_error "missing repo" "org/nope was not found on $HF_ENDPOINT (HTTP 404), nor is org/nope a local path" inspect org/nope
expect_hub_error "missing revision" "org/tiny on $HF_ENDPOINT has no revision v9 (HTTP 404)" inspect org/tiny@v9
expect_hub_error "GGUF repository" "org/ggufs holds GGUF files (small.gguf); name one: --model org/ggufs/small.gguf" inspect org/ggufs
expect_hub_error "missing GGUF file" "org/ggufs on $HF_ENDPOINT has no file big.gguf" inspect org/ggufs/big.gguf
"$lora" inspect org/ggufs/small.gguf >"$tmp/out" 2>&1 && grep -q "snapshots/.*/small.gguf: GGUF" "$tmp/out" \
    && ok "org/ggufs/small.gguf fetches that one file" || bad "gguf file: $(cat "$tmp/out")"
HF_ENDPOINT=ftp://example.com expect_hub_error "bad endpoint" "HF_ENDPOINT must be an http or https URL, not ftp://example.com" inspect org/other
expect_hub_error "a missing local path is still one" "model $tmp/nope/model not found" inspect "$tmp/nope/model"

finish
