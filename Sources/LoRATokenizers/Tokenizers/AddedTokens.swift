import Foundation
import LoRAFormats

/// One entry of tokenizer.json's "added_tokens".
struct AddedToken: Sendable, Equatable {
    var content: String
    var singleWord = false
    var lstrip = false
    var rstrip = false
    var normalized = true
    var special = false
}

/// The added tokens and how they are found in the text before the model runs, as tokenizers'
/// AddedVocabulary does: non-normalized tokens are matched in the raw text, normalized ones in the normalized
/// text of what lies between; matches are leftmost-longest, then filtered by single_word and widened by
/// lstrip / rstrip.
final class AddedVocabulary: Sendable {
    let tokens: [Int: AddedToken]
    let idByContent: [String: Int]
    /// The normalized form of normalized tokens whose normalization changes them (used in decoding too).
    let normalizedContent: [Int: String]
    let specialContents: Set<String>
    let rawMatcher: TokenTrie?
    let normalizedMatcher: TokenTrie?

    /// Adds `list` in order, giving each the id tokenizers would: its existing id (added or in the model's vocab),
    /// else the next free one after the model's vocab.
    init(list: [AddedToken], model: BPEModel, normalizer: Normalizer?) {
        var tokens: [Int: AddedToken] = [:]
        var idByContent: [String: Int] = [:]
        var normalizedContent: [Int: String] = [:]
        var special: Set<String> = []
        var nextId = model.vocabCount
        var ctx = EncodeContext()
        for token in list {
            if token.content.isEmpty { continue }
            if let id = idByContent[token.content], tokens[id] == token { continue }
            let id: Int
            if let existing = idByContent[token.content] ?? model.tokenToId(token.content) {
                id = existing
            } else {
                id = nextId
                nextId += 1
            }
            normalizedContent[id] = nil
            if token.normalized, let normalizer {
                let n = scalarsToString(normalizer.normalize(token.content.unicodeScalars.map { $0.value }, &ctx))
                if n != token.content { normalizedContent[id] = n }
            }
            idByContent[token.content] = id
            if token.special { special.insert(token.content) }
            tokens[id] = token
        }
        self.tokens = tokens
        self.idByContent = idByContent
        self.normalizedContent = normalizedContent
        self.specialContents = special
        var raw: [(scalars: [UInt32], id: Int)] = []
        var norm: [(scalars: [UInt32], id: Int)] = []
        for (id, t) in tokens {
            if t.normalized {
                norm.append(((normalizedContent[id] ?? t.content).unicodeScalars.map { $0.value }, id))
            } else {
                raw.append((t.content.unicodeScalars.map { $0.value }, id))
            }
        }
        rawMatcher = raw.isEmpty ? nil : TokenTrie(raw)
        normalizedMatcher = norm.isEmpty ? nil : TokenTrie(norm)
    }

    var maxId: Int? { tokens.keys.max() }

    /// The token string decoding sees for an added id (its normalized form when it has one).
    func decodeString(_ id: Int) -> String? {
        guard let t = tokens[id] else { return nil }
        return normalizedContent[id] ?? t.content
    }

    /// Splits `text[range]` into pieces: (range, id) for added tokens, (range, nil) for text in between.
    /// Empty pieces are left out.
    func split(_ text: UnsafeBufferPointer<UInt32>, _ range: Range<Int>, normalizedStage: Bool) -> [(Range<Int>, Int?)] {
        guard let trie = normalizedStage ? normalizedMatcher : rawMatcher else {
            return range.isEmpty ? [] : [(range, nil)]
        }
        var out: [(Range<Int>, Int?)] = []
        var startOffset = range.lowerBound
        for (m, id) in trie.leftmostLongest(text, range) {
            var start = m.lowerBound
            var stop = m.upperBound
            let token = tokens[id]!
            if token.singleWord {
                let startSpace = start == range.lowerBound || !UnicodeTables.isRustWordCharacter(text[start - 1])
                let stopSpace = stop == range.upperBound || !UnicodeTables.isRustWordCharacter(text[stop])
                if !startSpace || !stopSpace { continue }
            }
            if token.lstrip {
                var s = start
                while s > range.lowerBound && UnicodeTables.isWhitespace(text[s - 1]) { s -= 1 }
                start = max(s, startOffset)
            }
            if token.rstrip {
                while stop < range.upperBound && UnicodeTables.isWhitespace(text[stop]) { stop += 1 }
            }
            if startOffset < start { out.append((startOffset..<start, nil)) }
            out.append((start..<stop, id))
            startOffset = stop
        }
        if startOffset < range.upperBound { out.append((startOffset..<range.upperBound, nil)) }
        return out
    }
}

/// A trie over token scalars for leftmost-longest, non-overlapping matching.
struct TokenTrie: Sendable {
    private struct Node: Sendable {
        var children: [UInt32: Int32] = [:]
        var id: Int = -1
    }
    private var nodes = [Node()]
    /// Which scalars below 128 start a token, and the rest in a set.
    private var asciiFirst: (UInt64, UInt64) = (0, 0)

    init(_ entries: [(scalars: [UInt32], id: Int)]) {
        for (scalars, id) in entries where !scalars.isEmpty {
            var n = 0
            for c in scalars {
                if let next = nodes[n].children[c] {
                    n = Int(next)
                } else {
                    nodes.append(Node())
                    nodes[n].children[c] = Int32(nodes.count - 1)
                    n = nodes.count - 1
                }
            }
            nodes[n].id = id
            let c = scalars[0]
            if c < 64 { asciiFirst.0 |= 1 << UInt64(c) } else if c < 128 { asciiFirst.1 |= 1 << UInt64(c - 64) }
        }
    }

    func leftmostLongest(_ text: UnsafeBufferPointer<UInt32>, _ range: Range<Int>) -> [(Range<Int>, Int)] {
        var out: [(Range<Int>, Int)] = []
        var i = range.lowerBound
        let root = nodes[0]
        while i < range.upperBound {
            let c = text[i]
            if c < 64 && asciiFirst.0 & (1 << UInt64(c)) == 0 { i += 1; continue }
            if c >= 64 && c < 128 && asciiFirst.1 & (1 << UInt64(c - 64)) == 0 { i += 1; continue }
            guard var n = root.children[c].map(Int.init) else { i += 1; continue }
            var best: (end: Int, id: Int)? = nodes[n].id >= 0 ? (i + 1, nodes[n].id) : nil
            var k = i + 1
            while k < range.upperBound, let next = nodes[n].children[text[k]] {
                n = Int(next)
                k += 1
                if nodes[n].id >= 0 { best = (k, nodes[n].id) }
            }
            if let best {
                out.append((i..<best.end, best.id))
                i = best.end
            } else {
                i += 1
            }
        }
        return out
    }
}
