"""Adapters that `lora train --method M` (or `--init pissa|olora`) writes load in PEFT and give the same loss there as `lora eval`.

For each of lora-plus, lora-fa, dora, vera, adalora, lora-drop, pissa and olora: trains 20 steps with the CLI on the tiny_chat fixture and
a generated chat data set (as scripts/cli_checks.sh makes it), then computes the validation loss of the
adapted model twice: with `lora eval --mask-prompt --json` and with transformers + PEFT
(PeftModel.from_pretrained on the adapter folder as written), under lora eval's rule for chat rows with
--mask-prompt: the chat template rendered to text and encoded without special tokens, EOS appended unless
it is last; the targets are each assistant turn, from the end of the generation prompt that asks for it
to the end of the turn, and the appended EOS. The CLI prints no logits, so each validation row is also
evaluated alone (`lora eval` on a one-row file) and compared with PEFT's loss on that row.
Exits non-zero unless, for every method, PEFT loads the adapter with no key missing and none left unused, the
losses (all rows, and each row alone) agree within 1e-5 relative, and the adapter lowered the loss.

Install: pip install torch transformers peft safetensors
Run:     python scripts/check_variants_peft.py [path/to/lora]   (default: .build/release/lora)
"""
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

root = Path(__file__).resolve().parent.parent
lora = sys.argv[1] if len(sys.argv) > 1 else str(root / ".build/release/lora")
tiny = root / "Tests/LoRAKitTests/Fixtures/tiny_chat"
tmp = Path(tempfile.mkdtemp())
data = tmp / "data"
data.mkdir()


def row(i):
    return json.dumps({"messages": [{"role": "user", "content": f"word {i}"},
                                    {"role": "assistant", "content": f"the word is {i}"}]})


(data / "train.jsonl").write_text("".join(row(i) + "\n" for i in range(1, 25)))
valid = [row(i) for i in (30, 31, 32, 33)]
(data / "valid.jsonl").write_text("".join(line + "\n" for line in valid))
for k, line in enumerate(valid):
    (tmp / f"row{k}.jsonl").write_text(line + "\n")

# method → its train flags (VeRA's rank and rate as in cli_checks.sh; PiSSA/OLoRA adapters are saved converted)
methods = {"lora-plus": ["--method", "lora-plus"], "lora-fa": ["--method", "lora-fa"], "dora": ["--method", "dora"],
           "vera": ["--method", "vera", "--rank", "16", "--learning-rate", "5e-2"],
           "adalora": ["--method", "adalora", "--tinit", "3", "--tfinal", "5"],
           "lora-drop": ["--method", "lora-drop", "--drop-probe-steps", "5", "--drop-sample-ratio", "0.5"],
           "pissa": ["--init", "pissa"], "olora": ["--init", "olora"]}

tok = AutoTokenizer.from_pretrained(tiny)
eos = tok.eos_token_id


def encode(messages):
    """lora eval's tokens and targets for a chat row with --mask-prompt (DataSet.encode)."""
    def render(ms, generation_prompt):
        text = tok.apply_chat_template(ms, tokenize=False, add_generation_prompt=generation_prompt)
        return tok(text, add_special_tokens=False)["input_ids"]
    ids = render(messages, False)
    targets = [False] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start, end = len(render(messages[:i], True)), min(len(ids), len(render(messages[:i + 1], False)))
            targets[start:end] = [True] * max(0, end - start)
    if ids[-1] != eos:
        ids, targets = ids + [eos], targets + [True]
    targets[0] = False
    return ids, targets


rows = [encode(json.loads(line)["messages"]) for line in valid]


def row_loss(m, ids, targets):
    with torch.no_grad():
        logits = m(input_ids=torch.tensor([ids])).logits[0, :-1]
    picked = torch.tensor(targets[1:])
    total = torch.nn.functional.cross_entropy(logits[picked], torch.tensor(ids[1:])[picked], reduction="sum").item()
    return total, int(picked.sum())


