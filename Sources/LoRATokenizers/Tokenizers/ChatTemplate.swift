import Foundation
import LoRAFormats

/// One chat message: a role and, optionally, text content (an absent content is an absent key,
/// as transformers drops `None` values before rendering).
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String?

    public init(role: String, content: String?) {
        self.role = role
        self.content = content
    }
}

/// A JSON value that keeps the key order of its objects, for template inputs whose rendering
/// depends on it (`tools` schemas through `tojson`). Swift dictionaries have no order, so
/// `[String: Any]` inputs render their keys sorted (messages: "role" and "content" first).
public struct ChatTemplateJSON: Sendable {
    indirect enum Node: Sendable {
        case null, bool(Bool), int(Int), double(Double), string(String), array([Node]), object([(String, Node)])
    }

    let node: Node

    init(node: Node) { self.node = node }

    /// The members of a JSON object in order (nil for other values), e.g. to pass several
    /// ordered values as `extra`.
    public var objectMembers: [(String, ChatTemplateJSON)]? {
        if case .object(let pairs) = node { return pairs.map { ($0.0, ChatTemplateJSON(node: $0.1)) } }
        return nil
    }

    /// Parses JSON text (RFC 8259), keeping object key order.
    public init(parsing text: String) throws {
        var parser = ChatTemplateJSONParser(Array(text.unicodeScalars))
        node = try parser.parseDocument()
    }

    /// The value as Foundation types (`[String: Any]` objects lose their key order).
    public var foundationValue: Any { Self.foundation(node) }

    private static func foundation(_ n: Node) -> Any {
        switch n {
        case .null: return NSNull()
        case .bool(let b): return b
        case .int(let i): return i
        case .double(let d): return d
        case .string(let s): return s
        case .array(let a): return a.map(foundation)
        case .object(let o): return Dictionary(o.map { ($0.0, foundation($0.1)) }, uniquingKeysWith: { _, last in last })
        }
    }
}

/// A Hugging Face chat template (the Jinja text of `tokenizer_config.json`'s `chat_template` or a
/// GGUF file's `tokenizer.chat_template`), rendered with the semantics of transformers'
/// `apply_chat_template`: jinja2's ImmutableSandboxedEnvironment with trim_blocks and
/// lstrip_blocks, loop controls, `raise_exception`, `namespace`, `strftime_now` and transformers'
/// `tojson`. Constructs outside the supported subset throw a LoRAError naming the construct and
/// its line:column instead of rendering differently.
public struct ChatTemplate: Sendable {
    public let source: String
    private let nodes: [JinjaNode]

    public init(_ source: String) throws {
        self.source = source
        nodes = try JinjaParser.parse(source)
    }

