"""A SentencePiece-style ("llama") GGUF vocabulary fixture, and transformers' reading of it.

Takes the committed SentencePiece-style BPE tokenizer (Fixtures/tokenizers/sp_bpe/tokenizer.json),
writes its vocabulary the way llama.cpp stores SPM vocabularies (tokenizer.ggml.model "llama":
tokens, scores, token types; no merges), then encodes the committed text with the tokenizer
transformers builds from that GGUF (`AutoTokenizer.from_pretrained(..., gguf_file=...)`), which is
the oracle for Tokenizer+GGUF's SPM path.

Install: pip install gguf transformers tokenizers sentencepiece protobuf
Run:     python scripts/make_spm_gguf_fixture.py
"""
import json
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFWriter
from transformers import AutoTokenizer

root = Path(__file__).resolve().parent.parent
fx = root / "Tests/LoRAKitTests/Fixtures/tokenizers"
tj = json.loads((fx / "sp_bpe/tokenizer.json").read_text())
vocab = tj["model"]["vocab"]
added = {t["id"]: t for t in tj["added_tokens"]}
size = max(list(vocab.values()) + list(added)) + 1
tokens, scores, types = [""] * size, [0.0] * size, [1] * size
for tok, i in vocab.items():
    tokens[i] = tok
    scores[i] = -float(i)  # trained BPE gives later merges higher ids: score = -id keeps their order
    if tok.startswith("<0x") and len(tok) == 6:
        types[i] = 6  # BYTE
for i, t in added.items():
    tokens[i] = t["content"]
    types[i] = 2 if t["content"] == "<unk>" else 3  # UNKNOWN / CONTROL
    scores[i] = 0.0

out = fx / "sp_bpe/vocab.gguf"
w = GGUFWriter(str(out), "llama")
w.add_tokenizer_model("llama")
w.add_token_list(tokens)
w.add_token_scores(scores)
w.add_token_types(types)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_unk_token_id(0)
w.add_add_bos_token(True)
w.add_add_eos_token(False)
# A minimal model so transformers accepts the file (it reads the vocabulary only).
w.add_block_count(1); w.add_context_length(64); w.add_embedding_length(8); w.add_feed_forward_length(8)
w.add_head_count(1); w.add_head_count_kv(1); w.add_layer_norm_rms_eps(1e-5)
w.add_tensor("token_embd.weight", np.zeros((size, 8), dtype=np.float32))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

tok = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
text = (fx / "text.txt").read_bytes().decode("utf-8")  # bytes as they are: read_text would turn CRLF into LF
lines = [l for l in text.split("\n") if l]
expected = {
    "whole": tok(text)["input_ids"],
    "whole_no_special": tok(text, add_special_tokens=False)["input_ids"],
    "lines": [tok(l, add_special_tokens=False)["input_ids"] for l in lines],
}
expected["decoded"] = tok.decode(expected["whole_no_special"])
(fx / "sp_bpe/vocab_gguf_expected.json").write_text(json.dumps(expected) + "\n")
print(f"{out.name}: {size} tokens; whole text {len(expected['whole'])} ids")
