import Foundation
import LoRAFormats

// Template values with Python semantics: str()/repr() text, truthiness, equality, ordering and
// json.dumps, as jinja2 running on CPython produces them.

/// An insertion-ordered dictionary with string keys (Python dicts keep insertion order).
struct JinjaDict {
    private(set) var keys: [String] = []
    private var storage: [String: JinjaValue] = [:]

    init() {}

    init(_ pairs: [(String, JinjaValue)]) {
        for (k, v) in pairs { self[k] = v }
    }

    var count: Int { keys.count }

    subscript(key: String) -> JinjaValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    var pairs: [(String, JinjaValue)] { keys.map { ($0, storage[$0]!) } }
    var values: [JinjaValue] { keys.map { storage[$0]! } }
}

/// `namespace(...)`: the one mutable object templates can create (`{% set ns.x = ... %}`).
final class JinjaNamespace {
    var attributes: JinjaDict
    init(_ attributes: JinjaDict) { self.attributes = attributes }
}

struct JinjaCallArgs {
    var positional: [JinjaValue]
    var keyword: [(String, JinjaValue)]
    var pos: JinjaPos
}

/// A global function, macro or bound method.
final class JinjaCallable {
    let name: String
    let body: (JinjaCallArgs) throws -> JinjaValue
    init(_ name: String, _ body: @escaping (JinjaCallArgs) throws -> JinjaValue) {
        self.name = name
        self.body = body
    }
}

/// What filters like `map`, `selectattr` and `items` return (Python generators, single pass) and
/// what `dict.items()` / `keys()` / `values()` return (re-iterable views).
final class JinjaIterator {
    enum Kind { case generator, view(String) }
    let kind: Kind
    private let items: [JinjaValue]
    private var cursor = 0

    init(_ kind: Kind, _ items: [JinjaValue]) {
        self.kind = kind
        self.items = items
    }

    var isView: Bool { if case .view = kind { return true } else { return false } }

    /// The remaining items; a generator is exhausted afterwards.
    func drain() -> [JinjaValue] {
        if isView { return items }
        let rest = Array(items[cursor...])
        cursor = items.count
        return rest
    }

    func nextItem() -> JinjaValue? {
        if isView { return items.first }
        guard cursor < items.count else { return nil }
        cursor += 1
        return items[cursor - 1]
    }

    /// Python's `x in generator` consumes up to the match.
    func consumeUntil(_ match: (JinjaValue) -> Bool) -> Bool {
        if isView { return items.contains(where: match) }
        while cursor < items.count {
            cursor += 1
            if match(items[cursor - 1]) { return true }
        }
        return false
    }

    var viewCount: Int { items.count }

    /// Every item, consumed or not (what the iterator holds on to).
    var allItems: [JinjaValue] { items }
}

enum JinjaValue {
    /// jinja2's default `Undefined`: prints as "", is falsy and iterates as empty, but raises
    /// `hint` when used in arithmetic, attribute access or calls.
    case undefined(hint: String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    /// markupsafe's `Markup` (from `|safe` and `|escape`): prints as its text, but HTML-escapes
    /// plain strings added to it with `+`.
    case markup(String)
    case list([JinjaValue])
    case tuple([JinjaValue])
    case dict(JinjaDict)
    case namespace(JinjaNamespace)
    case callable(JinjaCallable)
    case iterator(JinjaIterator)

    static func undefinedName(_ name: String) -> JinjaValue { .undefined(hint: "'\(name)' is undefined") }

    var isUndefined: Bool { if case .undefined = self { return true } else { return false } }

    /// A Markup string as a plain string (where Python treats both alike).
    var plain: JinjaValue {
        if case .markup(let s) = self { return .string(s) }
        return self
    }

    /// Python's type name, for error messages that match CPython's.
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .markup: return "Markup"
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .callable: return "function"
        case .iterator(let it):
            if case .view(let name) = it.kind { return name }
            return "generator"
        }
    }

    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s), .markup(let s): return !s.isEmpty
        case .list(let l), .tuple(let l): return !l.isEmpty
        case .dict(let d): return d.count > 0
        case .namespace, .callable: return true
        case .iterator(let it): return it.isView ? it.viewCount > 0 : true
        }
    }
}

// MARK: - Python text conversions

