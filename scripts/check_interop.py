"""Check that swift-lora's files load in the Python ecosystem with the same numbers.

Needs: pip install torch transformers peft safetensors
Run:   swift test --filter InteropExportTests && python scripts/check_interop.py

The Swift test trains the llama3_untied fixture's adapter for 3 steps (LoRA on all linear layers
and lm_head), saves it in PEFT's format, merges it, and writes the merged model as a Hugging Face
folder, all under .build/interop/. This script loads
  1. the adapter with PeftModel.from_pretrained on the fixture's base model, and
  2. the merged folder with AutoModelForCausalLM.from_pretrained,
and compares loss and logits (at real, unpadded positions) with what Swift computed.
"""
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

root = Path(__file__).resolve().parent.parent
fixture = root / "Tests/LoRAKitTests/Fixtures/llama3_untied"
out = root / ".build/interop"

ref = load_file(fixture / "reference.safetensors")
ours = load_file(out / "ours.safetensors")
ids, mask, labels = ref["input_ids"], ref["attention_mask"], ref["labels"]
real = mask.bool()


def run(model):
    model.eval()
    with torch.no_grad():
        o = model(input_ids=ids, attention_mask=mask, labels=labels)
    return o.loss.item(), o.logits


def compare(name, loss, logits):
    rel_loss = abs(loss - ours["loss"].item()) / ours["loss"].item()
    scale = ours["logits"][real].abs().max().item()
    rel_logits = (logits[real] - ours["logits"][real]).abs().max().item() / scale
    ok = rel_loss < 1e-5 and rel_logits < 1e-5
    print(f"{name:44s} loss {loss:.6f} (swift {ours['loss'].item():.6f}, rel {rel_loss:.1e}), "
          f"logits rel {rel_logits:.1e}  {'OK' if ok else 'MISMATCH'}")
    return ok


base = AutoModelForCausalLM.from_pretrained(fixture / "model", torch_dtype=torch.float32, attn_implementation="eager")
peft_model = PeftModel.from_pretrained(base, out / "adapter")
ok1 = compare("PeftModel.from_pretrained(our adapter)", *run(peft_model))
merged = AutoModelForCausalLM.from_pretrained(out / "merged", torch_dtype=torch.float32, attn_implementation="eager")
ok2 = compare("transformers from_pretrained(our merged folder)", *run(merged))
sys.exit(0 if ok1 and ok2 else 1)
