import Foundation
import LoRAFormats

/// Text on its way through pre-tokenization: a scalar buffer and the splits (ranges of it) still to tokenize.
struct PreTokenized {
    struct Split {
        var start: Int
        var end: Int
        /// Whether the split begins at offset 0 of the encoded text (Metaspace's prepend_scheme "first").
        var atStart: Bool
    }
    var text: [UInt32]
    var splits: [Split]
}

/// Per-encode scratch shared by the pipeline stages.
struct EncodeContext {
    var regexStack: [BacktrackingRegex.Backtrack] = []
    var bpe = BPEModel.Scratch()
}

/// How a split keeps the matched delimiters (tokenizers' SplitDelimiterBehavior).
enum SplitBehavior: String, Sendable {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    /// Applies the behavior to `pieces`, a cover of a split by (range, is-a-match) in order, as
    /// NormalizedString::split does; empty results are dropped.
    func apply(_ pieces: [(Range<Int>, Bool)], atStart: Bool, splitStart: Int, into out: inout [PreTokenized.Split]) {
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(pieces.count)
        switch self {
        case .isolated:
            ranges = pieces.map { $0.0 }
        case .removed:
            ranges = pieces.filter { !$0.1 }.map { $0.0 }
        case .contiguous:
            var previous = false
            for (r, isMatch) in pieces {
                if isMatch == previous, let last = ranges.last {
                    ranges[ranges.count - 1] = last.lowerBound..<r.upperBound
                } else {
                    ranges.append(r)
                }
                previous = isMatch
            }
        case .mergedWithPrevious:
            var previous = false
            for (r, isMatch) in pieces {
                if isMatch && !previous, let last = ranges.last {
                    ranges[ranges.count - 1] = last.lowerBound..<r.upperBound
                } else {
                    ranges.append(r)
                }
                previous = isMatch
            }
        case .mergedWithNext:
            var previous = false
            for (r, isMatch) in pieces.reversed() {
                if isMatch && !previous, let last = ranges.last {
                    ranges[ranges.count - 1] = r.lowerBound..<last.upperBound
                } else {
                    ranges.append(r)
                }
                previous = isMatch
            }
            ranges.reverse()
        }
        for r in ranges where !r.isEmpty {
            out.append(PreTokenized.Split(start: r.lowerBound, end: r.upperBound, atStart: atStart && r.lowerBound == splitStart))
        }
    }
}

/// Turns a list of match ranges inside `range` into a cover of (range, is-a-match) pieces.
func coverWithMatches(_ matches: [Range<Int>], in range: Range<Int>) -> [(Range<Int>, Bool)] {
    if range.isEmpty { return [(range, false)] }
    var out: [(Range<Int>, Bool)] = []
    out.reserveCapacity(matches.count * 2 + 1)
    var previous = range.lowerBound
    for m in matches {
        if previous != m.lowerBound { out.append((previous..<m.lowerBound, false)) }
        out.append((m, true))
        previous = m.upperBound
    }
    if previous != range.upperBound { out.append((previous..<range.upperBound, false)) }
    return out
}

protocol PreTokenizer: Sendable {
    func preTokenize(_ p: inout PreTokenized, _ ctx: inout EncodeContext)
}

