import Foundation
import LoRAFormats

/// A strict JSON reader for tokenizer files, producing the same shapes as JSONSerialization
/// ([String: Any], [Any], String, Int, Double, Bool, NSNull) but keeping every string exactly: Foundation's
/// JSONSerialization on Linux drops a U+FEFF that begins a string or follows an escape, which would change
/// vocabulary entries. Duplicate object keys keep the last value (as serde_json does).
enum JSONReader {
    static func parse(_ data: Data, source: String) throws -> Any {
        try data.withUnsafeBytes { raw in
            var p = Parser(bytes: raw.bindMemory(to: UInt8.self), source: source)
            p.skipSpace()
            let v = try p.value(depth: 0)
            p.skipSpace()
            guard p.i == p.bytes.count else { throw p.error("unexpected characters after the JSON value") }
            return v
        }
    }

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        let source: String
        var i = 0

        init(bytes: UnsafeBufferPointer<UInt8>, source: String) {
            self.bytes = bytes
            self.source = source
            // A UTF-8 byte order mark before the value is allowed.
            if bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF { i = 3 }
        }

        func error(_ what: String) -> LoRAError {
            LoRAError("\(source) is not valid JSON: \(what) at byte \(i)")
        }

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        mutating func value(depth: Int) throws -> Any {
            guard depth < 512 else { throw error("nesting too deep") }
            guard i < bytes.count else { throw error("unexpected end") }
            switch bytes[i] {
            case 0x7B: return try object(depth: depth)
            case 0x5B: return try array(depth: depth)
            case 0x22: return try string()
            case 0x74: try literal("true"); return true
            case 0x66: try literal("false"); return false
            case 0x6E: try literal("null"); return NSNull()
            default: return try number()
            }
        }

        mutating func literal(_ word: String) throws {
            let w = Array(word.utf8)
            guard i + w.count <= bytes.count else { throw error("unexpected end") }
            for k in 0..<w.count where bytes[i + k] != w[k] { throw error("unknown literal") }
            i += w.count
        }

        mutating func object(depth: Int) throws -> [String: Any] {
            i += 1
            var out: [String: Any] = [:]
            skipSpace()
            if i < bytes.count && bytes[i] == 0x7D { i += 1; return out }
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == 0x22 else { throw error("expected a key") }
                let key = try string()
                skipSpace()
                guard i < bytes.count, bytes[i] == 0x3A else { throw error("expected ':'") }
                i += 1
                skipSpace()
                out[key] = try value(depth: depth + 1)
                skipSpace()
                guard i < bytes.count else { throw error("unexpected end") }
                if bytes[i] == 0x2C { i += 1; continue }
                if bytes[i] == 0x7D { i += 1; return out }
                throw error("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws -> [Any] {
            i += 1
            var out: [Any] = []
            skipSpace()
            if i < bytes.count && bytes[i] == 0x5D { i += 1; return out }
            while true {
                skipSpace()
                out.append(try value(depth: depth + 1))
                skipSpace()
                guard i < bytes.count else { throw error("unexpected end") }
                if bytes[i] == 0x2C { i += 1; continue }
                if bytes[i] == 0x5D { i += 1; return out }
                throw error("expected ',' or ']'")
            }
        }

        mutating func string() throws -> String {
            i += 1
            let start = i
            // Fast path: no escapes.
            while i < bytes.count {
                let b = bytes[i]
                if b == 0x22 {
                    let s = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
                    i += 1
                    return s
                }
                if b == 0x5C { break }
                if b < 0x20 { throw error("control character in a string") }
                i += 1
            }
            var buf = Array(bytes[start..<i])
            while i < bytes.count {
                let b = bytes[i]
                if b == 0x22 { i += 1; return String(decoding: buf, as: UTF8.self) }
                if b < 0x20 { throw error("control character in a string") }
                if b != 0x5C { buf.append(b); i += 1; continue }
                i += 1
                guard i < bytes.count else { break }
                let e = bytes[i]
                i += 1
                switch e {
                case 0x22: buf.append(0x22)
                case 0x5C: buf.append(0x5C)
                case 0x2F: buf.append(0x2F)
                case 0x62: buf.append(0x08)
                case 0x66: buf.append(0x0C)
                case 0x6E: buf.append(0x0A)
                case 0x72: buf.append(0x0D)
                case 0x74: buf.append(0x09)
                case 0x75:
                    var u = try hex4()
                    if u >= 0xD800 && u < 0xDC00 {
                        guard i + 1 < bytes.count, bytes[i] == 0x5C, bytes[i + 1] == 0x75 else { throw error("lone surrogate") }
                        i += 2
                        let low = try hex4()
                        guard low >= 0xDC00 && low < 0xE000 else { throw error("lone surrogate") }
                        u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
                    } else if u >= 0xDC00 && u < 0xE000 {
                        throw error("lone surrogate")
                    }
                    buf.append(contentsOf: String(Unicode.Scalar(u)!).utf8)
                default:
                    throw error("unknown escape")
                }
            }
            throw error("unterminated string")
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count else { throw error("short \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[i]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: throw error("bad \\u escape")
                }
                v = v * 16 + d
                i += 1
            }
            return v
        }

        mutating func number() throws -> Any {
            let start = i
            if i < bytes.count && bytes[i] == 0x2D { i += 1 }
            var integral = true
            var digits = 0
            while i < bytes.count {
                let c = bytes[i]
                if c >= 0x30 && c <= 0x39 { digits += 1; i += 1; continue }
                if c == 0x2E || c == 0x65 || c == 0x45 || c == 0x2B || c == 0x2D { integral = false; i += 1; continue }
                break
            }
            guard digits > 0 else { throw error("unexpected character") }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
            if integral, let v = Int(text) { return v }
            guard let d = Double(text) else { throw error("bad number \(text)") }
            return d
        }
    }
}
