import Foundation
import LoRAFormats

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

    /// The tokenizer.json equivalent of a GGUF's `tokenizer.ggml.*` metadata: byte-level BPE
    /// ("gpt2") or SentencePiece BPE ("llama"). Unknown, control and user-defined tokens become added
    /// tokens; add_bos_token / add_eos_token become the post-processor's template.
    public static func tokenizerJSON(gguf file: GGUFFile) throws -> [String: Any] {
        let kind = (try? file.string("tokenizer.ggml.model")) ?? "(none)"
        switch kind {
        case "gpt2": return try byteLevelJSON(file)
        case "llama": return try sentencePieceJSON(file)
        default: throw LoRAError("\(file.path): tokenizer.ggml.model \"\(kind)\" is not supported (gpt2 and llama are)")
        }
    }

    /// Refuses an empty vocabulary, per-token arrays of another length than `tokenizer.ggml.tokens`,
    /// and a special-token id that is not a token of it, naming the key.
    static func checkVocabulary(_ file: GGUFFile) throws {
        let tokens = try file.stringArray("tokenizer.ggml.tokens")
        guard !tokens.isEmpty else { throw LoRAError("\(file.path): tokenizer.ggml.tokens is empty") }
        for key in ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"] {
            if let count = file.metadata[key]?.arrayValue?.count, count != tokens.count {
                throw LoRAError("\(file.path): \(key) has \(count) entries but tokenizer.ggml.tokens has \(tokens.count)")
            }
        }
        for key in ["bos", "eos", "padding", "unknown"].map({ "tokenizer.ggml.\($0)_token_id" }) {
            _ = try specialTokenId(file, key, tokenCount: tokens.count)
        }
    }

    /// The id under `key` (bos, eos, padding, unknown), nil when absent; an error unless it is a token of the vocabulary.
    static func specialTokenId(_ file: GGUFFile, _ key: String, tokenCount: Int) throws -> Int? {
        guard let value = file.metadata[key] else { return nil }
        guard let id = value.intValue, (0..<tokenCount).contains(id) else {
            let shown = value.intValue.map(String.init) ?? "a \(value.type.name)"
            throw LoRAError("\(file.path): \(key) is \(shown), not a token id of the \(tokenCount)-token vocabulary")
        }
        return id
    }

    /// Added tokens (GGUF token types 2 unknown, 3 control, 4 user-defined) and the post-processor.
    private static func specialParts(_ file: GGUFFile, tokens: [String], types: [Int], defaultAddBOS: Bool,
                                     base post: [String: Any]?) throws -> (added: [[String: Any]], post: Any) {
        var added: [[String: Any]] = []
        for (id, token) in tokens.enumerated() {
            let type = id < types.count ? types[id] : 1
            if type == 2 || type == 3 || type == 4 {
                added.append(["id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": type == 4, "special": type != 4])
            }
        }
        let bos = try specialTokenId(file, "tokenizer.ggml.bos_token_id", tokenCount: tokens.count)
        let eos = try specialTokenId(file, "tokenizer.ggml.eos_token_id", tokenCount: tokens.count)
        let addBOS = ((try? file.bool("tokenizer.ggml.add_bos_token")) ?? defaultAddBOS) && bos != nil
        let addEOS = ((try? file.bool("tokenizer.ggml.add_eos_token")) ?? false) && eos != nil
        guard addBOS || addEOS else { return (added, post ?? NSNull()) }
        func special(_ id: Int) -> [String: Any] { ["SpecialToken": ["id": tokens[id], "type_id": 0]] }
        var single: [[String: Any]] = [], specials: [String: Any] = [:]
        for (on, id) in [(addBOS, bos), (addEOS, eos)] where on {
            specials[tokens[id!]] = ["id": tokens[id!], "ids": [id!], "tokens": [tokens[id!]]]
        }
        if addBOS { single.append(special(bos!)) }
        single.append(["Sequence": ["id": "A", "type_id": 0]])
        if addEOS { single.append(special(eos!)) }
        let template: [String: Any] = ["type": "TemplateProcessing", "single": single, "pair": single + single, "special_tokens": specials]
        return (added, post.map { ["type": "Sequence", "processors": [$0, template]] } ?? template)
    }

    /// SentencePiece BPE as transformers reads it from a GGUF: merges are every split of a vocabulary
    /// piece into two vocabulary pieces, ranked by the piece's score (tokenizers' SentencePieceExtractor),
    /// a Metaspace pre-tokenizer, byte fallback, and BOS added by default.
    private static func sentencePieceJSON(_ file: GGUFFile) throws -> [String: Any] {
        try checkVocabulary(file)
        let tokens = try file.stringArray("tokenizer.ggml.tokens")
        let scores = (try? file.floatArray("tokenizer.ggml.scores")) ?? [Float](repeating: 0, count: tokens.count)
        let types = (try? file.intArray("tokenizer.ggml.token_type")) ?? [Int](repeating: 1, count: tokens.count)
        var vocab: [String: Int] = [:]
        for (id, token) in tokens.enumerated() where vocab[token] == nil { vocab[token] = id }
        var merges: [(left: String, right: String, score: Float)] = []
        for (id, token) in tokens.enumerated() where id >= types.count || types[id] == 1 {
            let scalars = Array(token.unicodeScalars)
            var local: [(Int, Int, String, String)] = []
            for cut in 1..<max(1, scalars.count) {
                let l = String(String.UnicodeScalarView(scalars[..<cut])), r = String(String.UnicodeScalarView(scalars[cut...]))
                if let li = vocab[l], let ri = vocab[r] { local.append((li, ri, l, r)) }
            }
            local.sort { ($0.0, $0.1) < ($1.0, $1.1) }
            let score = id < scores.count ? scores[id] : 0
            merges += local.map { ($0.2, $0.3, score) }
        }
        let ranked = merges.enumerated().sorted { a, b in
            a.element.score != b.element.score ? a.element.score > b.element.score : a.offset < b.offset
        }.map { [$0.element.left, $0.element.right] }
        let unk = types.firstIndex(of: 2).map { tokens[$0] }
        let (added, post) = try specialParts(file, tokens: tokens, types: types, defaultAddBOS: true, base: nil)
        return [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added, "normalizer": NSNull(),
            "pre_tokenizer": ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false],
            "post_processor": post,
            "decoder": ["type": "Sequence", "decoders": [
                ["type": "Replace", "pattern": ["String": "▁"], "content": " "], ["type": "ByteFallback"], ["type": "Fuse"],
                ["type": "Strip", "content": " ", "start": 1, "stop": 0]]],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": unk.map { $0 as Any } ?? NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                      "vocab": vocab, "merges": ranked],
        ]
    }

    private static func byteLevelJSON(_ file: GGUFFile) throws -> [String: Any] {
        try checkVocabulary(file)
        let source = file.path
        let tokens = try file.stringArray("tokenizer.ggml.tokens")
        let types = (try? file.intArray("tokenizer.ggml.token_type")) ?? [Int](repeating: 1, count: tokens.count)
        // Split on the first space scalar (not Character: a space followed by a joiner is one Character).
        let merges = try file.stringArray("tokenizer.ggml.merges").map { m -> [String] in
            let scalars = m.unicodeScalars
            guard let space = scalars.firstIndex(of: " ") else { return [m] }
            return [String(scalars[..<space]), String(scalars[scalars.index(after: space)...])]
        }
        guard merges.allSatisfy({ $0.count == 2 }) else { throw LoRAError("\(source): a merge in tokenizer.ggml.merges has no space") }
        let pre = (try? file.string("tokenizer.ggml.pre")) ?? "default"
        var vocab: [String: Int] = [:]
        for (id, token) in tokens.enumerated() { vocab[token] = id }
        let byteLevelPost: [String: Any] = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true]
        let (added, post) = try specialParts(file, tokens: tokens, types: types, defaultAddBOS: false, base: byteLevelPost)
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
        let count = try file.stringArray("tokenizer.ggml.tokens").count
        tokenizer.bosTokenId = try specialTokenId(file, "tokenizer.ggml.bos_token_id", tokenCount: count)
        tokenizer.eosTokenId = try specialTokenId(file, "tokenizer.ggml.eos_token_id", tokenCount: count)
        tokenizer.padTokenId = try specialTokenId(file, "tokenizer.ggml.padding_token_id", tokenCount: count)
        tokenizer.chatTemplate = file.metadata["tokenizer.chat_template"]?.stringValue
        return tokenizer
    }

    /// tokenizer.json (from the vocabulary) and tokenizer_config.json (special tokens, chat template),
    /// so transformers' AutoTokenizer loads a folder made from a GGUF model.
    public static func huggingFaceFiles(gguf: GGUFFile) throws -> [(name: String, contents: Data)] {
        let json = try tokenizerJSON(gguf: gguf)
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        func token(_ key: String) throws -> String? { try specialTokenId(gguf, key, tokenCount: tokens.count).map { tokens[$0] } }
        var config: [String: Any] = ["tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": false,
                                     "model_max_length": gguf.metadata[(gguf.architecture ?? "llama") + ".context_length"]?.intValue ?? 2048]
        if let t = try token("tokenizer.ggml.bos_token_id") { config["bos_token"] = t }
        if let t = try token("tokenizer.ggml.eos_token_id") { config["eos_token"] = t }
        if let t = try token("tokenizer.ggml.padding_token_id") { config["pad_token"] = t }
        if let t = try token("tokenizer.ggml.unknown_token_id") { config["unk_token"] = t }
        if let template = gguf.metadata["tokenizer.chat_template"]?.stringValue { config["chat_template"] = template }
        return try [("tokenizer.json", json), ("tokenizer_config.json", config)].map { name, object in
            (name, try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
        }
    }
}
