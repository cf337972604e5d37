import Foundation
import LoRAFormats

/// A tokenizer.json normalizer: rewrites the text of each piece between added tokens before pre-tokenization.
protocol Normalizer: Sendable {
    func normalize(_ s: [UInt32], _ ctx: inout EncodeContext) -> [UInt32]
}

func makeNormalizer(_ j: [String: Any], source: String) throws -> Normalizer {
    let type = j["type"] as? String ?? "(no type)"
    switch type {
    case "NFC": return UnicodeNormalizer(form: .nfc)
    case "NFD": return UnicodeNormalizer(form: .nfd)
    case "NFKC": return UnicodeNormalizer(form: .nfkc)
    case "NFKD": return UnicodeNormalizer(form: .nfkd)
    case "Lowercase": return LowercaseNormalizer()
    case "Strip":
        return StripNormalizer(left: j["strip_left"] as? Bool ?? true, right: j["strip_right"] as? Bool ?? true)
    case "Prepend":
        guard let s = j["prepend"] as? String else { throw LoRAError("\(source): Prepend normalizer without \"prepend\"") }
        return PrependNormalizer(prefix: s.unicodeScalars.map { $0.value })
    case "Replace":
        guard let content = j["content"] as? String else { throw LoRAError("\(source): Replace normalizer without \"content\"") }
        return ReplaceNormalizer(regex: try patternRegex(j["pattern"], source: source, what: "Replace normalizer"),
                                 content: content.unicodeScalars.map { $0.value })
    case "ByteLevel":
        return ByteLevelNormalizer()
    case "Sequence":
        guard let list = j["normalizers"] as? [[String: Any]] else { throw LoRAError("\(source): Sequence normalizer without \"normalizers\"") }
        return SequenceNormalizer(steps: try list.map { try makeNormalizer($0, source: source) })
    default:
        throw LoRAError("\(source): normalizer type \(type) is not supported")
    }
}

func scalarsToString<C: Collection>(_ s: C) -> String where C.Element == UInt32 {
    var v = String.UnicodeScalarView()
    for c in s { v.append(Unicode.Scalar(c) ?? "\u{FFFD}") }
    return String(v)
}

struct UnicodeNormalizer: Normalizer {
    enum Form { case nfc, nfd, nfkc, nfkd }
    let form: Form

    func normalize(_ s: [UInt32], _ ctx: inout EncodeContext) -> [UInt32] {
        if s.allSatisfy({ $0 < 0x80 }) { return s }   // ASCII is invariant under every form
        let str = scalarsToString(s)
        let out: String
        switch form {
        case .nfc: out = str.precomposedStringWithCanonicalMapping
        case .nfd: out = str.decomposedStringWithCanonicalMapping
        case .nfkc: out = str.precomposedStringWithCompatibilityMapping
        case .nfkd: out = str.decomposedStringWithCompatibilityMapping
        }
        return out.unicodeScalars.map { $0.value }
    }
}

/// Each scalar mapped to its full lowercase mapping, without context (Rust's `char::to_lowercase`).
struct LowercaseNormalizer: Normalizer {
    func normalize(_ s: [UInt32], _ ctx: inout EncodeContext) -> [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(s.count)
        for c in s {
            if c < 0x80 {
                out.append(c >= 65 && c <= 90 ? c + 32 : c)
            } else if let u = Unicode.Scalar(c), UnicodeTables.info(c) & 0x1F != GeneralCategory.Cn.rawValue {
                for l in u.properties.lowercaseMapping.unicodeScalars { out.append(l.value) }
            } else {
                out.append(c)
            }
        }
        return out
    }
}

struct StripNormalizer: Normalizer {
    let left: Bool
    let right: Bool

    func normalize(_ s: [UInt32], _ ctx: inout EncodeContext) -> [UInt32] {
        var lo = 0, hi = s.count
        if left { while lo < hi && UnicodeTables.isWhitespace(s[lo]) { lo += 1 } }
        if right { while hi > lo && UnicodeTables.isWhitespace(s[hi - 1]) { hi -= 1 } }
        return lo == 0 && hi == s.count ? s : Array(s[lo..<hi])
    }
}

struct PrependNormalizer: Normalizer {
    let prefix: [UInt32]

    func normalize(_ s: [UInt32], _ ctx: inout EncodeContext) -> [UInt32] {
        s.isEmpty ? s : prefix + s
    }
}

struct ReplaceNormalizer: Normalizer {
    let regex: TokenizerRegex
    let content: [UInt32]

    func normalize(_ s: [UInt32], _ ctx: inout EncodeContext) -> [UInt32] {
        let matches = s.withUnsafeBufferPointer { regex.matches(in: $0, 0..<s.count, stack: &ctx.regexStack) }
        if matches.isEmpty { return s }
        var out: [UInt32] = []
        out.reserveCapacity(s.count)
        var last = 0
        for m in matches {
            out.append(contentsOf: s[last..<m.lowerBound])
            out.append(contentsOf: content)
            last = m.upperBound
        }
        out.append(contentsOf: s[last...])
        return out
    }
}

/// Every UTF-8 byte mapped to its byte-level character (as the ByteLevel pre-tokenizer does, without splitting).
struct ByteLevelNormalizer: Normalizer {
    func normalize(_ s: [UInt32], _ ctx: inout EncodeContext) -> [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(s.count)
        ByteLevelPreTokenizer.byteToChar.withUnsafeBufferPointer { ByteLevelPreTokenizer.appendByteLevel(s, $0, to: &out) }
        return out
    }
}

struct SequenceNormalizer: Normalizer {
    let steps: [Normalizer]

    func normalize(_ s: [UInt32], _ ctx: inout EncodeContext) -> [UInt32] {
        var s = s
        for step in steps { s = step.normalize(s, &ctx) }
        return s
    }
}