enum JinjaText {
    /// Python `str(value)`, what `{{ }}`, `~` and `|string` produce.
    static func str(_ v: JinjaValue, _ pos: JinjaPos) throws -> String {
        switch v {
        case .undefined: return ""
        case .string(let s), .markup(let s): return s
        default: return try repr(v, pos)
        }
    }

    /// Python `repr(value)` (how containers print their items).
    static func repr(_ v: JinjaValue, _ pos: JinjaPos) throws -> String {
        switch v {
        case .undefined: return "Undefined"
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return floatRepr(d)
        case .string(let s): return reprString(s)
        case .markup(let s): return "Markup(" + reprString(s) + ")"
        case .list(let l): return "[" + (try joinedRepr(l, pos)) + "]"
        case .tuple(let l): return "(" + (try joinedRepr(l, pos)) + (l.count == 1 ? ",)" : ")")
        case .dict(let d):
            var out = "{"
            for (i, (k, item)) in d.pairs.enumerated() {
                out += (i > 0 ? ", " : "") + reprString(k) + ": " + (try repr(item, pos))
                try JinjaLimits.checkString(out.utf8.count, pos)
            }
            return out + "}"
        case .namespace(let ns):
            return "<Namespace " + (try repr(.dict(ns.attributes), pos)) + ">"
        case .callable(let c):
            throw jinjaError("printing the function '\(c.name)' is unsupported (Python would print its memory address)", pos)
        case .iterator(let it):
            switch it.kind {
            case .view(let name):
                let items = it.drain()
                return name + "([" + (try joinedRepr(items, pos)) + "])"
            case .generator:
                throw jinjaError("printing a generator is unsupported (Python would print its memory address); add '|list'", pos)
            }
        }
    }

    /// The items' reprs joined by ", ", checked against the string limit as it grows (items may
    /// share one large value many times over).
    private static func joinedRepr(_ items: [JinjaValue], _ pos: JinjaPos) throws -> String {
        var out = ""
        for (i, item) in items.enumerated() {
            if i > 0 { out += ", " }
            out += try repr(item, pos)
            try JinjaLimits.checkString(out.utf8.count, pos)
        }
        return out
    }

    /// markupsafe's `escape`.
    static func htmlEscape(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&#34;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func reprString(_ s: String) -> String {
        let useDouble = s.unicodeScalars.contains("'") && !s.unicodeScalars.contains("\"")
        let quote: Unicode.Scalar = useDouble ? "\"" : "'"
        var out = String.UnicodeScalarView()
        out.append(quote)
        for c in s.unicodeScalars {
            switch c {
            case "\\": out.append(contentsOf: "\\\\".unicodeScalars)
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            case "\r": out.append(contentsOf: "\\r".unicodeScalars)
            case "\t": out.append(contentsOf: "\\t".unicodeScalars)
            default:
                if c == quote {
                    out.append("\\"); out.append(c)
                } else if isPrintable(c) {
                    out.append(c)
                } else {
                    let v = c.value
                    let esc = v < 0x100 ? String(format: "\\x%02x", v) : v < 0x10000 ? String(format: "\\u%04x", v) : String(format: "\\U%08x", v)
                    out.append(contentsOf: esc.unicodeScalars)
                }
            }
        }
        out.append(quote)
        return String(out)
    }

