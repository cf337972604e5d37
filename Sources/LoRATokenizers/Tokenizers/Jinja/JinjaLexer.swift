import Foundation
import LoRAFormats

// The Jinja lexer, configured the way transformers configures jinja2 for chat templates:
// `trim_blocks=True, lstrip_blocks=True`, default delimiters, no line statements, and
// `keep_trailing_newline=False`. Source text is handled as Unicode scalars (Python code points),
// never as grapheme clusters, so "\r\n" and combining marks count the way jinja2 counts them.

/// A 1-based line and column in the template source (columns count Unicode scalars).
struct JinjaPos: Sendable, Equatable, CustomStringConvertible {
    var line: Int
    var column: Int
    var description: String { "\(line):\(column)" }
}

/// An error raised while lexing, parsing or rendering, with the position it refers to.
func jinjaError(_ message: String, _ pos: JinjaPos) -> LoRAError {
    LoRAError("chat template \(pos): \(message)")
}

enum JinjaTokenKind: Sendable, Equatable {
    case data(String)
    case variableBegin, variableEnd
    case blockBegin, blockEnd
    case name(String)
    case string(String)
    case integer(Int)
    case float(Double)
    case op(String)
    case end
}

struct JinjaToken: Sendable {
    var kind: JinjaTokenKind
    var pos: JinjaPos
}

/// Python's `str.isspace` (what `\s` and `str.strip()` use on text).
func jinjaIsSpace(_ s: Unicode.Scalar) -> Bool {
    switch s.value {
    case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0: return true
    default: return s.value > 0x7F && s.properties.isWhitespace
    }
}

struct JinjaLexer {
    private let src: [Unicode.Scalar]
    private var lineStarts: [Int] = [0]
    private var tokens: [JinjaToken] = []
    private var pos = 0
    private var lineStarting = true
    private let trimBlocks = true
    private let lstripBlocks = true

    static func tokenize(_ source: String) throws -> [JinjaToken] {
        var lexer = JinjaLexer(source: source)
        try lexer.run()
        return lexer.tokens
    }

    private init(source: String) {
        // jinja2 turns \r\n, \r and \n into \n and drops one trailing newline.
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(source.unicodeScalars.count)
        var previousCR = false
        for s in source.unicodeScalars {
            if s == "\r" {
                out.append("\n"); previousCR = true
            } else {
                if !(s == "\n" && previousCR) { out.append(s) }
                previousCR = false
            }
        }
        if out.last == "\n" { out.removeLast() }
        src = out
        for (i, s) in src.enumerated() where s == "\n" { lineStarts.append(i + 1) }
    }

    private func position(_ offset: Int) -> JinjaPos {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return JinjaPos(line: lo + 1, column: offset - lineStarts[lo] + 1)
    }

    private func at(_ i: Int, _ text: String) -> Bool {
        var j = i
        for s in text.unicodeScalars {
            if j >= src.count || src[j] != s { return false }
            j += 1
        }
        return true
    }

