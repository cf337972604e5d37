"""An adapter made by `lora train` loads in PEFT and gives the same loss there as `lora eval`.

Trains a short run with the CLI, then computes the loss of the adapted model on the validation split
twice: with `lora eval --json` and with transformers + PEFT (PeftModel.from_pretrained on the adapter
folder as written), under lora eval's rule for chat rows: the chat template rendered to text, encoded
without special tokens, EOS appended unless it is last; every token after the first is predicted.
Exits non-zero unless the two losses agree within 1e-4 relative and training lowered the loss.

Install: pip install torch transformers peft gguf
Run:     python scripts/check_train_peft.py [path/to/lora] [model] [data folder]
         (defaults: .build/release/lora, the SmolLM2 GGUF from scripts/fetch_smollm2.sh, data/quickstart)
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

root = Path(__file__).resolve().parent.parent
lora = sys.argv[1] if len(sys.argv) > 1 else str(root / ".build/release/lora")
model_path = Path(sys.argv[2] if len(sys.argv) > 2 else
                  subprocess.check_output(["bash", str(root / "scripts/fetch_smollm2.sh")], text=True).strip())
data = Path(sys.argv[3] if len(sys.argv) > 3 else root / "data/quickstart")
adapter = Path(tempfile.mkdtemp()) / "adapter"

subprocess.run([lora, "train", "--model", str(model_path), "--data", str(data), "--adapter-path", str(adapter),
                "--iters", "20", "--batch-size", "4", "--learning-rate", "1e-3", "--rank", "8", "--steps-per-report", "10"],
               check=True, stdout=subprocess.DEVNULL)
ours = json.loads(subprocess.check_output([lora, "eval", "--model", str(model_path), "--data", str(data), "--split", "valid",
                                           "--adapter-path", str(adapter), "--json"], text=True))

if model_path.suffix == ".gguf":
    kwargs, folder = {"gguf_file": model_path.name}, model_path.parent
else:
    kwargs, folder = {}, model_path
tok = AutoTokenizer.from_pretrained(folder, **kwargs)
base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", **kwargs)
model = PeftModel.from_pretrained(base, adapter).eval()


def loss_of(m):
    total, count = 0.0, 0
    for line in (data / "valid.jsonl").read_text().splitlines():
        text = tok.apply_chat_template(json.loads(line)["messages"], tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if ids[-1] != tok.eos_token_id:
            ids = ids + [tok.eos_token_id]
        with torch.no_grad():
            logits = m(input_ids=torch.tensor([ids])).logits[0, :-1]
        total += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
        count += len(ids) - 1
    return total / count, count


peft_loss, tokens = loss_of(model)
with model.disable_adapter():
    base_loss, _ = loss_of(model)
relative = abs(ours["loss"] - peft_loss) / peft_loss
print(f"lora eval {ours['loss']:.6f} ({ours['tokens']} tokens), PEFT {peft_loss:.6f} ({tokens} tokens), "
      f"relative difference {relative:.2e}; base model {base_loss:.6f}")
ok = relative < 1e-4 and ours["tokens"] == tokens and peft_loss < base_loss
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
