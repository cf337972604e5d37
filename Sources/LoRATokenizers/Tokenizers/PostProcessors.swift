import Foundation
import LoRAFormats

/// A tokenizer.json post-processor, for a single sequence: adds the special tokens the model expects
/// (when add_special_tokens is true) around the encoded ids.
protocol PostProcessor: Sendable {
    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int]
    /// How many ids `process` adds to a single sequence.
    var addedCount: Int { get }
    /// Every id `process` may add.
    var specialIds: [Int] { get }
}

/// A special token id read from tokenizer.json, in the range every token id must be in.
private func specialId(_ v: Any?, _ what: String, source: String) throws -> Int {
    guard let id = jsonInt(v) else { throw LoRAError("\(source): \(what) has a non-integer id") }
    guard isTokenId(id) else { throw LoRAError("\(source): \(what) has id \(id), outside 0...\(maximumTokenId)") }
    return id
}

func makePostProcessor(_ j: [String: Any], source: String) throws -> PostProcessor {
    let type = j["type"] as? String ?? "(no type)"
    switch type {
    case "TemplateProcessing":
        return try TemplateProcessor(json: j, source: source)
    case "ByteLevel":
        return PassThroughProcessor()   // only trims offsets, which this tokenizer does not report
    case "RobertaProcessing", "BertProcessing":
        guard let cls = j["cls"] as? [Any], cls.count == 2, let sep = j["sep"] as? [Any], sep.count == 2 else {
            throw LoRAError("\(source): \(type) needs \"cls\" and \"sep\" as [token, id]")
        }
        return WrapProcessor(before: [try specialId(cls[1], "\(type) cls", source: source)],
                             after: [try specialId(sep[1], "\(type) sep", source: source)])
    case "Sequence":
        guard let list = j["processors"] as? [[String: Any]] else { throw LoRAError("\(source): Sequence post-processor without \"processors\"") }
        return SequenceProcessor(steps: try list.map { try makePostProcessor($0, source: source) })
    default:
        throw LoRAError("\(source): post-processor type \(type) is not supported")
    }
}

struct PassThroughProcessor: PostProcessor {
    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] { ids }
    var addedCount: Int { 0 }
    var specialIds: [Int] { [] }
}

struct WrapProcessor: PostProcessor {
    let before: [Int]
    let after: [Int]
    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] { addSpecialTokens ? before + ids + after : ids }
    var addedCount: Int { before.count + after.count }
    var specialIds: [Int] { before + after }
}

/// TemplateProcessing's "single" template: a list of {"SpecialToken": {"id": name}} and {"Sequence": {"id": "A"}}.
struct TemplateProcessor: PostProcessor {
    enum Piece { case sequence, special([Int]) }
    let pieces: [Piece]

    init(json j: [String: Any], source: String) throws {
        guard let single = j["single"] as? [[String: Any]] else { throw LoRAError("\(source): TemplateProcessing without a \"single\" template") }
        let specials = j["special_tokens"] as? [String: Any] ?? [:]
        pieces = try single.map { piece in
            if let seq = piece["Sequence"] as? [String: Any] {
                guard seq["id"] as? String == "A" else { throw LoRAError("\(source): TemplateProcessing single template refers to sequence \(seq["id"] ?? "?")") }
                return .sequence
            }
            if let sp = piece["SpecialToken"] as? [String: Any], let name = sp["id"] as? String {
                guard let entry = specials[name] as? [String: Any], let ids = entry["ids"] as? [Any] else {
                    throw LoRAError("\(source): TemplateProcessing special token \(name) is missing from special_tokens")
                }
                return .special(try ids.map { try specialId($0, "TemplateProcessing special token \(name)", source: source) })
            }
            throw LoRAError("\(source): TemplateProcessing piece \(piece.keys.sorted()) is not supported")
        }
    }

    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(ids.count + 4)
        for p in pieces {
            switch p {
            case .sequence: out.append(contentsOf: ids)
            case .special(let s): if addSpecialTokens { out.append(contentsOf: s) }
            }
        }
        return out
    }

    var addedCount: Int { specialIds.count }
    var specialIds: [Int] { pieces.flatMap { p -> [Int] in if case .special(let s) = p { return s } else { return [] } } }
}

struct SequenceProcessor: PostProcessor {
    let steps: [PostProcessor]
    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] {
        var ids = ids
        for s in steps { ids = s.process(ids, addSpecialTokens: addSpecialTokens) }
        return ids
    }
    var addedCount: Int { steps.reduce(0) { $0 + $1.addedCount } }
    var specialIds: [Int] { steps.flatMap(\.specialIds) }
}

/// tokenizer.json's "truncation", applied to a single sequence as tokenizers does (before special tokens,
/// whose count is taken off max_length).
struct Truncation: Sendable {
    let maxLength: Int
    let fromLeft: Bool

    init?(json: Any?, source: String) throws {
        guard let j = json as? [String: Any] else { return nil }
        guard let maxLength = jsonInt(j["max_length"]) else { throw LoRAError("\(source): truncation without max_length") }
        if let strategy = j["strategy"] as? String, strategy == "OnlySecond" { return nil }   // no second sequence here
        self.maxLength = maxLength
        fromLeft = (j["direction"] as? String) == "Left"
    }

    func apply(_ ids: [Int], maxLength: Int) -> [Int] {
        guard ids.count > maxLength else { return ids }
        return fromLeft ? Array(ids.suffix(maxLength)) : Array(ids.prefix(maxLength))
    }
}

/// tokenizer.json's "padding" for a single sequence: BatchLongest pads nothing, Fixed pads to its length,
/// pad_to_multiple_of rounds the length up.
struct Padding: Sendable {
    /// The longest padded length accepted (2^20 tokens; models read at most a few hundred thousand).
    static let maximumLength = 1 << 20

    let fixed: Int?
    let multiple: Int?
    let padId: Int
    let left: Bool

    init?(json: Any?, source: String) throws {
        guard let j = json as? [String: Any] else { return nil }
        func length(_ v: Any?, _ what: String) throws -> Int? {
            guard let v, !(v is NSNull) else { return nil }
            guard let n = jsonInt(v), (1...Self.maximumLength).contains(n) else {
                throw LoRAError("\(source): padding \(what) must be an integer from 1 to \(Self.maximumLength)")
            }
            return n
        }
        if let s = j["strategy"] as? [String: Any], s["Fixed"] != nil {
            fixed = try length(s["Fixed"], "length")
        } else if (j["strategy"] as? String) == "BatchLongest" || j["strategy"] == nil {
            fixed = nil
        } else {
            throw LoRAError("\(source): padding strategy \(String(describing: j["strategy"])) is not supported")
        }
        multiple = try length(j["pad_to_multiple_of"], "pad_to_multiple_of")
        padId = j["pad_id"] == nil ? 0 : try specialId(j["pad_id"], "padding", source: source)
        left = (j["direction"] as? String) == "Left"
    }

    func apply(_ ids: [Int]) -> [Int] {
        var length = fixed ?? ids.count
        if let multiple, length % multiple != 0 { length += multiple - length % multiple }
        guard ids.count < length else { return ids }
        let pad = [Int](repeating: padId, count: length - ids.count)
        return left ? pad + ids : ids + pad
    }
}