    /// Renders typed messages. Variables: `messages`, `add_generation_prompt`, `bos_token` and
    /// `eos_token` (undefined when nil), `tools` and `documents` (none), then `extra` (which may
    /// override any of them, e.g. `tools` or `date_string`).
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String? = nil, eosToken: String? = nil,
                       extra: [String: Any] = [:]) throws -> String {
        let list: [JinjaValue] = messages.map { m in
            var d = JinjaDict()
            d["role"] = .string(m.role)
            if let c = m.content { d["content"] = .string(c) }
            return .dict(d)
        }
        return try render(list, addGenerationPrompt, bosToken, eosToken, extra)
    }

    /// Renders messages given as dictionaries (values: String, Bool, Int, Double, arrays,
    /// dictionaries, KeyValuePairs, ChatTemplateJSON; nil/NSNull values drop their key like
    /// transformers does).
    public func render(messages: [[String: Any]], addGenerationPrompt: Bool, bosToken: String? = nil, eosToken: String? = nil,
                       extra: [String: Any] = [:]) throws -> String {
        let list: [JinjaValue] = try messages.map { m in
            var d = JinjaDict()
            let keys = m.keys.sorted { a, b in
                let rank = { (k: String) in k == "role" ? 0 : k == "content" ? 1 : 2 }
                return rank(a) != rank(b) ? rank(a) < rank(b) : a < b
            }
            for k in keys where !Self.isNull(m[k]!) { d[k] = try Self.convert(m[k]!, level: 3) }
            return .dict(d)
        }
        return try render(list, addGenerationPrompt, bosToken, eosToken, extra)
    }

    private func render(_ messages: [JinjaValue], _ addGenerationPrompt: Bool, _ bosToken: String?, _ eosToken: String?,
                        _ extra: [String: Any]) throws -> String {
        let globals = JinjaScope(parent: nil)
        Self.installGlobals(globals)
        globals.vars["messages"] = .list(messages)
        globals.vars["add_generation_prompt"] = .bool(addGenerationPrompt)
        globals.vars["tools"] = JinjaValue.none
        globals.vars["documents"] = JinjaValue.none
        if let bosToken { globals.vars["bos_token"] = .string(bosToken) }
        if let eosToken { globals.vars["eos_token"] = .string(eosToken) }
        for (k, v) in extra { globals.vars[k] = try Self.convert(v) }
        return try JinjaRenderer().render(nodes, globals: globals)
    }

    // MARK: conversion of Swift values

    private static func isNull(_ v: Any) -> Bool {
        if v is NSNull { return true }
        let m = Mirror(reflecting: v)
        return m.displayStyle == .optional && m.children.isEmpty
    }

    /// `v` as a template value; `level` counts the containers it is inside, itself included.
    static func convert(_ v: Any, level: Int = 1) throws -> JinjaValue {
        guard level <= JinjaLimits.valueNesting else {
            throw LoRAError("chat template input nests deeper than the limit of \(JinjaLimits.valueNesting) levels")
        }
        let m = Mirror(reflecting: v)
        if m.displayStyle == .optional {
            guard let wrapped = m.children.first?.value else { return .none }
            return try convert(wrapped, level: level)
        }
        // Foundation numbers (JSONSerialization) first: on Darwin they would also cast to Int and Bool.
        if type(of: v) is NSNumber.Type, let n = v as? NSNumber {
            let type = String(cString: n.objCType)
            if type == "c" || type == "B" { return .bool(n.boolValue) }
            if type == "f" || type == "d" { return .double(n.doubleValue) }
            return .int(n.intValue)
        }
        switch v {
        case is NSNull: return .none
        case let j as ChatTemplateJSON: return convert(j.node)
        case let s as String: return .string(s)
        case let s as Substring: return .string(String(s))
        case let b as Bool where type(of: v) == Bool.self: return .bool(b)
        case let i as Int: return .int(i)
        case let i as Int32: return .int(Int(i))
        case let i as Int64: return .int(Int(i))
        case let i as UInt32: return .int(Int(i))
        case let d as Double: return .double(d)
        case let f as Float: return .double(Double(f))
        case let m as ChatMessage:
            var d = JinjaDict()
            d["role"] = .string(m.role)
            if let c = m.content { d["content"] = .string(c) }
            return .dict(d)
        case let kv as KeyValuePairs<String, Any>:
            var d = JinjaDict()
            for (k, x) in kv where !isNull(x) { d[k] = try convert(x, level: level + 1) }
            return .dict(d)
        case let dict as [String: Any]:
            var d = JinjaDict()
            for k in dict.keys.sorted() { d[k] = try convert(dict[k]!, level: level + 1) }
            return .dict(d)
        case let a as [Any]:
            return .list(try a.map { try convert($0, level: level + 1) })
        default:
            throw LoRAError("chat template input of type \(type(of: v)) is unsupported")
        }
    }

    private static func convert(_ n: ChatTemplateJSON.Node) -> JinjaValue {
        switch n {
        case .null: return .none
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        case .string(let s): return .string(s)
        case .array(let a): return .list(a.map(convert))
        case .object(let o): return .dict(JinjaDict(o.map { ($0.0, convert($0.1)) }))
        }
    }

    // MARK: globals

    private static func installGlobals(_ g: JinjaScope) {
        g.vars["raise_exception"] = .callable(JinjaCallable("raise_exception") { args in
            let b = try JinjaArgBinder(args, "raise_exception()", [("message", nil)])
            throw LoRAError(try JinjaText.str(b["message"], args.pos))
        })
        g.vars["range"] = .callable(JinjaCallable("range") { args in
            guard !args.positional.isEmpty, args.positional.count <= 3, args.keyword.isEmpty else {
                throw jinjaError("range() expects 1 to 3 integer arguments", args.pos)
            }
            let ints = try args.positional.map { v -> Int in
                switch v {
                case .int(let i): return i
                case .bool(let b): return b ? 1 : 0
                default: throw jinjaError("'\(v.typeName)' object cannot be interpreted as an integer", args.pos)
                }
            }
            let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
            guard step != 0 else { throw jinjaError("range() arg 3 must not be zero", args.pos) }
            // The length is checked before anything is made (range(2**62) would not fit memory).
            let (span, overflow) = step > 0 ? stop.subtractingReportingOverflow(start) : start.subtractingReportingOverflow(stop)
            if overflow || (span > 0 && UInt(span - 1) / step.magnitude >= 100_000) {
                throw jinjaError("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).", args.pos)
            }
            return .list(stride(from: start, to: stop, by: step).map { .int($0) })
        })
        g.vars["namespace"] = .callable(JinjaCallable("namespace") { args in
            var attrs = JinjaDict()
            guard args.positional.count <= 1 else { throw jinjaError("namespace() takes at most one positional argument", args.pos) }
            if let first = args.positional.first {
                guard case .dict(let d) = first else { throw jinjaError("namespace() expects a mapping as its positional argument", args.pos) }
                attrs = d
            }
            for (k, v) in args.keyword { attrs[k] = v }
            if let bad = attrs.keys.first(where: { $0.hasPrefix("_") }) {
                throw jinjaError("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '\(bad)'", args.pos)
            }
            return .namespace(JinjaNamespace(attrs))
        })
        g.vars["dict"] = .callable(JinjaCallable("dict") { args in
            var d = JinjaDict()
            guard args.positional.count <= 1 else { throw jinjaError("dict() takes at most one positional argument", args.pos) }
            if let first = args.positional.first {
                guard case .dict(let x) = first else { throw jinjaError("dict() expects a mapping as its positional argument", args.pos) }
                d = x
            }
            for (k, v) in args.keyword { d[k] = v }
            return .dict(d)
        })
        g.vars["strftime_now"] = .callable(JinjaCallable("strftime_now") { args in
            let b = try JinjaArgBinder(args, "strftime_now()", [("format", nil)])
            guard case .string(let format) = b["format"] else { throw jinjaError("strftime_now() expects a format string", args.pos) }
            return .string(try strftime(format, Date(), args.pos))
        })
        for name in ["lipsum", "cycler", "joiner"] {
            g.vars[name] = .callable(JinjaCallable(name) { args in
                throw jinjaError("unsupported template construct '\(name)()'", args.pos)
            })
        }
    }

    /// Python's `datetime.now().strftime(format)` for the common directives (C locale).
    static func strftime(_ format: String, _ date: Date, _ pos: JinjaPos) throws -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone.current
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
        let year = c.year!, month = c.month!, day = c.day!, hour = c.hour!, minute = c.minute!, second = c.second!
        let weekday = days[c.weekday! - 1]
        let dayOfYear = calendar.ordinality(of: .day, in: .year, for: date) ?? 1
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : String(v) }
        var out = ""
        var chars = format.makeIterator()
        while let ch = chars.next() {
            guard ch == "%" else { out.append(ch); continue }
            guard let d = chars.next() else { out.append("%"); break }
            switch d {
            case "Y": out += String(year)
            case "y": out += two(year % 100)
            case "m": out += two(month)
            case "d": out += two(day)
            case "H": out += two(hour)
            case "I": out += two(hour % 12 == 0 ? 12 : hour % 12)
            case "M": out += two(minute)
            case "S": out += two(second)
            case "p": out += hour < 12 ? "AM" : "PM"
            case "b": out += String(months[month - 1].prefix(3))
            case "B": out += months[month - 1]
            case "a": out += String(weekday.prefix(3))
            case "A": out += weekday
            case "j": out += (dayOfYear < 10 ? "00" : dayOfYear < 100 ? "0" : "") + String(dayOfYear)
            case "%": out += "%"
            default: throw jinjaError("unsupported strftime directive '%\(d)'", pos)
            }
        }
        return out
    }
}

