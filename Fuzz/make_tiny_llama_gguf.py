# Writes a tiny but complete llama GGUF (1 layer, hidden 8, vocab 16, byte-level tokenizer): the fuzz seed
# that reaches the model loader and the tokenizer.
import struct, random
random.seed(1)
def s(x): b = x.encode(); return struct.pack('<Q', len(b)) + b
def kv(key, t, payload): return s(key) + struct.pack('<I', t) + payload
U32, I32, F32, BOOL, STR, ARR = 4, 5, 6, 7, 8, 9
tokens = ["<s>", "</s>", "a", "b", "c", "Ġ", "ab", "Ġa", "d", "e", "!", "x", "y", "z", "abc", "<pad>"]
merges = ["a b", "Ġ a", "ab c"]
meta = [
    kv("general.architecture", STR, s("llama")),
    kv("general.name", STR, s("tiny")),
    kv("llama.context_length", U32, struct.pack('<I', 64)),
    kv("llama.embedding_length", U32, struct.pack('<I', 8)),
    kv("llama.block_count", U32, struct.pack('<I', 1)),
    kv("llama.feed_forward_length", U32, struct.pack('<I', 16)),
    kv("llama.attention.head_count", U32, struct.pack('<I', 2)),
    kv("llama.attention.head_count_kv", U32, struct.pack('<I', 1)),
    kv("llama.rope.dimension_count", U32, struct.pack('<I', 4)),
    kv("llama.attention.layer_norm_rms_epsilon", F32, struct.pack('<f', 1e-5)),
    kv("llama.rope.freq_base", F32, struct.pack('<f', 10000)),
    kv("tokenizer.ggml.model", STR, s("gpt2")),
    kv("tokenizer.ggml.pre", STR, s("smollm")),
    kv("tokenizer.ggml.tokens", ARR, struct.pack('<IQ', STR, len(tokens)) + b''.join(s(t) for t in tokens)),
    kv("tokenizer.ggml.token_type", ARR, struct.pack('<IQ', I32, len(tokens)) + struct.pack(f'<{len(tokens)}i', *([3, 3] + [1] * 13 + [3]))),
    kv("tokenizer.ggml.merges", ARR, struct.pack('<IQ', STR, len(merges)) + b''.join(s(m) for m in merges)),
    kv("tokenizer.ggml.bos_token_id", U32, struct.pack('<I', 0)),
    kv("tokenizer.ggml.eos_token_id", U32, struct.pack('<I', 1)),
    kv("tokenizer.ggml.padding_token_id", U32, struct.pack('<I', 15)),
    kv("tokenizer.ggml.add_bos_token", BOOL, b'\x01'),
    kv("tokenizer.chat_template", STR, s("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>{% endfor %}")),
]
d, f, v, hd = 8, 16, 16, 4
tensors = [("token_embd.weight", [d, v], 0), ("blk.0.attn_norm.weight", [d], 0), ("blk.0.attn_q.weight", [d, 2 * hd], 0),
           ("blk.0.attn_k.weight", [d, hd], 0), ("blk.0.attn_v.weight", [d, hd], 0), ("blk.0.attn_output.weight", [2 * hd, d], 0),
           ("blk.0.ffn_norm.weight", [d], 0), ("blk.0.ffn_gate.weight", [d, f], 0), ("blk.0.ffn_up.weight", [d, f], 0),
           ("blk.0.ffn_down.weight", [f, d], 1), ("output_norm.weight", [d], 0)]
infos, data = b'', b''
for name, shape, t in tensors:
    n = 1
    for x in shape: n *= x
    while len(data) % 32: data += b'\0'
    infos += s(name) + struct.pack('<I', len(shape)) + b''.join(struct.pack('<Q', x) for x in shape) + struct.pack('<IQ', t, len(data))
    vals = [random.uniform(-0.5, 0.5) for _ in range(n)]
    data += struct.pack(f'<{n}f', *vals) if t == 0 else struct.pack(f'<{n}e', *vals)
head = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(meta)) + b''.join(meta) + infos
while len(head) % 32: head += b'\0'
open(__import__('os').path.join(__import__('os').path.dirname(__file__), 'Seeds/gguf/tiny_llama.gguf'), 'wb').write(head + data)
