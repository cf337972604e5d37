#!/usr/bin/env python3
"""Write Tests/LoRAKitTests/Fixtures/tiny_chat/: a tiny chat model for tests that drive the `lora` CLI.

The model is a randomly initialised LlamaForCausalLM (seed 1234, float32): hidden 32, 2 layers, 4 heads,
2 KV heads (head_dim 8), intermediate 64, tied embeddings, vocab = the tokenizer's size. Its tokenizer is
a byte-level BPE trained here with `tokenizers` on TEXT below (SmolLM2's pipeline: Digits(individual)
+ ByteLevel pre-tokenizer, ByteLevel post-processor and decoder), 384 ids: the 3 special tokens
<|endoftext|> (0), <|im_start|> (1), <|im_end|> (2), the 256 byte symbols, 125 merges. tokenizer_config.json
sets bos <|im_start|>, eos <|im_end|>, pad <|endoftext|> and a ChatML chat_template (SmolLM2's without
its default system prompt). Files:

    config.json, generation_config.json, model.safetensors   (save_pretrained, float32)
    tokenizer.json, tokenizer_config.json

The whole folder is about 150 KB. Training the tokenizer and the seeded init are deterministic, so
re-running the script rewrites the same files (for the same torch / tokenizers versions).

Helpers for checking the CLI against transformers on this fixture:

    python scripts/make_cli_fixture.py --tokenize "hello"          # ids, as `lora tokenize`
    python scripts/make_cli_fixture.py --eval-reference DATA.jsonl   # as `lora eval --json`

--eval-reference follows `lora eval`'s rule (Sources/lora/EvalCommand.swift, DataSet.swift): a {"text"}
row is the tokenizer's encoding with its default special tokens; a {"messages"} row is the chat template
rendered without a generation prompt, encoded without special tokens; a {"prompt","completion"} row is
the template on [user: prompt, assistant: completion]; EOS is appended when the sequence does not end
in it; every token after the first is predicted; the loss is the mean over all predicted tokens.

Requirements: torch, transformers (5.x), tokenizers, safetensors
(written with torch 2.15, transformers 5.24, tokenizers 0.23.3, safetensors 0.8).
Run from anywhere:  /work/venv/bin/python scripts/make_cli_fixture.py
"""
import argparse
import json
import math
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests/LoRAKitTests/Fixtures/tiny_chat"

SEED = 1234
VOCAB_SIZE = 384
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Plain English for the BPE merges: short sentences, questions and answers, a few numbers.
TEXT = """\
The cat sat on the mat and looked at the door.
The dog ran to the park and played with a red ball.
What is the capital of France? The capital of France is Paris.
What is the capital of Italy? The capital of Italy is Rome.
What is two plus two? Two plus two is four.
How many days are in a week? There are 7 days in a week.
How many hours are in a day? There are 24 hours in a day.
Hello! How are you today? I am fine, thank you. How can I help you?
Please tell me a short story about a little bird.
Once upon a time there was a little bird that lived in a tall tree near the river.
Every morning the bird sang a song, and the other animals came to listen.
One day the wind was strong and the bird could not fly, so it waited in the tree.
When the sun came out again, the bird flew over the river and the green hills.
The end. I hope you liked the story.
Water boils at 100 degrees and freezes at 0 degrees.
The sun rises in the east and sets in the west.
A year has 12 months, and a month has about 30 days.
Reading books is a good way to learn new words and new ideas.
The teacher asked the students to write their names on the paper.
She opened the window because the room was warm.
He made tea with milk and sugar, then sat down to read the news.
Thank you for your help! You are welcome. Have a nice day.
Can you answer a question? Yes, of course. What would you like to know?
The train leaves at 9 in the morning and arrives at 5 in the evening.
Green, blue, red and yellow are colors. The sky is blue and the grass is green.
"""


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT.splitlines(), trainer=trainer)
    assert tok.get_vocab_size() == VOCAB_SIZE, f"trained {tok.get_vocab_size()} ids, wanted {VOCAB_SIZE}"
    for i, s in enumerate(SPECIAL):
        assert tok.token_to_id(s) == i
    return tok


def write_fixture():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    tok = build_tokenizer()
    tok.save(str(OUT / "tokenizer.json"))
    tokenizer_config = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }
    (OUT / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")

    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        initializer_range=0.05,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=SPECIAL.index("<|im_start|>"),
        eos_token_id=SPECIAL.index("<|im_end|>"),
        pad_token_id=SPECIAL.index("<|endoftext|>"),
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(OUT, safe_serialization=True)

    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT.relative_to(ROOT)}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{tok.get_vocab_size()} ids, {total} bytes")
    assert total < 200_000, "the fixture should stay under 200 KB"


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(OUT)


def row_ids(tok, row):
    if "text" in row:
        ids = tok(row["text"])["input_ids"]
    else:
        if "messages" in row:
            messages = row["messages"]
        else:
            messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids or ids[-1] != tok.eos_token_id:
        ids = ids + [tok.eos_token_id]
    return ids


def eval_reference(path):
    import torch
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(OUT, dtype=torch.float32, attn_implementation="eager").eval()
    total, count = 0.0, 0
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        ids = row_ids(tok, json.loads(line))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
        total += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
        count += len(ids) - 1
    loss = total / count
    print(json.dumps({"loss": loss, "perplexity": math.exp(loss), "tokens": count}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenize", metavar="TEXT", help="print the ids of TEXT (encode, no special tokens)")
    ap.add_argument("--eval-reference", metavar="JSONL", help="print transformers' loss under lora eval's rule")
    args = ap.parse_args()
    if args.tokenize is not None:
        print(" ".join(map(str, load_tokenizer().encode(args.tokenize, add_special_tokens=False))))
    elif args.eval_reference:
        eval_reference(args.eval_reference)
    else:
        write_fixture()


if __name__ == "__main__":
    sys.exit(main())