/// A small JSON parser that keeps object key order.
struct ChatTemplateJSONParser {
    private let s: [Unicode.Scalar]
    private var i = 0
    private var depth = 0  // arrays and objects open at `i`, at most JinjaLimits.valueNesting

    init(_ scalars: [Unicode.Scalar]) { s = scalars }

    private func fail(_ what: String) -> LoRAError { LoRAError("invalid JSON at offset \(i): \(what)") }

    private mutating func skipWhitespace() {
        while i < s.count && (s[i] == " " || s[i] == "\n" || s[i] == "\r" || s[i] == "\t") { i += 1 }
    }

    mutating func parseDocument() throws -> ChatTemplateJSON.Node {
        let v = try parseValue()
        skipWhitespace()
        guard i == s.count else { throw fail("trailing characters") }
        return v
    }

    private mutating func literal(_ word: String) -> Bool {
        let w = Array(word.unicodeScalars)
        guard i + w.count <= s.count, Array(s[i..<(i + w.count)]) == w else { return false }
        i += w.count
        return true
    }

    private mutating func parseValue() throws -> ChatTemplateJSON.Node {
        skipWhitespace()
        guard i < s.count else { throw fail("unexpected end") }
        let opens = s[i] == "{" || s[i] == "["
        if opens {
            depth += 1
            guard depth <= JinjaLimits.valueNesting else { throw fail("arrays and objects nest deeper than the limit of \(JinjaLimits.valueNesting) levels") }
        }
        defer { if opens { depth -= 1 } }
        switch s[i] {
        case "{":
            i += 1
            var pairs: [(String, ChatTemplateJSON.Node)] = []
            skipWhitespace()
            if i < s.count && s[i] == "}" { i += 1; return .object(pairs) }
            while true {
                skipWhitespace()
                guard i < s.count, s[i] == "\"" else { throw fail("expected a key") }
                let k = try parseString()
                skipWhitespace()
                guard i < s.count, s[i] == ":" else { throw fail("expected ':'") }
                i += 1
                let v = try parseValue()
                if let j = pairs.firstIndex(where: { $0.0 == k }) { pairs[j].1 = v } else { pairs.append((k, v)) }
                skipWhitespace()
                guard i < s.count else { throw fail("unexpected end") }
                if s[i] == "," { i += 1; continue }
                if s[i] == "}" { i += 1; return .object(pairs) }
                throw fail("expected ',' or '}'")
            }
        case "[":
            i += 1
            var items: [ChatTemplateJSON.Node] = []
            skipWhitespace()
            if i < s.count && s[i] == "]" { i += 1; return .array(items) }
            while true {
                items.append(try parseValue())
                skipWhitespace()
                guard i < s.count else { throw fail("unexpected end") }
                if s[i] == "," { i += 1; continue }
                if s[i] == "]" { i += 1; return .array(items) }
                throw fail("expected ',' or ']'")
            }
        case "\"":
            return .string(try parseString())
        default:
            if literal("true") { return .bool(true) }
            if literal("false") { return .bool(false) }
            if literal("null") { return .null }
            return try parseNumber()
        }
    }