func makePreTokenizer(_ j: [String: Any], source: String) throws -> PreTokenizer {
    let type = j["type"] as? String ?? "(no type)"
    switch type {
    case "ByteLevel":
        return ByteLevelPreTokenizer(addPrefixSpace: j["add_prefix_space"] as? Bool ?? true, useRegex: j["use_regex"] as? Bool ?? true)
    case "Split":
        let behavior = try splitBehavior(j["behavior"], source: source)
        let invert = j["invert"] as? Bool ?? false
        let regex = try patternRegex(j["pattern"], source: source, what: "Split pre-tokenizer")
        return SplitPreTokenizer(regex: regex, behavior: behavior, invert: invert)
    case "Digits":
        return DigitsPreTokenizer(individualDigits: j["individual_digits"] as? Bool ?? false)
    case "Metaspace":
        return try MetaspacePreTokenizer(json: j, source: source)
    case "Sequence":
        guard let list = j["pretokenizers"] as? [[String: Any]] else { throw LoRAError("\(source): Sequence pre-tokenizer without \"pretokenizers\"") }
        return SequencePreTokenizer(steps: try list.map { try makePreTokenizer($0, source: source) })
    case "WhitespaceSplit":
        return WhitespaceSplitPreTokenizer()
    case "Whitespace":
        // tokenizers' Whitespace: the matches of \w+|[^\w\s]+, everything else removed.
        return SplitPreTokenizer(regex: try TokenizerRegex(pattern: #"\w+|[^\w\s]+"#, context: "\(source): Whitespace pre-tokenizer"),
                                 behavior: .removed, invert: true)
    case "Punctuation":
        return PunctuationPreTokenizer(behavior: try splitBehavior(j["behavior"] ?? "Isolated", source: source))
    default:
        throw LoRAError("\(source): pre-tokenizer type \(type) is not supported")
    }
}

func splitBehavior(_ v: Any?, source: String) throws -> SplitBehavior {
    guard let s = v as? String, let b = SplitBehavior(rawValue: s) else {
        throw LoRAError("\(source): split behavior \(String(describing: v)) is not supported")
    }
    return b
}

/// {"String": "…"} or {"Regex": "…"} as Split and Replace write their pattern.
func patternRegex(_ v: Any?, source: String, what: String) throws -> TokenizerRegex {
    if let p = v as? [String: Any] {
        if let s = p["String"] as? String { return TokenizerRegex(literal: s) }
        if let r = p["Regex"] as? String { return try TokenizerRegex(pattern: r, context: "\(source): \(what)") }
    }
    throw LoRAError("\(source): \(what) has a pattern that is neither {\"String\"} nor {\"Regex\"}")
}

/// Rebuilds a PreTokenized split by split: `body` appends each split's new content to the buffer and returns
/// the new splits (in buffer coordinates) for it.
func rebuild(_ p: inout PreTokenized, reserve: Int,
             _ body: (PreTokenized.Split, inout [UInt32], inout [PreTokenized.Split]) -> Void) {
    var text: [UInt32] = []
    text.reserveCapacity(reserve)
    var splits: [PreTokenized.Split] = []
    splits.reserveCapacity(p.splits.count)
    for s in p.splits { body(s, &text, &splits) }
    p.text = text
    p.splits = splits
}

/// GPT-2's byte-level pre-tokenizer: optional prefix space, the GPT-2 split regex, then every UTF-8 byte
/// mapped to a printable character.
struct ByteLevelPreTokenizer: PreTokenizer {
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let regex: BacktrackingRegex = try! BacktrackingRegex(pattern: gpt2Pattern)

    let addPrefixSpace: Bool
    let useRegex: Bool

    func preTokenize(_ p: inout PreTokenized, _ ctx: inout EncodeContext) {
        if addPrefixSpace && p.splits.contains(where: { p.text[$0.start] != 32 }) {
            let old = p.text
            rebuild(&p, reserve: old.count + p.splits.count) { s, text, splits in
                let start = text.count
                if old[s.start] != 32 { text.append(32) }
                text.append(contentsOf: old[s.start..<s.end])
                splits.append(.init(start: start, end: text.count, atStart: s.atStart))
            }
        }
        if useRegex {
            var out: [PreTokenized.Split] = []
            out.reserveCapacity(p.text.count / 3)
            p.text.withUnsafeBufferPointer { buf in
                for s in p.splits {
                    let matches = Self.regex.matches(in: buf, s.start..<s.end, stack: &ctx.regexStack)
                    SplitBehavior.isolated.apply(coverWithMatches(matches, in: s.start..<s.end), atStart: s.atStart, splitStart: s.start, into: &out)
                }
            }
            p.splits = out
        }
        Self.mapBytes(&p)
    }

    static let byteToChar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable { table[b] = UInt32(b) } else { table[b] = 256 + n; n += 1 }
        }
        return table
    }()

    static let charToByte: [UInt32: UInt8] = {
        var d: [UInt32: UInt8] = [:]
        for (b, c) in byteToChar.enumerated() { d[c] = UInt8(b) }
        return d
    }()

    /// Replaces every split's scalars by the byte-level characters of their UTF-8 bytes.
    static func mapBytes(_ p: inout PreTokenized) {
        let old = p.text
        byteToChar.withUnsafeBufferPointer { table in
            rebuild(&p, reserve: old.count + old.count / 4) { s, text, splits in
                let start = text.count
                appendByteLevel(old[s.start..<s.end], table, to: &text)
                splits.append(.init(start: start, end: text.count, atStart: s.atStart))
            }
        }
    }

    @inline(__always)
    static func appendByteLevel<C: Collection>(_ scalars: C, _ table: UnsafeBufferPointer<UInt32>, to text: inout [UInt32]) where C.Element == UInt32 {
        for c in scalars {
            if c < 0x80 {
                text.append(table[Int(c)])
            } else if c < 0x800 {
                text.append(table[Int(0xC0 | (c >> 6))])
                text.append(table[Int(0x80 | (c & 0x3F))])
            } else if c < 0x10000 {
                text.append(table[Int(0xE0 | (c >> 12))])
                text.append(table[Int(0x80 | ((c >> 6) & 0x3F))])
                text.append(table[Int(0x80 | (c & 0x3F))])
            } else {
                text.append(table[Int(0xF0 | (c >> 18))])
                text.append(table[Int(0x80 | ((c >> 12) & 0x3F))])
                text.append(table[Int(0x80 | ((c >> 6) & 0x3F))])
                text.append(table[Int(0x80 | (c & 0x3F))])
            }
        }
    }
}