    /// Python's `str.isprintable` for one code point (space is printable, other separators and controls are not).
    private static func isPrintable(_ c: Unicode.Scalar) -> Bool {
        if c == " " { return true }
        switch c.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator:
            return false
        default:
            return true
        }
    }

    /// Python's `repr(float)`: shortest round-trip digits, exponent form outside 1e-4 ..< 1e16.
    static func floatRepr(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description also gives the shortest round-trip digits; re-layout them as Python does.
        var text = Swift.abs(d).description
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...])!
            text = String(text[..<e])
        }
        var digits = text
        var pointAt = digits.count
        if let dot = digits.firstIndex(of: ".") {
            pointAt = digits.distance(from: digits.startIndex, to: dot)
            digits.remove(at: dot)
        }
        // Remove leading zeros (moving the point) and trailing zeros.
        while digits.count > 1 && digits.first == "0" { digits.removeFirst(); pointAt -= 1 }
        while digits.count > 1 && digits.last == "0" { digits.removeLast() }
        let decimalPoint = pointAt + exponent  // value = 0.digits × 10^decimalPoint
        let sign = d < 0 ? "-" : ""
        let exp10 = decimalPoint - 1
        if exp10 < -4 || exp10 >= 16 {
            var mantissa = String(digits.first!)
            if digits.count > 1 { mantissa += "." + digits.dropFirst() }
            let e = Swift.abs(exp10)
            return sign + mantissa + "e" + (exp10 < 0 ? "-" : "+") + (e < 10 ? "0" : "") + String(e)
        }
        if decimalPoint <= 0 {
            return sign + "0." + String(repeating: "0", count: -decimalPoint) + digits
        }
        if decimalPoint >= digits.count {
            return sign + digits + String(repeating: "0", count: decimalPoint - digits.count) + ".0"
        }
        let i = digits.index(digits.startIndex, offsetBy: decimalPoint)
        return sign + digits[..<i] + "." + digits[i...]
    }

    /// Python's `json.dumps(value, ensure_ascii=False, indent=..., separators=..., sort_keys=...)`
    /// (transformers' `tojson` filter).
    static func json(_ v: JinjaValue, indent: String?, itemSeparator: String, keySeparator: String, sortKeys: Bool,
                     _ pos: JinjaPos, level: Int = 0) throws -> String {
        switch v {
        case .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d):
            if d.isNaN { return "NaN" }
            if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
            return floatRepr(d)
        case .string(let s), .markup(let s): return jsonString(s)
        case .list(let items), .tuple(let items):
            return try jsonContainer("[", "]", try limitedMap(items, pos) { item in
                try json(item, indent: indent, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: sortKeys, pos, level: level + 1)
            }, indent: indent, itemSeparator: itemSeparator, level: level, pos)
        case .dict(let d):
            var pairs = d.pairs
            if sortKeys { pairs.sort { codePointLess($0.0, $1.0) } }
            return try jsonContainer("{", "}", try limitedMap(pairs, pos) { k, item in
                jsonString(k) + keySeparator
                    + (try json(item, indent: indent, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: sortKeys, pos, level: level + 1))
            }, indent: indent, itemSeparator: itemSeparator, level: level, pos)
        case .undefined, .namespace, .callable, .iterator:
            throw jinjaError("Object of type \(v.typeName) is not JSON serializable", pos)
        }
    }

    private static func jsonContainer(_ open: String, _ close: String, _ items: [String], indent: String?,
                                      itemSeparator: String, level: Int, _ pos: JinjaPos) throws -> String {
        if items.isEmpty { return open + close }
        guard let indent else {
            try checkJoin(items, separator: itemSeparator.utf8.count, extra: 2, pos)
            return open + items.joined(separator: itemSeparator) + close
        }
        try JinjaLimits.checkRepeatedString(indent.utf8.count, times: level + 2, pos)
        let inner = "\n" + String(repeating: indent, count: level + 1)
        let outer = "\n" + String(repeating: indent, count: level)
        try checkJoin(items, separator: itemSeparator.utf8.count + inner.utf8.count, extra: inner.utf8.count + outer.utf8.count + 2, pos)
        return open + inner + items.joined(separator: itemSeparator + inner) + outer + close
    }

    /// `items.map(transform)`, checking the total size of the strings against the limit as they
    /// are made (items may share one large value many times over).
    private static func limitedMap<T>(_ items: [T], _ pos: JinjaPos, _ transform: (T) throws -> String) throws -> [String] {
        var parts: [String] = []
        var total = 0
        for item in items {
            let part = try transform(item)
            total += part.utf8.count
            try JinjaLimits.checkString(total, pos)
            parts.append(part)
        }
        return parts
    }

    /// Throws unless `parts` joined by a separator of `separator` bytes, plus `extra` bytes, fit
    /// the string limit (checked before anything is built).
    static func checkJoin(_ parts: [String], separator: Int, extra: Int, _ pos: JinjaPos) throws {
        var total = extra
        for (i, p) in parts.enumerated() {
            total += p.utf8.count + (i > 0 ? separator : 0)
            try JinjaLimits.checkString(total, pos)
        }
    }

    static func jsonString(_ s: String) -> String {
        var out = String.UnicodeScalarView()
        out.append("\"")
        for c in s.unicodeScalars {
            switch c {
            case "\"": out.append(contentsOf: "\\\"".unicodeScalars)
            case "\\": out.append(contentsOf: "\\\\".unicodeScalars)
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            case "\r": out.append(contentsOf: "\\r".unicodeScalars)
            case "\t": out.append(contentsOf: "\\t".unicodeScalars)
            case "\u{08}": out.append(contentsOf: "\\b".unicodeScalars)
            case "\u{0C}": out.append(contentsOf: "\\f".unicodeScalars)
            default:
                if c.value < 0x20 {
                    out.append(contentsOf: String(format: "\\u%04x", c.value).unicodeScalars)
                } else {
                    out.append(c)
                }
            }
        }
        out.append("\"")
        return String(out)
    }

    /// Python string ordering (by code point).
    static func codePointLess(_ a: String, _ b: String) -> Bool {
        a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars) { $0.value < $1.value }
    }
}