    private mutating func parseNumber() throws -> ChatTemplateJSON.Node {
        let start = i
        var isFloat = false
        if i < s.count && s[i] == "-" { i += 1 }
        while i < s.count, let c = Optional(s[i]), ("0"..."9").contains(c) || c == "." || c == "e" || c == "E" || c == "+" || c == "-" {
            if c == "." || c == "e" || c == "E" { isFloat = true }
            i += 1
        }
        let text = JinjaStrings.make(s[start..<i])
        if !isFloat, let v = Int(text) { return .int(v) }
        guard let d = Double(text), !text.isEmpty else { throw fail("invalid value") }
        return .double(d)
    }

    private mutating func parseString() throws -> String {
        i += 1
        var out = String.UnicodeScalarView()
        func hex4() throws -> UInt32 {
            guard i + 4 <= s.count, let v = UInt32(JinjaStrings.make(s[i..<(i + 4)]), radix: 16) else { throw fail("bad \\u escape") }
            i += 4
            return v
        }
        while true {
            guard i < s.count else { throw fail("unterminated string") }
            let c = s[i]
            i += 1
            if c == "\"" { return String(out) }
            if c != "\\" { out.append(c); continue }
            guard i < s.count else { throw fail("unterminated string") }
            let e = s[i]
            i += 1
            switch e {
            case "\"": out.append("\"")
            case "\\": out.append("\\")
            case "/": out.append("/")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "u":
                var v = try hex4()
                if (0xD800..<0xDC00).contains(v), i + 1 < s.count, s[i] == "\\", s[i + 1] == "u" {
                    i += 2
                    let low = try hex4()
                    v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let scalar = Unicode.Scalar(v) else { throw fail("lone surrogate in \\u escape") }
                out.append(scalar)
            default:
                throw fail("bad escape")
            }
        }
    }
}
