import Foundation

/// One training or evaluation sequence: its tokens and, per token, whether it is a loss target
/// (predicted from the tokens before it).
public struct Example: Sendable, Equatable {
    public var tokens: [Int32]
    public var isTarget: [Bool]

    public init(tokens: [Int32], isTarget: [Bool]) {
        precondition(tokens.count == isTarget.count, "one target flag per token")
        self.tokens = tokens
        self.isTarget = isTarget
    }
}

/// JSON-lines data sets in mlx-lm's formats: rows {"text"}, {"prompt", "completion"} or
/// {"messages": [{"role", "content"}, ...]}, detected from the first row; every row must match it.
public struct DataSet: Sendable {
    public enum Format: String, Sendable { case text, completion, chat }

    public let format: Format
    public let examples: [Example]
    /// Rows longer than the maximum sequence length, cut to it.
    public let truncated: Int

    /// Tokens the loss is computed on, over all examples.
    public var targetCount: Int { examples.reduce(0) { $0 + $1.isTarget.lazy.filter { $0 }.count } }

    /// A data folder's split ("train", "valid", "test" → NAME.jsonl), or a single .jsonl file.
    public static func path(_ data: String, split: String) -> String {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: data, isDirectory: &isDir), isDir.boolValue { return data + "/\(split).jsonl" }
        return data
    }

    /// Reads and tokenizes `path`. Text rows are the tokenizer's encoding with its default special
    /// tokens; completion and chat rows go through the chat template when the tokenizer has one
    /// (completion rows are otherwise concatenated). EOS closes every example. With `maskPrompt`
    /// only completion / assistant tokens are targets; otherwise every token after the first.
    public init(path: String, tokenizer: Tokenizer, maskPrompt: Bool = false, maxSequenceLength: Int = 2048) throws {
        // An example is cut to the length and needs two tokens: one predicting the other.
        guard maxSequenceLength >= 2 else { throw LoRAError("the maximum sequence length must be at least 2 (got \(maxSequenceLength))") }
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw LoRAError("data file \(path) not found" + (path.hasSuffix(".jsonl") ? "" : " (--data takes a .jsonl file or a folder with train.jsonl and valid.jsonl)"))
        }
        guard !isFolder.boolValue else { throw LoRAError("\(path) is a folder, but a .jsonl data file is needed there") }
        guard let data = FileManager.default.contents(atPath: path) else { throw LoRAError("cannot read data file \(path)") }
        let template = try tokenizer.chatTemplate.map { try ChatTemplate($0) }
        let eos = tokenizer.eosTokenId.map(Int32.init)
        var format: Format? = nil
        var examples: [Example] = [], truncated = 0
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        for (index, raw) in lines.enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty { continue }
            let place = "\(path):\(index + 1)"
            guard let row = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                throw LoRAError("\(place): not a JSON object")
            }
            let rowFormat = try Self.format(of: row, place: place)
            if let f = format, f != rowFormat { throw LoRAError("\(place): a \(rowFormat.rawValue) row in a \(f.rawValue) data set") }
            format = rowFormat
            var (tokens, targets) = try Self.encode(row, rowFormat, tokenizer: tokenizer, template: template,
                                                    maskPrompt: maskPrompt, place: place)
            if let eos, tokens.last != eos { tokens.append(eos); targets.append(true) }
            guard tokens.count >= 2 else { throw LoRAError("\(place): the row has fewer than 2 tokens") }
            targets[0] = false  // nothing predicts the first token
            if tokens.count > maxSequenceLength {
                tokens = Array(tokens[..<maxSequenceLength]); targets = Array(targets[..<maxSequenceLength])
                truncated += 1
            }
            examples.append(Example(tokens: tokens, isTarget: targets))
        }
        guard let format else { throw LoRAError("\(path) has no rows") }
        self.format = format
        self.examples = examples
        self.truncated = truncated
    }

    static func format(of row: [String: Any], place: String) throws -> Format {
        if let text = row["text"] {
            guard text is String else { throw LoRAError("\(place): \"text\" must be a string") }
            return .text
        }
        if row["prompt"] != nil || row["completion"] != nil {
            guard row["prompt"] is String, row["completion"] is String else {
                throw LoRAError("\(place): \"prompt\" and \"completion\" must both be strings")
            }
            return .completion
        }
        if let messages = row["messages"] {
            guard let list = messages as? [[String: Any]], !list.isEmpty,
                  list.allSatisfy({ $0["role"] is String && $0["content"] is String }) else {
                throw LoRAError("\(place): \"messages\" must be a non-empty list of {\"role\", \"content\"} strings")
            }
            return .chat
        }
        throw LoRAError("\(place): a row needs \"text\", \"prompt\" and \"completion\", or \"messages\"")
    }

    static func encode(_ row: [String: Any], _ format: Format, tokenizer: Tokenizer, template: ChatTemplate?,
                       maskPrompt: Bool, place: String) throws -> ([Int32], [Bool]) {
        func ids(_ s: String, special: Bool) -> [Int32] { tokenizer.encode(s, addSpecialTokens: special).map(Int32.init) }
        let bos = tokenizer.bosTokenId.flatMap(tokenizer.tokenString), eos = tokenizer.eosTokenId.flatMap(tokenizer.tokenString)
        func render(_ messages: [ChatMessage], generationPrompt: Bool) throws -> [Int32] {
            ids(try template!.render(messages: messages, addGenerationPrompt: generationPrompt, bosToken: bos, eosToken: eos), special: false)
        }
        switch format {
        case .text:
            let t = ids(row["text"] as! String, special: true)
            return (t, [Bool](repeating: true, count: t.count))
        case .completion:
            let prompt = row["prompt"] as! String, completion = row["completion"] as! String
            let head: [Int32], all: [Int32]
            if template != nil {
                head = try render([ChatMessage(role: "user", content: prompt)], generationPrompt: true)
                all = try render([ChatMessage(role: "user", content: prompt), ChatMessage(role: "assistant", content: completion)],
                                 generationPrompt: false)
            } else {
                head = ids(prompt, special: true)
                all = ids(prompt + completion, special: true)
            }
            return (all, (0..<all.count).map { !maskPrompt || $0 >= head.count })
        case .chat:
            guard template != nil else { throw LoRAError("\(place): chat rows need a tokenizer with a chat template") }
            let messages = (row["messages"] as! [[String: Any]]).map { ChatMessage(role: $0["role"] as! String, content: $0["content"] as? String) }
            let all = try render(messages, generationPrompt: false)
            guard maskPrompt else { return (all, [Bool](repeating: true, count: all.count)) }
            // Assistant turns: from the end of the prompt that asks for turn i to the end of turn i.
            var targets = [Bool](repeating: false, count: all.count)
            for (i, m) in messages.enumerated() where m.role == "assistant" {
                let start = try render(Array(messages[..<i]), generationPrompt: true).count
                let end = min(all.count, try render(Array(messages[...i]), generationPrompt: false).count)
                if start < end { for k in start..<end { targets[k] = true } }
            }
            return (all, targets)
        }
    }

    /// A data set of examples tokenized by the caller.
    public init(examples: [Example], format: Format = .text) {
        self.init(format: format, examples: examples, truncated: 0)
    }

    private init(format: Format, examples: [Example], truncated: Int) {
        self.format = format
        self.examples = examples
        self.truncated = truncated
    }

    /// The same examples in a seeded random order (Fisher–Yates), for one epoch of training.
    public static func shuffled(_ set: DataSet, using random: inout SeededRandom) -> DataSet {
        var e = set.examples
        if e.count > 1 {
            for i in stride(from: e.count - 1, to: 0, by: -1) { e.swapAt(i, Int(random.next() % UInt64(i + 1))) }
        }
        return DataSet(format: set.format, examples: e, truncated: set.truncated)
    }

    /// Batches of `batchSize` examples in order, right-padded to the longest; padding and
    /// non-target positions never contribute to the loss.
    public func batches(size batchSize: Int, padId: Int32) -> [Batch] {
        stride(from: 0, to: examples.count, by: batchSize).map { start in
            let group = examples[start..<min(start + batchSize, examples.count)]
            let T = group.map(\.tokens.count).max()!
            var tokens: [Int32] = [], targets: [Int32] = []
            for e in group {
                tokens += e.tokens + [Int32](repeating: padId, count: T - e.tokens.count)
                for t in 0..<T {
                    let next = t + 1
                    targets.append(next < e.tokens.count && e.isTarget[next] ? e.tokens[next] : Batch.ignoreIndex)
                }
            }
            var batch = Batch(batchSize: group.count, seqLen: T, tokens: tokens, targets: targets)
            batch.tokenCount = group.reduce(0) { $0 + $1.tokens.count }
            return batch
        }
    }
}