// MARK: - Python comparisons

enum JinjaCompare {
    /// Python `==`.
    static func equal(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        switch (a.plain, b.plain) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (.dict(let x), .dict(let y)):
            return x.count == y.count && x.pairs.allSatisfy { k, v in y[k].map { equal(v, $0) } ?? false }
        case (.namespace(let x), .namespace(let y)): return x === y
        case (.callable(let x), .callable(let y)): return x === y
        case (.iterator(let x), .iterator(let y)): return x === y
        default:
            if let x = number(a), let y = number(b) { return x == y }
            return false
        }
    }

    /// Numbers as Python compares them (bool is an int).
    static func number(_ v: JinjaValue) -> Double? {
        switch v {
        case .bool(let b): return b ? 1 : 0
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    /// Python `<`; throws TypeError-like errors for unorderable types.
    static func less(_ a: JinjaValue, _ b: JinjaValue, _ pos: JinjaPos) throws -> Bool {
        try order(a, b, orEqual: false, "<", pos)
    }

    /// Python `<` (orEqual false) or `<=` (true); Undefined raises, unorderable types raise TypeError.
    static func order(_ a: JinjaValue, _ b: JinjaValue, orEqual: Bool, _ op: String, _ pos: JinjaPos) throws -> Bool {
        if case .undefined(let hint) = a { throw jinjaError(hint, pos) }
        if case .undefined(let hint) = b { throw jinjaError(hint, pos) }
        switch (a.plain, b.plain) {
        case (.int(let x), .int(let y)): return orEqual ? x <= y : x < y
        case (.string(let x), .string(let y)):
            return JinjaText.codePointLess(x, y) || (orEqual && x.unicodeScalars.elementsEqual(y.unicodeScalars))
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            for (p, q) in zip(x, y) where !equal(p, q) { return try order(p, q, orEqual: false, op, pos) }
            return orEqual ? x.count <= y.count : x.count < y.count
        default:
            if let x = number(a), let y = number(b) { return orEqual ? x <= y : x < y }
            throw jinjaError("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'", pos)
        }
    }
}

// MARK: - Python string helpers on code points

enum JinjaStrings {
    static func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }

    static func make<S: Sequence>(_ scalars: S) -> String where S.Element == Unicode.Scalar {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: scalars)
        return String(v)
    }

    static func length(_ s: String) -> Int { s.unicodeScalars.count }

    /// Python `str.strip(chars)` / `lstrip` / `rstrip`.
    static func strip(_ s: String, _ chars: String?, left: Bool, right: Bool) -> String {
        let a = scalars(s)
        let set = chars.map { Set($0.unicodeScalars) }
        let drop: (Unicode.Scalar) -> Bool = { c in set.map { $0.contains(c) } ?? jinjaIsSpace(c) }
        var lo = 0, hi = a.count
        if left { while lo < hi && drop(a[lo]) { lo += 1 } }
        if right { while hi > lo && drop(a[hi - 1]) { hi -= 1 } }
        return make(a[lo..<hi])
    }

    /// Whether `needle` (not empty) occurs in `hay` at `i`, which leaves room for it.
    private static func matches(_ hay: [Unicode.Scalar], _ needle: [Unicode.Scalar], at i: Int) -> Bool {
        var j = 0
        while j < needle.count && hay[i + j] == needle[j] { j += 1 }
        return j == needle.count
    }

    static func find(_ hay: [Unicode.Scalar], _ needle: [Unicode.Scalar], from: Int = 0) -> Int? {
        if needle.isEmpty { return from <= hay.count ? from : nil }
        guard hay.count >= needle.count else { return nil }
        var i = from
        while i + needle.count <= hay.count {
            if matches(hay, needle, at: i) { return i }
            i += 1
        }
        return nil
    }

    static func contains(_ s: String, _ sub: String) -> Bool {
        find(scalars(s), scalars(sub)) != nil
    }

    /// Python `str.replace(old, new, count)`, within the string limit.
    static func replace(_ s: String, _ old: String, _ new: String, count: Int = -1, _ pos: JinjaPos) throws -> String {
        let a = scalars(s), o = scalars(old), n = scalars(new)
        var out: [Unicode.Scalar] = []
        var done = 0
        // Each replacement grows the text by at most `new`; checked before it is appended.
        var bytes = s.utf8.count
        func insertNew() throws {
            bytes += new.utf8.count
            try JinjaLimits.checkString(bytes, pos)
            out += n
            done += 1
        }
        if o.isEmpty {
            // Python inserts `new` before every character and at the end.
            for c in a {
                if count < 0 || done < count { try insertNew() }
                out.append(c)
            }
            if count < 0 || done < count { try insertNew() }
            return make(out)
        }
        var i = 0
        while i < a.count {
            if (count < 0 || done < count), i + o.count <= a.count, matches(a, o, at: i) {
                try insertNew()
                i += o.count
            } else {
                out.append(a[i])
                i += 1
            }
        }
        return make(out)
    }

    /// Python `str.split(sep, maxsplit)`.
    static func split(_ s: String, _ sep: String?, maxSplit: Int) -> [String] {
        let a = scalars(s)
        var parts: [String] = []
        if let sep {
            let p = scalars(sep)
            var start = 0
            var splits = 0
            var i = 0
            while (maxSplit < 0 || splits < maxSplit), let j = find(a, p, from: i) {
                parts.append(make(a[start..<j]))
                start = j + p.count
                i = start
                splits += 1
            }
            parts.append(make(a[start...]))
            return parts
        }
        var i = 0
        var splits = 0
        while true {
            while i < a.count && jinjaIsSpace(a[i]) { i += 1 }
            if i >= a.count { break }
            if maxSplit >= 0 && splits >= maxSplit {
                var end = a.count
                while end > i && jinjaIsSpace(a[end - 1]) { end -= 1 }
                parts.append(make(a[i..<end]))
                break
            }
            var j = i
            while j < a.count && !jinjaIsSpace(a[j]) { j += 1 }
            parts.append(make(a[i..<j]))
            splits += 1
            i = j
        }
        return parts
    }

    /// Python `str.rsplit(sep, maxsplit)`.
    static func rsplit(_ s: String, _ sep: String?, maxSplit: Int) -> [String] {
        if maxSplit < 0 { return split(s, sep, maxSplit: -1) }
        let rev = make(scalars(s).reversed())
        let revSep = sep.map { make(scalars($0).reversed()) }
        return split(rev, revSep, maxSplit: maxSplit).reversed().map { make(scalars($0).reversed()) }
    }

    static func isCased(_ c: Unicode.Scalar) -> Bool { c.properties.isCased }

    static func upper(_ s: String) -> String { s.uppercased() }
    static func lower(_ s: String) -> String { s.lowercased() }

    private static func titleCase(_ c: Unicode.Scalar) -> String { c.properties.titlecaseMapping }

    /// Python `str.capitalize()`: first character title-cased, the rest lower-cased.
    static func capitalize(_ s: String) -> String {
        let a = scalars(s)
        guard let first = a.first else { return "" }
        return titleCase(first) + make(a.dropFirst()).lowercased()
    }

    /// Python `str.title()`.
    static func pythonTitle(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s.unicodeScalars {
            if isCased(c) {
                out += previousCased ? c.properties.lowercaseMapping : titleCase(c)
                previousCased = true
            } else {
                out.unicodeScalars.append(c)
                previousCased = false
            }
        }
        return out
    }

    /// jinja2's `title` filter: words start after whitespace, '-', '(', '{', '[' or '<'.
    static func jinjaTitle(_ s: String) -> String {
        let separators: Set<Unicode.Scalar> = ["-", "(", "{", "[", "<"]
        var out = ""
        var atWordStart = true
        for c in s.unicodeScalars {
            if jinjaIsSpace(c) || separators.contains(c) {
                out.unicodeScalars.append(c)
                atWordStart = true
            } else if atWordStart {
                out += c.properties.uppercaseMapping
                atWordStart = false
            } else {
                out += c.properties.lowercaseMapping
            }
        }
        return out
    }
}