def loss_of(m):
    per_row = [row_loss(m, ids, targets) for ids, targets in rows]
    return sum(t for t, _ in per_row) / sum(n for _, n in per_row), sum(n for _, n in per_row), [t / n for t, n in per_row]


def lora_eval(data_path, adapter):
    out = subprocess.check_output([lora, "eval", "--model", str(tiny), "--data", str(data_path), "--split", "valid",
                                   "--mask-prompt", "--adapter-path", str(adapter), "--json"], text=True)
    return json.loads(out)


failed = []
for method, extra in methods.items():
    adapter = tmp / method
    args = [lora, "train", "--model", str(tiny), "--data", str(data), "--adapter-path", str(adapter), "--iters", "20",
            "--batch-size", "4", "--learning-rate", "1e-2", "--mask-prompt", "--rank", "4",
            "--steps-per-report", "10"] + extra
    trained = subprocess.run(args, capture_output=True, text=True)
    if trained.returncode != 0:
        print(f"{method:9s} lora train failed: {trained.stderr.strip()}")
        failed.append(method)
        continue
    ours_trainable = next((l for l in trained.stdout.splitlines() if l.startswith("trainable params")), "?")
    ours = lora_eval(data, adapter)
    ours_rows = [lora_eval(tmp / f"row{k}.jsonl", adapter)["loss"] for k in range(len(rows))]

    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32, attn_implementation="eager")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # is_trainable so that print_trainable_parameters counts the adapter's parameters
            model = PeftModel.from_pretrained(base, adapter, is_trainable=True).eval()
    except Exception as e:  # noqa: BLE001 — report why PEFT refused the folder and go on
        print(f"{method:9s} PeftModel.from_pretrained failed: {type(e).__name__}: {e}")
        failed.append(method)
        continue
    # PEFT (0.21) says that AdaLoRA's rank_pattern keys ("...q_proj.lora_E") "did not match any targeted
    # module" for every AdaLoRA adapter, its own too (PeftModel.from_pretrained on the PEFT-trained fixture
    # Fixtures/variants/adalora/trained_adapter prints it), then applies them (resize_modules_by_rank_pattern);
    # the trainable-parameter counts below show the pruned ranks took effect.
    def peft_quirk(message):
        return method == "adalora" and message.startswith("The following rank_pattern keys did not match any targeted module")
    key_warnings = [str(w.message) for w in caught if "keys" in str(w.message).lower() and not peft_quirk(str(w.message))]
    # PEFT warns of missing keys only; a key it would ignore is found by comparing with what it would save.
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        ignored = sorted(set(f.keys()) - set(get_peft_model_state_dict(model).keys()))
    if ignored:
        key_warnings.append(f"keys in adapter_model.safetensors that PEFT does not use: {ignored}")
    print(f"{method:9s} ours:  {ours_trainable}")
    print(f"{method:9s} PEFT:  ", end="", flush=True)
    model.print_trainable_parameters()

    peft_loss, tokens, peft_rows = loss_of(model)
    with model.disable_adapter():
        base_loss, _, _ = loss_of(model)
    relative = abs(ours["loss"] - peft_loss) / peft_loss
    row_relative = max(abs(a - b) / b for a, b in zip(ours_rows, peft_rows))
    ok = (relative < 1e-5 and row_relative < 1e-5 and ours["tokens"] == tokens and peft_loss < base_loss
          and not key_warnings)
    print(f"{method:9s} lora eval {ours['loss']:.7f} ({ours['tokens']} tokens), PEFT {peft_loss:.7f} ({tokens} tokens), "
          f"relative difference {relative:.2e}; rows alone: max relative difference {row_relative:.2e}; "
          f"base model {base_loss:.6f}  {'OK' if ok else 'MISMATCH'}")
    for w in key_warnings:
        print(f"{method:9s} PEFT warning: {w}")
    if not ok:
        failed.append(method)

print("ok" if not failed else f"FAILED: {', '.join(failed)}")
sys.exit(1 if failed else 0)
