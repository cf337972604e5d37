import Foundation
import LoRAFormats

/// A tokenizer.json decoder: turns the token strings of a sequence of ids back into text. Like tokenizers'
/// `decode_chain`, each stage maps a list of strings to a list of strings; the result is their concatenation.
protocol Decoder: Sendable {
    func decodeChain(_ tokens: [String]) -> [String]
}

func makeDecoder(_ j: [String: Any], source: String) throws -> Decoder {
    let type = j["type"] as? String ?? "(no type)"
    switch type {
    case "ByteLevel":
        return ByteLevelDecoder()
    case "ByteFallback":
        return ByteFallbackDecoder()
    case "Metaspace":
        let meta = try MetaspacePreTokenizer(json: j, source: source)
        return MetaspaceDecoder(replacement: Character(Unicode.Scalar(meta.replacement)!), stripFirst: meta.prepend != .never)
    case "Fuse":
        return FuseDecoder()
    case "Strip":
        guard let content = j["content"] as? String, content.unicodeScalars.count == 1 else {
            throw LoRAError("\(source): Strip decoder content must be one character")
        }
        return StripDecoder(content: content.unicodeScalars.first!, start: jsonInt(j["start"]) ?? 0, stop: jsonInt(j["stop"]) ?? 0)
    case "Replace":
        guard let content = j["content"] as? String else { throw LoRAError("\(source): Replace decoder without \"content\"") }
        return ReplaceDecoder(regex: try patternRegex(j["pattern"], source: source, what: "Replace decoder"), content: content)
    case "BPEDecoder":
        return BPESuffixDecoder(suffix: j["suffix"] as? String ?? "</w>")
    case "Sequence":
        guard let list = j["decoders"] as? [[String: Any]] else { throw LoRAError("\(source): Sequence decoder without \"decoders\"") }
        return SequenceDecoder(steps: try list.map { try makeDecoder($0, source: source) })
    default:
        throw LoRAError("\(source): decoder type \(type) is not supported")
    }
}

/// Byte-level characters back to bytes; a token with any character outside the byte alphabet contributes its
/// own UTF-8 bytes. The bytes are decoded with U+FFFD for invalid sequences (Rust's from_utf8_lossy).
struct ByteLevelDecoder: Decoder {
    func decodeChain(_ tokens: [String]) -> [String] {
        var bytes: [UInt8] = []
        let table = ByteLevelPreTokenizer.charToByte
        for t in tokens {
            let start = bytes.count
            var ok = true
            for u in t.unicodeScalars {
                guard let b = table[u.value] else { ok = false; break }
                bytes.append(b)
            }
            if !ok {
                bytes.removeSubrange(start...)
                bytes.append(contentsOf: t.utf8)
            }
        }
        return [String(decoding: bytes, as: UTF8.self)]
    }
}

/// Runs of "<0xHH>" tokens become the text of their bytes, or one U+FFFD per byte when they are not valid UTF-8.
struct ByteFallbackDecoder: Decoder {
    static func byteValue(_ t: String) -> UInt8? {
        let u = Array(t.utf8)
        guard u.count == 6, u[0] == 60, u[1] == 48, u[2] == 120, u[5] == 62 else { return nil }   // "<0x" … ">"
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 65...70: return c - 55
            case 97...102: return c - 87
            default: return nil
            }
        }
        guard let hi = hex(u[3]), let lo = hex(u[4]) else { return nil }
        return hi << 4 | lo
    }

    func decodeChain(_ tokens: [String]) -> [String] {
        var out: [String] = []
        out.reserveCapacity(tokens.count)
        var pending: [UInt8] = []
        func flush() {
            if pending.isEmpty { return }
            let s = String(decoding: pending, as: UTF8.self)
            if s.utf8.elementsEqual(pending) {
                out.append(s)
            } else {
                out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
            }
            pending.removeAll()
        }
        for t in tokens {
            if let b = Self.byteValue(t) {
                pending.append(b)
            } else {
                flush()
                out.append(t)
            }
        }
        flush()
        return out
    }
}

/// ▁ back to spaces; the first token loses its ▁ unless prepend_scheme is "never".
struct MetaspaceDecoder: Decoder {
    let replacement: Character
    let stripFirst: Bool

    func decodeChain(_ tokens: [String]) -> [String] {
        let r = replacement.unicodeScalars.first!
        return tokens.enumerated().map { i, t in
            var v = String.UnicodeScalarView()
            for u in t.unicodeScalars {
                if u == r {
                    if !(i == 0 && stripFirst) { v.append(" ") }
                } else {
                    v.append(u)
                }
            }
            return String(v)
        }
    }
}

struct FuseDecoder: Decoder {
    func decodeChain(_ tokens: [String]) -> [String] { [tokens.joined()] }
}

/// Removes up to `start` leading and `stop` trailing `content` characters from each token.
struct StripDecoder: Decoder {
    let content: Unicode.Scalar
    let start: Int
    let stop: Int

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.map { t in
            let chars = Array(t.unicodeScalars)
            var lo = 0
            while lo < min(start, chars.count) && chars[lo] == content { lo += 1 }
            var hi = chars.count
            var removed = 0
            while removed < stop && hi > lo && chars[hi - 1] == content { hi -= 1; removed += 1 }
            var v = String.UnicodeScalarView()
            v.append(contentsOf: chars[lo..<hi])
            return String(v)
        }
    }
}

struct ReplaceDecoder: Decoder {
    let regex: TokenizerRegex
    let content: String

    func decodeChain(_ tokens: [String]) -> [String] {
        var stack: [BacktrackingRegex.Backtrack] = []
        return tokens.map { t in
            let s = t.unicodeScalars.map { $0.value }
            let matches = s.withUnsafeBufferPointer { regex.matches(in: $0, 0..<s.count, stack: &stack) }
            if matches.isEmpty { return t }
            var out = ""
            var last = 0
            for m in matches {
                out += scalarsToString(s[last..<m.lowerBound])
                out += content
                last = m.upperBound
            }
            out += scalarsToString(s[last...])
            return out
        }
    }
}

/// Classic BPE's end-of-word suffix: replaced by a space, except in the last token where it is removed.
struct BPESuffixDecoder: Decoder {
    let suffix: String

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.enumerated().map { i, t in
            t.replacingOccurrences(of: suffix, with: i == tokens.count - 1 ? "" : " ")
        }
    }
}

struct SequenceDecoder: Decoder {
    let steps: [Decoder]

    func decodeChain(_ tokens: [String]) -> [String] {
        var t = tokens
        for step in steps { t = step.decodeChain(t) }
        return t
    }
}
