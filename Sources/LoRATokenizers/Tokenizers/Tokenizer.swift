import Foundation
import LoRAFormats

/// A Hugging Face tokenizer.json (BPE models: byte-level like GPT-2 / Llama 3 / Qwen2 / SmolLM2, or
/// SentencePiece-style with byte fallback), encoding and decoding id for id as the `tokenizers` library does.
///
/// The pipeline is tokenizers': added tokens are cut out of the text first, the rest is normalized,
/// pre-tokenized into words, and each word goes through the BPE model; the post-processor adds the model's
/// special tokens when asked. Components this file does not implement are refused at load time, naming them.
public final class Tokenizer: @unchecked Sendable {
    /// One past the highest id (model vocab and added tokens).
    public let vocabSize: Int
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    public var padTokenId: Int?
    /// tokenizer_config.json's chat_template (or chat_template.jinja beside it), if any.
    public var chatTemplate: String?

    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let model: BPEModel
    let postProcessor: PostProcessor?
    let decoder: Decoder?
    let added: AddedVocabulary
    let truncation: Truncation?
    let padding: Padding?

    /// Loads `path`: a tokenizer.json file, or a folder holding one. A tokenizer_config.json beside it supplies
    /// the bos / eos / pad tokens and the chat template.
    public static func load(path: String) throws -> Tokenizer {
        var isDir: ObjCBool = false
        var file = path
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            file = (path as NSString).appendingPathComponent("tokenizer.json")
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw LoRAError("cannot read tokenizer file \(file)")
        }
        let tokenizer = try Tokenizer(data: data, source: file)
        let folder = (file as NSString).deletingLastPathComponent
        try tokenizer.readConfig(folder: folder)
        return tokenizer
    }

    /// Parses tokenizer.json contents; `source` names it in errors.
    public convenience init(data: Data, source: String = "tokenizer.json") throws {
        guard let json = try JSONReader.parse(data, source: source) as? [String: Any] else {
            throw LoRAError("\(source) is not a JSON object")
        }
        try self.init(json: json, source: source)
    }

    /// Builds the tokenizer from parsed tokenizer.json.
    public init(json j: [String: Any], source: String = "tokenizer.json") throws {
        if let version = j["version"] as? String, version != "1.0" {
            throw LoRAError("\(source): tokenizer.json version \(version) is not supported")
        }
        truncation = try Truncation(json: j["truncation"], source: source)
        padding = try Padding(json: j["padding"], source: source)
        guard let m = j["model"] as? [String: Any] else { throw LoRAError("\(source): no \"model\" object") }
        let modelType = m["type"] as? String ?? (m["merges"] != nil ? "BPE" : "(no type)")
        guard modelType == "BPE" else { throw LoRAError("\(source): model type \(modelType) is not supported (only BPE)") }
        model = try BPEModel(json: m, source: source)

        func component<T>(_ key: String, _ make: ([String: Any], String) throws -> T) throws -> T? {
            guard let v = j[key], !(v is NSNull) else { return nil }
            guard let obj = v as? [String: Any] else { throw LoRAError("\(source): \"\(key)\" is not an object") }
            return try make(obj, source)
        }
        normalizer = try component("normalizer", makeNormalizer)
        preTokenizer = try component("pre_tokenizer", makePreTokenizer)
        postProcessor = try component("post_processor", makePostProcessor)
        decoder = try component("decoder", makeDecoder)

        var list: [AddedToken] = []
        for entry in j["added_tokens"] as? [[String: Any]] ?? [] {
            guard let content = entry["content"] as? String else { throw LoRAError("\(source): an added token has no \"content\"") }
            list.append(AddedToken(content: content,
                                   singleWord: entry["single_word"] as? Bool ?? false,
                                   lstrip: entry["lstrip"] as? Bool ?? false,
                                   rstrip: entry["rstrip"] as? Bool ?? false,
                                   normalized: entry["normalized"] as? Bool ?? true,
                                   special: entry["special"] as? Bool ?? false))
        }
        added = AddedVocabulary(list: list, model: model, normalizer: normalizer)
        vocabSize = max(model.idToToken.keys.max() ?? -1, added.maxId ?? -1) + 1
        // Every id encode can produce must name a token, so what reads the ids can trust them.
        for id in (postProcessor?.specialIds ?? []) + (padding.map { [$0.padId] } ?? []) where id >= vocabSize {
            throw LoRAError("\(source): special token id \(id) is outside the vocabulary of \(vocabSize) tokens")
        }
    }

    /// Reads bos_token / eos_token / pad_token and chat_template from tokenizer_config.json in `folder`.
    func readConfig(folder: String) throws {
        let configPath = (folder as NSString).appendingPathComponent("tokenizer_config.json")
        if let data = FileManager.default.contents(atPath: configPath) {
            guard let config = try JSONReader.parse(data, source: configPath) as? [String: Any] else {
                throw LoRAError("\(configPath) is not a JSON object")
            }
            // A token that is not in the vocabulary is ignored, as before; one that is must have an
            // id the model's Int32 token ids can hold.
            func tokenId(_ key: String) throws -> Int? {
                let v = config[key]
                let name = (v as? String) ?? ((v as? [String: Any])?["content"] as? String)
                guard let id = name.flatMap({ id(of: $0) }) else { return nil }
                guard (0...Int(Int32.max)).contains(id) else {
                    throw LoRAError("\(configPath): \(key) has id \(id), outside the token ids 0...\(Int32.max)")
                }
                return id
            }
            bosTokenId = try tokenId("bos_token")
            eosTokenId = try tokenId("eos_token")
            padTokenId = try tokenId("pad_token")
            if let t = config["chat_template"] as? String {
                chatTemplate = t
            } else if let list = config["chat_template"] as? [[String: Any]] {
                chatTemplate = (list.first { $0["name"] as? String == "default" } ?? list.first)?["template"] as? String
            }
        }
        if chatTemplate == nil {
            let jinja = (folder as NSString).appendingPathComponent("chat_template.jinja")
            if let data = FileManager.default.contents(atPath: jinja) { chatTemplate = String(decoding: data, as: UTF8.self) }
        }
    }

    // MARK: Encoding

    /// The ids of `text`; with `addSpecialTokens`, the post-processor adds the model's special tokens (BOS / EOS).
    public func encode(_ text: String, addSpecialTokens: Bool = false) -> [Int] {
        let scalars = Self.scalars(of: text)
        var ids: [Int] = []
        ids.reserveCapacity(scalars.count / 3 + 8)
        var ctx = EncodeContext()
        model.withCache { cache in
            scalars.withUnsafeBufferPointer { buf in
                for (range, id) in added.split(buf, 0..<buf.count, normalizedStage: false) {
                    if let id { ids.append(id); continue }
                    var piece = Array(buf[range])
                    if let normalizer { piece = normalizer.normalize(piece, &ctx) }
                    if piece.isEmpty { continue }
                    let atStart = range.lowerBound == 0
                    piece.withUnsafeBufferPointer { pbuf in
                        for (r2, id2) in added.split(pbuf, 0..<pbuf.count, normalizedStage: true) {
                            if let id2 { ids.append(id2); continue }
                            var pre = PreTokenized(text: Array(pbuf[r2]), splits: [.init(start: 0, end: r2.count, atStart: atStart && r2.lowerBound == 0)])
                            preTokenizer?.preTokenize(&pre, &ctx)
                            pre.text.withUnsafeBufferPointer { tbuf in
                                for s in pre.splits {
                                    model.tokenize(tbuf, s.start..<s.end, into: &ids, cache: cache, scratch: &ctx.bpe)
                                }
                            }
                        }
                    }
                }
            }
        }
        if let truncation {
            let added = addSpecialTokens ? (postProcessor?.addedCount ?? 0) : 0
            ids = truncation.apply(ids, maxLength: max(0, truncation.maxLength - added))
        }
        if let postProcessor { ids = postProcessor.process(ids, addSpecialTokens: addSpecialTokens) }
        if let padding { ids = padding.apply(ids) }
        return ids
    }

    /// The scalar values of `text`, decoded straight from its (always valid) UTF-8.
    static func scalars(of text: String) -> [UInt32] {
        var text = text
        return text.withUTF8 { u in
            var out = [UInt32](repeating: 0, count: u.count)
            var n = 0
            var i = 0
            let count = u.count
            out.withUnsafeMutableBufferPointer { o in
                while i < count {
                    let b = UInt32(u[i])
                    if b < 0x80 {
                        o[n] = b; i += 1
                    } else if b < 0xE0 {
                        o[n] = (b & 0x1F) << 6 | UInt32(u[i + 1] & 0x3F); i += 2
                    } else if b < 0xF0 {
                        o[n] = (b & 0x0F) << 12 | UInt32(u[i + 1] & 0x3F) << 6 | UInt32(u[i + 2] & 0x3F); i += 3
                    } else {
                        o[n] = (b & 0x07) << 18 | UInt32(u[i + 1] & 0x3F) << 12 | UInt32(u[i + 2] & 0x3F) << 6 | UInt32(u[i + 3] & 0x3F); i += 4
                    }
                    n += 1
                }
            }
            out.removeLast(count - n)
            return out
        }
    }

    // MARK: Decoding

    /// The text of `ids`. Ids that name no token are skipped; with `skipSpecialTokens`, special added tokens too.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard let t = added.decodeString(id) ?? model.idToToken[id] else { continue }
            if skipSpecialTokens && added.specialContents.contains(t) { continue }
            tokens.append(t)
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decodeChain(tokens).joined()
    }

    /// The vocabulary string of `id` (byte-level or ▁ form for model tokens, the content for added tokens).
    public func tokenString(_ id: Int) -> String? {
        added.decodeString(id) ?? model.idToToken[id]
    }

    /// The id of a vocabulary string or added token.
    public func id(of token: String) -> Int? {
        added.idByContent[token] ?? model.tokenToId(token)
    }

    /// Whether `id` is an added token marked special.
    public func isSpecial(_ id: Int) -> Bool {
        added.tokens[id]?.special ?? false
    }

    /// How many ids encode(_:addSpecialTokens: true) adds around the text.
    public var specialTokenCount: Int { postProcessor?.addedCount ?? 0 }
}
