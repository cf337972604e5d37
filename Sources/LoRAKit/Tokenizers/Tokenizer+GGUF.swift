import Foundation

extension Tokenizer {
    /// llama.cpp's `tokenizer.ggml.pre` names and the Hugging Face pre-tokenizers they stand for
    /// (the regular expressions of llama.cpp's vocabulary code, as tokenizers spells them).
    static func ggufPreTokenizer(_ pre: String, source: String) throws -> [String: Any] {
        let byteLevel: (Bool) -> [String: Any] = { regex in
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex]
        }
        func split(_ pattern: String) -> [String: Any] {
            ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false],
                byteLevel(false)]]
        }
        switch pre {
        case "default", "gpt-2", "gpt2":
            return byteLevel(true)
        case "smollm":
            return ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel(true)]]
        case "llama3", "llama-bpe", "llama-v3":
            return split(#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#)
        case "qwen2":
            return split(#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#)
        default:
            throw LoRAError("\(source): tokenizer.ggml.pre \"\(pre)\" is not supported (supported: default, gpt-2, smollm, llama3/llama-bpe, qwen2)")
        }
    }

    /// The tokenizer.json equivalent of a GGUF's `tokenizer.ggml.*` metadata, for byte-level BPE
    /// vocabularies (`tokenizer.ggml.model` "gpt2"). Control and user-defined tokens become added
    /// tokens; add_bos_token / add_eos_token become the post-processor's template.
    public static func tokenizerJSON(gguf file: GGUFFile) throws -> [String: Any] {
        let source = file.path
        let kind = (try? file.string("tokenizer.ggml.model")) ?? "(none)"
        guard kind == "gpt2" else {
            throw LoRAError("\(source): tokenizer.ggml.model \"\(kind)\" is not supported yet (byte-level BPE \"gpt2\" is)")
        }
        let tokens = try file.stringArray("tokenizer.ggml.tokens")
        let types = (try? file.intArray("tokenizer.ggml.token_type")) ?? [Int](repeating: 1, count: tokens.count)
        let merges = try file.stringArray("tokenizer.ggml.merges").map { m -> [String] in
            guard let space = m.firstIndex(of: " ") else { return [m] }
            return [String(m[..<space]), String(m[m.index(after: space)...])]
        }
        guard merges.allSatisfy({ $0.count == 2 }) else { throw LoRAError("\(source): a merge in tokenizer.ggml.merges has no space") }
        let pre = (try? file.string("tokenizer.ggml.pre")) ?? "default"
        var vocab: [String: Int] = [:]
        var added: [[String: Any]] = []
        for (id, token) in tokens.enumerated() {
            vocab[token] = id
            let type = id < types.count ? types[id] : 1
            if type == 3 || type == 4 {  // CONTROL, USER_DEFINED
                added.append(["id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": type == 4, "special": type == 3])
            }
        }
        func tokenId(_ key: String) -> Int? { file.metadata[key]?.intValue }
        let bos = tokenId("tokenizer.ggml.bos_token_id"), eos = tokenId("tokenizer.ggml.eos_token_id")
        let addBOS = (try? file.bool("tokenizer.ggml.add_bos_token")) ?? false
        let addEOS = (try? file.bool("tokenizer.ggml.add_eos_token")) ?? false
        var post: [String: Any] = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true]
        if (addBOS && bos != nil) || (addEOS && eos != nil) {
            func special(_ id: Int) -> [String: Any] { ["SpecialToken": ["id": tokens[id], "type_id": 0]] }
            var single: [[String: Any]] = []
            var specials: [String: Any] = [:]
            if addBOS, let bos { single.append(special(bos)); specials[tokens[bos]] = ["id": tokens[bos], "ids": [bos], "tokens": [tokens[bos]]] }
            single.append(["Sequence": ["id": "A", "type_id": 0]])
            if addEOS, let eos { single.append(special(eos)); specials[tokens[eos]] = ["id": tokens[eos], "ids": [eos], "tokens": [tokens[eos]]] }
            post = ["type": "Sequence", "processors": [post, ["type": "TemplateProcessing", "single": single, "pair": single + single,
                                                               "special_tokens": specials]]]
        }
        return [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added, "normalizer": NSNull(),
            "pre_tokenizer": try ggufPreTokenizer(pre, source: source), "post_processor": post,
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": pre.hasPrefix("llama"), "vocab": vocab, "merges": merges],
        ]
    }

    /// The tokenizer stored in a GGUF's metadata, with its bos/eos/pad ids and chat template.
    public static func load(gguf file: GGUFFile) throws -> Tokenizer {
        let tokenizer = try Tokenizer(json: try tokenizerJSON(gguf: file), source: file.path)
        tokenizer.bosTokenId = file.metadata["tokenizer.ggml.bos_token_id"]?.intValue
        tokenizer.eosTokenId = file.metadata["tokenizer.ggml.eos_token_id"]?.intValue
        tokenizer.padTokenId = file.metadata["tokenizer.ggml.padding_token_id"]?.intValue
        tokenizer.chatTemplate = file.metadata["tokenizer.chat_template"]?.stringValue
        return tokenizer
    }
}
