"""Reference for `lora eval` on SmolLM2-135M-Instruct: transformers' loss under the eval rule.

Rule: each {"text"} row is the tokenizer's encoding with its default special tokens, then EOS; every
token after the first is predicted; the loss is the mean over all predicted tokens of all rows.

Install: pip install torch transformers gguf
Run:     bash scripts/fetch_smollm2.sh && python scripts/make_eval_reference.py
"""
import json
import math
import subprocess
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

root = Path(__file__).resolve().parent.parent
out = root / "Tests/LoRAKitTests/Fixtures/smollm2"
gguf = Path(subprocess.check_output(["bash", str(root / "scripts/fetch_smollm2.sh")], text=True).strip())
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                             attn_implementation="eager").eval()
total, count = 0.0, 0
for line in (out / "eval.jsonl").read_text().splitlines():
    ids = tok(json.loads(line)["text"])["input_ids"]
    if ids[-1] != tok.eos_token_id:
        ids = ids + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
    total += nll
    count += len(ids) - 1
loss = total / count
(out / "eval_reference.json").write_text(json.dumps({"loss": loss, "perplexity": math.exp(loss), "tokens": count}) + "\n")
print(f"loss {loss:.6f} over {count} tokens")