    private func string(_ a: Int, _ b: Int) -> String {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: src[a..<b])
        return String(s)
    }

    private mutating func emit(_ kind: JinjaTokenKind, at offset: Int) {
        tokens.append(JinjaToken(kind: kind, pos: position(offset)))
    }

    private func skipSpaces(_ i: Int) -> Int {
        var j = i
        while j < src.count && jinjaIsSpace(src[j]) { j += 1 }
        return j
    }

    /// Emits the text before a tag after applying `-` (strip all whitespace) or lstrip_blocks.
    private mutating func emitText(_ start: Int, _ end: Int, sign: Unicode.Scalar?, lstrip: Bool) {
        var stop = end
        if sign == "-" {
            while stop > start && jinjaIsSpace(src[stop - 1]) { stop -= 1 }
        } else if sign != "+" && lstrip && lstripBlocks {
            var lineStart = end
            while lineStart > start && src[lineStart - 1] != "\n" { lineStart -= 1 }
            if (lineStart > start || lineStarting) && lineStart < end
                && src[lineStart..<end].allSatisfy(jinjaIsSpace) {
                stop = lineStart
            }
        }
        if stop > start { emit(.data(string(start, stop)), at: start) }
    }

    /// Matches a block end (`%}`, `-%}` + whitespace, `+%}`, with trim_blocks' optional newline) at i.
    private func blockEnd(_ i: Int) -> Int? {
        if at(i, "+%}") { return i + 3 }
        if at(i, "-%}") { return skipSpaces(i + 3) }
        if at(i, "%}") {
            return trimBlocks && i + 2 < src.count && src[i + 2] == "\n" ? i + 3 : i + 2
        }
        return nil
    }

    private mutating func run() throws {
        while pos < src.count {
            // Find the earliest tag opener.
            var i = pos
            var found = false
            while i + 1 < src.count {
                if src[i] == "{" && (src[i + 1] == "{" || src[i + 1] == "%" || src[i + 1] == "#") { found = true; break }
                i += 1
            }
            if !found {
                emit(.data(string(pos, src.count)), at: pos)
                return
            }
            let opener = src[i + 1]
            var signIndex = i + 2
            let sign: Unicode.Scalar? = signIndex < src.count && (src[signIndex] == "-" || src[signIndex] == "+") ? src[signIndex] : nil
            if sign != nil { signIndex += 1 }
            switch opener {
            case "#":
                emitText(pos, i, sign: sign, lstrip: true)
                try lexComment(from: signIndex, open: i)
            case "%":
                if let afterRaw = rawBegin(signIndex) {
                    emitText(pos, i, sign: sign, lstrip: true)
                    lineStarting = src[afterRaw - 1] == "\n"
                    try lexRaw(from: afterRaw, open: i)
                } else {
                    emitText(pos, i, sign: sign, lstrip: true)
                    emit(.blockBegin, at: i)
                    pos = signIndex
                    try lexTag(block: true)
                }
            default:
                emitText(pos, i, sign: sign, lstrip: false)
                emit(.variableBegin, at: i)
                pos = signIndex
                try lexTag(block: false)
            }
        }
    }

    private mutating func lexComment(from start: Int, open: Int) throws {
        var j = start
        while j < src.count {
            if at(j, "+#}") { pos = j + 3; lineStarting = false; return }
            if at(j, "-#}") { pos = skipSpaces(j + 3); lineStarting = src[pos - 1] == "\n"; return }
            if at(j, "#}") {
                pos = trimBlocks && j + 2 < src.count && src[j + 2] == "\n" ? j + 3 : j + 2
                lineStarting = src[pos - 1] == "\n"
                return
            }
            j += 1
        }
        throw jinjaError("missing end of comment tag", position(open))
    }

    /// `{% raw %}` / `{%- raw -%}`: returns the offset after the tag (no trim_blocks newline, as in jinja2).
    private func rawBegin(_ i: Int) -> Int? {
        var j = skipSpaces(i)
        guard at(j, "raw") else { return nil }
        j = skipSpaces(j + 3)
        if at(j, "-%}") { return skipSpaces(j + 3) }
        if at(j, "%}") { return j + 2 }
        return nil
    }

    private mutating func lexRaw(from start: Int, open: Int) throws {
        var j = start
        while j < src.count {
            if at(j, "{%") {
                var k = j + 2
                let sign: Unicode.Scalar? = k < src.count && (src[k] == "-" || src[k] == "+") ? src[k] : nil
                if sign != nil { k += 1 }
                k = skipSpaces(k)
                if at(k, "endraw") {
                    k = skipSpaces(k + 6)
                    if let end = blockEnd(k) {
                        // jinja2 emits the raw text with the usual whitespace control for the endraw tag.
                        emitText(start, j, sign: sign, lstrip: true)
                        pos = end
                        lineStarting = src[end - 1] == "\n"
                        return
                    }
                }
            }
            j += 1
        }
        throw jinjaError("missing end of raw directive", position(open))
    }

    private mutating func lexTag(block: Bool) throws {
        var brackets: [Unicode.Scalar] = []
        while true {
            guard pos < src.count else {
                throw jinjaError(block ? "unexpected end of template inside a {% %} tag" : "unexpected end of template inside a {{ }} tag", position(pos))
            }
            if brackets.isEmpty {
                if block, let end = blockEnd(pos) {
                    emit(.blockEnd, at: pos)
                    pos = end
                    lineStarting = src[end - 1] == "\n"
                    return
                }
                if !block {
                    if at(pos, "-}}") {
                        emit(.variableEnd, at: pos)
                        pos = skipSpaces(pos + 3)
                        lineStarting = src[pos - 1] == "\n"
                        return
                    }
                    if at(pos, "}}") {
                        emit(.variableEnd, at: pos)
                        pos += 2
                        lineStarting = false
                        return
                    }
                }
            }
            let c = src[pos]
            if jinjaIsSpace(c) { pos += 1; continue }
            if let (kind, end) = try number(pos) {
                emit(kind, at: pos); pos = end; continue
            }
            if c == "_" || c.properties.isAlphabetic {
                var j = pos + 1
                while j < src.count && (src[j] == "_" || src[j].properties.isAlphabetic || src[j].properties.numericType != nil) { j += 1 }
                emit(.name(string(pos, j)), at: pos); pos = j; continue
            }
            if c == "'" || c == "\"" {
                try lexString(quote: c); continue
            }
            if let op = Self.operators.first(where: { at(pos, $0) }) {
                let s = op.unicodeScalars.first!
                if s == "(" { brackets.append(")") } else if s == "[" { brackets.append("]") } else if s == "{" { brackets.append("}") }
                if op == ")" || op == "]" || op == "}" {
                    guard let expected = brackets.popLast() else { throw jinjaError("unexpected '\(op)'", position(pos)) }
                    guard expected == s else { throw jinjaError("unexpected '\(op)', expected '\(String(expected))'", position(pos)) }
                }
                emit(.op(op), at: pos)
                pos += op.unicodeScalars.count
                continue
            }
            throw jinjaError("unexpected character '\(String(c))'", position(pos))
        }
    }

    private static let operators = ["//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~",
                                    "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"]

    private func isDigit(_ i: Int) -> Bool { i < src.count && src[i].value >= 48 && src[i].value <= 57 }

    /// Digits with optional single underscores between them (`1_000`); returns the end offset.
    private func digits(_ i: Int) -> Int? {
        guard isDigit(i) else { return nil }
        var j = i + 1
        while true {
            if isDigit(j) { j += 1 } else if j < src.count && src[j] == "_" && isDigit(j + 1) { j += 2 } else { break }
        }
        return j
    }

    private func number(_ i: Int) throws -> (JinjaTokenKind, Int)? {
        guard isDigit(i) else { return nil }
        // jinja2's float rule does not match right after a dot (`foo.0.1` is attribute access).
        let afterDot = i > 0 && src[i - 1] == "."
        if src[i] == "0", i + 1 < src.count, let base = ["b": 2, "B": 2, "o": 8, "O": 8, "x": 16, "X": 16][String(src[i + 1])] {
            var j = i + 2
            var text = ""
            while j < src.count {
                if src[j] == "_" { j += 1; continue }
                guard let d = Int(String(src[j]), radix: base) else { break }
                text += String(d, radix: base); j += 1
            }
            if !text.isEmpty, let v = Int(text, radix: base) { return (.integer(v), j) }
        }
        let intEnd = digits(i)!
        if !afterDot {
            var j = intEnd
            var isFloat = false
            if j < src.count && src[j] == "." , let fracEnd = digits(j + 1) { j = fracEnd; isFloat = true }
            if j < src.count && (src[j] == "e" || src[j] == "E") {
                var k = j + 1
                if k < src.count && (src[k] == "+" || src[k] == "-") { k += 1 }
                if let expEnd = digits(k) { j = expEnd; isFloat = true }
            }
            if isFloat {
                let text = string(i, j).replacingOccurrences(of: "_", with: "")
                guard let v = Double(text) else { throw jinjaError("invalid number '\(text)'", position(i)) }
                return (.float(v), j)
            }
        }
        let text = string(i, intEnd).replacingOccurrences(of: "_", with: "")
        guard let v = Int(text) else { throw jinjaError("integer literal '\(text)' is out of range", position(i)) }
        return (.integer(v), intEnd)
    }

    /// A string literal, decoded the way jinja2 does (Python's `unicode-escape` on the body).
    private mutating func lexString(quote: Unicode.Scalar) throws {
        let start = pos
        var j = pos + 1
        var out = String.UnicodeScalarView()
        func hex(_ from: Int, _ count: Int) -> UInt32? {
            guard from + count <= src.count else { return nil }
            var v: UInt32 = 0
            for k in from..<(from + count) {
                guard let d = Int(String(src[k]), radix: 16) else { return nil }
                v = v * 16 + UInt32(d)
            }
            return v
        }
        while true {
            guard j < src.count else { throw jinjaError("unterminated string literal", position(start)) }
            let c = src[j]
            if c == quote { break }
            if c != "\\" { out.append(c); j += 1; continue }
            guard j + 1 < src.count else { throw jinjaError("unterminated string literal", position(start)) }
            let e = src[j + 1]
            j += 2
            switch e {
            case "\n": break
            case "\\": out.append("\\")
            case "'": out.append("'")
            case "\"": out.append("\"")
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "v": out.append("\u{0B}")
            case "0"..."7":
                var v = e.value - 48
                var n = 1
                while n < 3 && j < src.count && src[j].value >= 48 && src[j].value <= 55 { v = v * 8 + src[j].value - 48; j += 1; n += 1 }
                out.append(Unicode.Scalar(v)!)
            case "x", "u", "U":
                let count = e == "x" ? 2 : e == "u" ? 4 : 8
                guard let v = hex(j, count), let s = Unicode.Scalar(v) else {
                    throw jinjaError("invalid \\\(String(e)) escape in string literal", position(j - 2))
                }
                out.append(s); j += count
            case "N":
                throw jinjaError("unsupported \\N{...} escape in string literal", position(j - 2))
            default:
                out.append("\\"); out.append(e)
            }
        }
        emit(.string(String(out)), at: start)
        pos = j + 1
    }
}
