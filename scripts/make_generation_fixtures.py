"""Greedy-generation fixtures for swift-lora: transformers' `generate` on the tiny random models
of scripts/make_fixtures.py, with their PEFT adapters applied (unmerged).

Install: pip install torch transformers peft safetensors
Run:     python scripts/make_generation_fixtures.py      (after scripts/make_fixtures.py)

Writes Tests/LoRAKitTests/Fixtures/generation.json: per case the prompt ids, the 20 generated ids,
and the smallest gap between the best and second-best logit over the steps (a gap far above
float32 noise means the argmax cannot flip between two correct implementations).
"""
import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

root = Path(__file__).resolve().parent.parent
fixtures = root / "Tests/LoRAKitTests/Fixtures"
PROMPT = [5, 17, 42, 99, 3, 250, 7, 64]
NEW = 20

out = {}
for case in ["llama_tied", "llama3_untied", "qwen2_bias", "mistral_layers"]:
    base = AutoModelForCausalLM.from_pretrained(fixtures / case / "model", dtype=torch.float32,
                                                attn_implementation="eager")
    model = PeftModel.from_pretrained(base, fixtures / case / "adapter").eval()
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, do_sample=False,
                           eos_token_id=None, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    new = g.sequences[0, len(PROMPT):].tolist()
    gaps = []
    for s in g.scores:
        top = torch.topk(s[0], 2).values
        gaps.append((top[0] - top[1]).item())
    out[case] = {"prompt": PROMPT, "generated": new, "min_top2_gap": min(gaps)}
    print(case, new, f"min gap {min(gaps):.2e}")
(fixtures / "generation.json").write_text(json.dumps(out, indent=1) + "\n")
