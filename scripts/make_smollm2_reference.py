"""Reference numbers for the end-to-end tests on the real SmolLM2-135M-Instruct GGUF.

transformers loads the GGUF (`gguf_file=`), dequantizing every tensor to float32, and computes:
  - the mean next-token cross-entropy over Fixtures/smollm2/text.txt, tokenized by the GGUF's own
    tokenizer with its default special tokens (every token after the first is predicted);
  - 20 tokens of greedy decoding after a fixed prompt.
Token ids are stored too, so the Swift test checks the model independently of the tokenizer.

Install: pip install torch transformers gguf
Run:     bash scripts/fetch_smollm2.sh && python scripts/make_smollm2_reference.py
"""
import json
import os
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
text = (out / "text.txt").read_text()
ids = tok(text)["input_ids"]
with torch.no_grad():
    loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()

prompt = "The capital of France is"
prompt_ids = tok(prompt)["input_ids"]
with torch.no_grad():
    g = model.generate(input_ids=torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                       max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=tok.eos_token_id,
                       output_scores=True, return_dict_in_generate=True)
new = g.sequences[0, len(prompt_ids):].tolist()
gap = min((torch.topk(s[0], 2).values[0] - torch.topk(s[0], 2).values[1]).item() for s in g.scores)
ref = {
    "gguf_sha256_prefix": __import__("hashlib").sha256(gguf.read_bytes()).hexdigest()[:16],
    "text_ids": ids, "loss": loss, "tokens": len(ids),
    "prompt": prompt, "prompt_ids": prompt_ids, "generated": new, "generated_text": tok.decode(new),
    "min_top2_gap": gap,
    "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
}
(out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
print(f"loss {loss:.6f} over {len(ids)} tokens; generated {tok.decode(new)!r} (min top-2 gap {gap:.3e})")