/// Split on a regex or a literal, with a delimiter behavior, optionally inverted (the pattern then names the
/// pieces to keep and everything between is the delimiter).
struct SplitPreTokenizer: PreTokenizer {
    let regex: TokenizerRegex
    let behavior: SplitBehavior
    let invert: Bool

    func preTokenize(_ p: inout PreTokenized, _ ctx: inout EncodeContext) {
        var out: [PreTokenized.Split] = []
        out.reserveCapacity(p.splits.count * 4)
        p.text.withUnsafeBufferPointer { buf in
            for s in p.splits {
                let range = s.start..<s.end
                var cover = coverWithMatches(regex.matches(in: buf, range, stack: &ctx.regexStack), in: range)
                if invert { cover = cover.map { ($0.0, !$0.1) } }
                behavior.apply(cover, atStart: s.atStart, splitStart: s.start, into: &out)
            }
        }
        p.splits = out
    }
}

/// Splits scalars for which `predicate` holds, one match per scalar (tokenizers' `Fn(char) -> bool` pattern).
func scalarPredicateCover(_ text: UnsafeBufferPointer<UInt32>, _ range: Range<Int>, _ predicate: (UInt32) -> Bool) -> [(Range<Int>, Bool)] {
    if range.isEmpty { return [(range, false)] }
    var out: [(Range<Int>, Bool)] = []
    var last = range.lowerBound
    for k in range where predicate(text[k]) {
        if last < k { out.append((last..<k, false)) }
        out.append((k..<(k + 1), true))
        last = k + 1
    }
    if last < range.upperBound { out.append((last..<range.upperBound, false)) }
    return out
}

/// Digits: every numeric scalar alone (individual_digits) or runs of them together.
struct DigitsPreTokenizer: PreTokenizer {
    let individualDigits: Bool

    func preTokenize(_ p: inout PreTokenized, _ ctx: inout EncodeContext) {
        let behavior: SplitBehavior = individualDigits ? .isolated : .contiguous
        var out: [PreTokenized.Split] = []
        out.reserveCapacity(p.splits.count * 2)
        p.text.withUnsafeBufferPointer { buf in
            for s in p.splits {
                // Fast path: no digit in the split.
                var any = false
                for k in s.start..<s.end where UnicodeTables.isNumeric(buf[k]) { any = true; break }
                if !any { out.append(s); continue }
                behavior.apply(scalarPredicateCover(buf, s.start..<s.end, UnicodeTables.isNumeric), atStart: s.atStart, splitStart: s.start, into: &out)
            }
        }
        p.splits = out
    }
}

/// Splits on whitespace and drops it.
struct WhitespaceSplitPreTokenizer: PreTokenizer {
    func preTokenize(_ p: inout PreTokenized, _ ctx: inout EncodeContext) {
        var out: [PreTokenized.Split] = []
        p.text.withUnsafeBufferPointer { buf in
            for s in p.splits {
                SplitBehavior.removed.apply(scalarPredicateCover(buf, s.start..<s.end, UnicodeTables.isWhitespace), atStart: s.atStart, splitStart: s.start, into: &out)
            }
        }
        p.splits = out
    }
}

/// tokenizers' Punctuation: splits at ASCII punctuation and Unicode punctuation (categories P*),
/// each delimiter handled by `behavior`.
struct PunctuationPreTokenizer: PreTokenizer {
    let behavior: SplitBehavior

    static func isPunctuation(_ c: UInt32) -> Bool {
        if c < 128 { return (33...47).contains(c) || (58...64).contains(c) || (91...96).contains(c) || (123...126).contains(c) }
        guard let scalar = Unicode.Scalar(c) else { return false }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    func preTokenize(_ p: inout PreTokenized, _ ctx: inout EncodeContext) {
        var out: [PreTokenized.Split] = []
        p.text.withUnsafeBufferPointer { buf in
            for s in p.splits {
                behavior.apply(scalarPredicateCover(buf, s.start..<s.end, Self.isPunctuation), atStart: s.atStart, splitStart: s.start, into: &out)
            }
        }
        p.splits = out
    }
}

/// SentencePiece's metaspace: spaces become the replacement character (▁), which is prepended per
/// prepend_scheme (always / first: only at the start of the text / never); with split, each ▁ starts a new piece.
struct MetaspacePreTokenizer: PreTokenizer {
    enum Prepend: String { case always, first, never }
    let replacement: UInt32
    let prepend: Prepend
    let split: Bool

    init(json j: [String: Any], source: String) throws {
        guard let r = j["replacement"] as? String, r.unicodeScalars.count == 1 else {
            throw LoRAError("\(source): Metaspace replacement must be one character")
        }
        replacement = r.unicodeScalars.first!.value
        var scheme = Prepend.always
        if let s = j["prepend_scheme"] as? String {
            guard let p = Prepend(rawValue: s) else { throw LoRAError("\(source): Metaspace prepend_scheme \(s) is not supported") }
            scheme = p
        }
        if let add = j["add_prefix_space"] as? Bool, !add {
            if j["prepend_scheme"] != nil && scheme != .never {
                throw LoRAError("\(source): Metaspace add_prefix_space false contradicts prepend_scheme \(scheme.rawValue)")
            }
            scheme = .never
        }
        prepend = scheme
        split = j["split"] as? Bool ?? true
    }

    init(replacement: UInt32, prepend: Prepend, split: Bool) {
        self.replacement = replacement
        self.prepend = prepend
        self.split = split
    }

    func preTokenize(_ p: inout PreTokenized, _ ctx: inout EncodeContext) {
        let old = p.text
        var pieces: [PreTokenized.Split] = []
        rebuild(&p, reserve: old.count + p.splits.count) { s, text, splits in
            let start = text.count
            let first = old[s.start] == 32 ? replacement : old[s.start]
            let doPrepend: Bool
            switch prepend {
            case .always: doPrepend = first != replacement
            case .first: doPrepend = first != replacement && s.atStart
            case .never: doPrepend = false
            }
            if doPrepend { text.append(replacement) }
            for k in s.start..<s.end { text.append(old[k] == 32 ? replacement : old[k]) }
            splits.append(.init(start: start, end: text.count, atStart: s.atStart))
        }
        guard split else { return }
        p.text.withUnsafeBufferPointer { buf in
            let r = replacement
            for s in p.splits {
                SplitBehavior.mergedWithNext.apply(scalarPredicateCover(buf, s.start..<s.end) { $0 == r }, atStart: s.atStart, splitStart: s.start, into: &pieces)
            }
        }
        p.splits = pieces
    }
}

struct SequencePreTokenizer: PreTokenizer {
    let steps: [PreTokenizer]

    func preTokenize(_ p: inout PreTokenized, _ ctx: inout EncodeContext) {
        for step in steps { step.preTokenize(&p, &ctx) }
    }
}
