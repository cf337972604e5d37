import Foundation
import LoRAFormats

// Operators, attribute/item access, filters, tests and methods with the semantics of jinja2's
// ImmutableSandboxedEnvironment on CPython (plus transformers' `tojson` override).

/// Binds call arguments to named parameters with defaults, the way Python does.
struct JinjaArgBinder {
    private var values: [JinjaValue?]
    private let names: [String]

    init(_ args: JinjaCallArgs, _ what: String, _ params: [(String, JinjaValue?)], skip: Int = 0) throws {
        names = params.map { $0.0 }
        values = params.map { $0.1 }
        var filled = Array(repeating: false, count: params.count)
        guard args.positional.count <= params.count else {
            throw jinjaError("\(what) takes at most \(params.count) argument(s) (\(args.positional.count) given)", args.pos)
        }
        for (i, v) in args.positional.enumerated() {
            values[i] = v
            filled[i] = true
        }
        for (k, v) in args.keyword {
            guard let i = names.firstIndex(of: k) else { throw jinjaError("\(what) got an unexpected keyword argument '\(k)'", args.pos) }
            guard !filled[i] else { throw jinjaError("\(what) got multiple values for argument '\(k)'", args.pos) }
            values[i] = v
            filled[i] = true
        }
        for (i, v) in values.enumerated() where v == nil {
            throw jinjaError("\(what) is missing the argument '\(names[i])'", args.pos)
        }
    }

    subscript(_ name: String) -> JinjaValue { values[names.firstIndex(of: name)!]! }
}

extension JinjaCallArgs {
    /// Arguments with Markup strings as plain strings (builtins treat both alike).
    var demoted: JinjaCallArgs {
        JinjaCallArgs(positional: positional.map { $0.plain }, keyword: keyword.map { ($0.0, $0.1.plain) }, pos: pos)
    }
}

extension JinjaValue {
    var isStringValue: Bool { if case .string = self { return true } else { return false } }
}

enum JinjaBuiltins {
    // MARK: iteration and access

    /// Python `list(iter(value))`.
    static func iterate(_ v: JinjaValue, _ pos: JinjaPos) throws -> [JinjaValue] {
        switch v {
        case .undefined: return []
        case .list(let l), .tuple(let l): return l
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s), .markup(let s):
            try JinjaLimits.checkList(s.unicodeScalars.count, pos)
            return s.unicodeScalars.map { .string(String($0)) }
        case .iterator(let it): return it.drain()
        default: throw jinjaError("'\(v.typeName)' object is not iterable", pos)
        }
    }

    /// jinja2's `object_type_repr`, used in Undefined hints.
    private static func objectRepr(_ v: JinjaValue) -> String {
        switch v {
        case .none: return "None"
        case .namespace: return "jinja2.utils.Namespace object"
        default: return "\(v.typeName) object"
        }
    }

    private static let strMethods: Set<String> = [
        "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format", "format_map",
        "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
        "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans", "partition",
        "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split",
        "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill",
    ]
    private static let dictMethods: Set<String> = ["clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values"]
    private static let dictMutators: Set<String> = ["clear", "pop", "popitem", "setdefault", "update"]
    private static let listMethods: Set<String> = ["append", "clear", "copy", "count", "extend", "index", "insert", "pop", "remove", "reverse", "sort"]
    private static let listMutators: Set<String> = ["append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"]

    /// `obj.name`: the Python attribute first (methods), then the item, else Undefined.
    static func getAttribute(_ obj: JinjaValue, _ name: String, _ pos: JinjaPos) throws -> JinjaValue {
        switch obj {
        case .undefined(let hint):
            throw jinjaError(hint, pos)
        case .dict(let d):
            if dictMethods.contains(name) {
                if dictMutators.contains(name) { return unsafe(name, obj) }
                return .callable(JinjaCallable(name) { try dictMethod(d, name, $0) })
            }
            return d[name] ?? .undefined(hint: "'dict object' has no attribute '\(name)'")
        case .namespace(let ns):
            return ns.attributes[name] ?? .undefined(hint: "'jinja2.utils.Namespace object' has no attribute '\(name)'")
        case .string(let s):
            if strMethods.contains(name) { return .callable(JinjaCallable(name) { try stringMethod(s, name, $0) }) }
        case .markup:
            if strMethods.contains(name) {
                return .callable(JinjaCallable(name) { args in
                    throw jinjaError("unsupported method '\(name)' on a safe (Markup) string", args.pos)
                })
            }
        case .list(let l), .tuple(let l):
            if listMethods.contains(name) {
                if case .list = obj, listMutators.contains(name) { return unsafe(name, obj) }
                if name == "index" || name == "count" { return .callable(JinjaCallable(name) { try listMethod(l, name, $0) }) }
                if case .list = obj, name == "copy" { return .callable(JinjaCallable(name) { _ in .list(l) }) }
            }
        default:
            break
        }
        return .undefined(hint: "'\(objectRepr(obj))' has no attribute '\(name)'")
    }

    private static func unsafe(_ name: String, _ obj: JinjaValue) -> JinjaValue {
        .undefined(hint: "access to attribute '\(name)' of '\(obj.typeName)' object is unsafe.")
    }

    /// `obj[key]`: the item first, then (for string keys) the attribute, else Undefined.
    static func getItem(_ obj: JinjaValue, _ rawKey: JinjaValue, _ pos: JinjaPos) throws -> JinjaValue {
        let key = rawKey.plain
        if case .markup(let s) = obj {
            // Markup's __getitem__ returns Markup.
            let v = try getItem(.string(s), key, pos)
            if case .string(let c) = v { return .markup(c) }
            return v
        }
        switch (obj, key) {
        case (.undefined(let hint), _):
            throw jinjaError(hint, pos)
        case (.dict(let d), .string(let k)):
            if let v = d[k] { return v }
        case (.list(let l), _), (.tuple(let l), _):
            if let i = integer(key) {
                let j = i < 0 ? i + l.count : i
                if j >= 0 && j < l.count { return l[j] }
                return .undefined(hint: "'\(objectRepr(obj))' has no element \(i)")
            }
        case (.string(let s), _):
            if let i = integer(key) {
                let a = Array(s.unicodeScalars)
                let j = i < 0 ? i + a.count : i
                if j >= 0 && j < a.count { return .string(String(a[j])) }
                return .undefined(hint: "'str object' has no element \(i)")
            }
        default:
            break
        }
        if case .string(let k) = key { return try getAttribute(obj, k, pos) }
        return .undefined(hint: "'\(objectRepr(obj))' has no element \((try? JinjaText.repr(key, pos)) ?? "?")")
    }

    private static func integer(_ v: JinjaValue) -> Int? {
        switch v {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// Python slicing `obj[start:stop:step]`.
    static func slice(_ obj: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?, _ pos: JinjaPos) throws -> JinjaValue {
        func bound(_ v: JinjaValue?) throws -> Int? {
            guard let v, !isNone(v) else { return nil }
            guard let i = integer(v) else { throw jinjaError("slice indices must be integers or None", pos) }
            return i
        }
        let st = try bound(step) ?? 1
        guard st != 0 else { throw jinjaError("slice step cannot be zero", pos) }
        func indices(_ n: Int) throws -> [Int] {
            var lo = try bound(start), hi = try bound(stop)
            if st > 0 {
                var a = lo ?? 0, b = hi ?? n
                if a < 0 { a = max(a + n, 0) } else { a = min(a, n) }
                if b < 0 { b = max(b + n, 0) } else { b = min(b, n) }
                return a < b ? Array(stride(from: a, to: b, by: st)) : []
            }
            if let l = lo { lo = l < 0 ? max(l + n, -1) : min(l, n - 1) }
            if let h = hi { hi = h < 0 ? max(h + n, -1) : min(h, n - 1) }
            let a = lo ?? n - 1, b = hi ?? -1
            return a > b ? Array(stride(from: a, to: b, by: st)) : []
        }
        switch obj {
        case .undefined(let hint): throw jinjaError(hint, pos)
        case .markup(let s):
            let a = Array(s.unicodeScalars)
            return .markup(JinjaStrings.make(try indices(a.count).map { a[$0] }))
        case .list(let l): return .list(try indices(l.count).map { l[$0] })
        case .tuple(let l): return .tuple(try indices(l.count).map { l[$0] })
        case .string(let s):
            let a = Array(s.unicodeScalars)
            return .string(JinjaStrings.make(try indices(a.count).map { a[$0] }))
        case .dict:
            throw jinjaError("unhashable type: 'slice'", pos)
        default:
            // jinja2 compiles slices to plain Python subscripts, bypassing its forgiving getitem.
            throw jinjaError("'\(obj.typeName)' object is not subscriptable", pos)
        }
    }

    private static func isNone(_ v: JinjaValue) -> Bool { if case .none = v { return true } else { return false } }

    // MARK: operators

    static func binary(_ op: JinjaBinaryOp, _ a: JinjaValue, _ b: JinjaValue, _ pos: JinjaPos) throws -> JinjaValue {
        if op == .concat { return .string(try concatenated(try JinjaText.str(a, pos), try JinjaText.str(b, pos), pos)) }
        if op == .mod, case .string = a.plain { throw jinjaError("unsupported template construct: '%' string formatting", pos) }
        if case .undefined(let hint) = a { throw jinjaError(hint, pos) }
        if case .undefined(let hint) = b { throw jinjaError(hint, pos) }
        func typeError() -> LoRAError {
            if op == .add, case .string = a {
                return jinjaError("can only concatenate str (not \"\(b.typeName)\") to str", pos)
            }
            if op == .mod, case .string = a {
                return jinjaError("unsupported template construct: '%' string formatting", pos)
            }
            return jinjaError("unsupported operand type(s) for \(op.rawValue): '\(a.typeName)' and '\(b.typeName)'", pos)
        }
        switch (op, a, b) {
        case (.add, .markup(let x), .markup(let y)): return .markup(try concatenated(x, y, pos))
        case (.add, .markup(let x), .string(let y)): return .markup(try concatenated(x, JinjaText.htmlEscape(y), pos))
        case (.add, .string(let x), .markup(let y)): return .markup(try concatenated(JinjaText.htmlEscape(x), y, pos))
        case (.mul, .markup(let s), _), (.mul, _, .markup(let s)):
            guard let n = integer(a.plain.isStringValue ? b : a) else { throw typeError() }
            return .markup(try repeated(s, n, pos))
        case (.add, .string(let x), .string(let y)): return .string(try concatenated(x, y, pos))
        case (.add, .list(let x), .list(let y)):
            try JinjaLimits.checkList(x.count + y.count, pos)
            return .list(x + y)
        case (.add, .tuple(let x), .tuple(let y)):
            try JinjaLimits.checkList(x.count + y.count, pos)
            return .tuple(x + y)
        case (.mul, .string(let s), _), (.mul, _, .string(let s)):
            guard let n = integer(isString(a) ? b : a) else { throw typeError() }
            return .string(try repeated(s, n, pos))
        case (.mul, .list(let l), _), (.mul, _, .list(let l)):
            guard let n = integer(isList(a) ? b : a) else { throw typeError() }
            return .list(try repeated(l, n, pos))
        case (.mul, .tuple(let l), _), (.mul, _, .tuple(let l)):
            let isTupleA: Bool
            if case .tuple = a { isTupleA = true } else { isTupleA = false }
            guard let n = integer(isTupleA ? b : a) else { throw typeError() }
            return .tuple(try repeated(l, n, pos))
        default:
            break
        }
        if let x = integer(a), let y = integer(b) {
            switch op {
            case .add:
                let (r, o) = x.addingReportingOverflow(y)
                if o { throw jinjaError("integer overflow", pos) }
                return .int(r)
            case .sub:
                let (r, o) = x.subtractingReportingOverflow(y)
                if o { throw jinjaError("integer overflow", pos) }
                return .int(r)
            case .mul:
                let (r, o) = x.multipliedReportingOverflow(by: y)
                if o { throw jinjaError("integer overflow", pos) }
                return .int(r)
            case .div:
                guard y != 0 else { throw jinjaError("division by zero", pos) }
                return .double(Double(x) / Double(y))
            case .floorDiv:
                guard y != 0 else { throw jinjaError("integer division or modulo by zero", pos) }
                let q = x / y
                return .int((x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q)
            case .mod:
                guard y != 0 else { throw jinjaError("integer division or modulo by zero", pos) }
                let r = x % y
                return .int(r != 0 && (r < 0) != (y < 0) ? r + y : r)
            case .pow:
                if y < 0 {
                    guard x != 0 else { throw jinjaError("0.0 cannot be raised to a negative power", pos) }
                    return .double(Foundation.pow(Double(x), Double(y)))
                }
                var result = 1, base = x, e = y
                while e > 0 {
                    if e & 1 == 1 {
                        let (r, o) = result.multipliedReportingOverflow(by: base)
                        if o { throw jinjaError("integer overflow", pos) }
                        result = r
                    }
                    e >>= 1
                    if e > 0 {
                        let (sq, o) = base.multipliedReportingOverflow(by: base)
                        if o { throw jinjaError("integer overflow", pos) }
                        base = sq
                    }
                }
                return .int(result)
            case .concat:
                break
            }
        }
        if let x = JinjaCompare.number(a), let y = JinjaCompare.number(b) {
            switch op {
            case .add: return .double(x + y)
            case .sub: return .double(x - y)
            case .mul: return .double(x * y)
            case .div:
                guard y != 0 else { throw jinjaError("float division by zero", pos) }
                return .double(x / y)
            case .floorDiv:
                guard y != 0 else { throw jinjaError("float floor division by zero", pos) }
                return .double((x / y).rounded(.down))
            case .mod:
                guard y != 0 else { throw jinjaError("float modulo", pos) }
                var r = fmod(x, y)
                if r != 0 && (r < 0) != (y < 0) { r += y }
                if r == 0 { r = y < 0 ? -0.0 : 0.0 }
                return .double(r)
            case .pow:
                if x == 0 && y < 0 { throw jinjaError("0.0 cannot be raised to a negative power", pos) }
                if x < 0 && y.isFinite && y.rounded() != y {
                    throw jinjaError("unsupported: a negative number raised to a fractional power is complex in Python", pos)
                }
                let r = Foundation.pow(x, y)
                if r.isInfinite && x.isFinite && y.isFinite { throw jinjaError("(34, 'Numerical result out of range')", pos) }
                return .double(r)
            case .concat: break
            }
        }
        throw typeError()
    }

    /// `x + y` within the string limit.
    private static func concatenated(_ x: String, _ y: String, _ pos: JinjaPos) throws -> String {
        try JinjaLimits.checkString(x.utf8.count + y.utf8.count, pos)
        return x + y
    }

    /// Python `s * n` within the string limit, by doubling (a few large copies rather than `n`
    /// small ones, so the time follows the bytes, as the step count does).
    private static func repeated(_ s: String, _ n: Int, _ pos: JinjaPos) throws -> String {
        try JinjaLimits.checkRepeatedString(s.utf8.count, times: max(n, 0), pos)
        var out = ""
        var chunk = s, remaining = max(n, 0)
        while remaining > 0 {
            if remaining & 1 == 1 { out += chunk }
            remaining >>= 1
            if remaining > 0 { chunk += chunk }
        }
        return out
    }

    /// Python `list * n` within the list limit.
    private static func repeated(_ l: [JinjaValue], _ n: Int, _ pos: JinjaPos) throws -> [JinjaValue] {
        try JinjaLimits.checkRepeatedList(l.count, times: max(n, 0), pos)
        return Array([[JinjaValue]](repeating: l, count: max(n, 0)).joined())
    }

    /// `parts` joined by `separator` within the string limit.
    private static func joined(_ parts: [String], _ separator: String, _ pos: JinjaPos) throws -> String {
        try JinjaText.checkJoin(parts, separator: separator.utf8.count, extra: 0, pos)
        return parts.joined(separator: separator)
    }

    /// `n` spaces, for `indent` widths, within the string limit.
    private static func spaces(_ n: Int, _ pos: JinjaPos) throws -> String {
        try JinjaLimits.checkString(n, pos)
        return String(repeating: " ", count: max(n, 0))
    }

    private static func isString(_ v: JinjaValue) -> Bool { if case .string = v { return true } else { return false } }
    private static func isList(_ v: JinjaValue) -> Bool { if case .list = v { return true } else { return false } }

    /// The type name of the first unhashable part of `v` (Python dict keys must be hashable).
    static func unhashable(_ v: JinjaValue) -> String? {
        switch v {
        case .list, .dict, .namespace, .iterator: return v.typeName
        case .tuple(let items): return items.lazy.compactMap { unhashable($0) }.first
        default: return nil
        }
    }

    static func contains(_ rawContainer: JinjaValue, _ rawItem: JinjaValue, _ pos: JinjaPos) throws -> Bool {
        let container = rawContainer.plain, item = rawItem.plain
        switch container {
        case .string(let s):
            guard case .string(let sub) = item else {
                throw jinjaError("'in <string>' requires string as left operand, not \(item.typeName)", pos)
            }
            return JinjaStrings.contains(s, sub)
        case .list(let l), .tuple(let l): return l.contains { JinjaCompare.equal($0, item) }
        case .dict(let d):
            if case .string(let k) = item { return d[k] != nil }
            if let bad = unhashable(item) { throw jinjaError("unhashable type: '\(bad)'", pos) }
            return false
        case .iterator(let it): return it.consumeUntil { JinjaCompare.equal($0, item) }
        case .undefined: return false
        default: throw jinjaError("argument of type '\(container.typeName)' is not iterable", pos)
        }
    }

    static func compare(_ op: JinjaCompareOp, _ a: JinjaValue, _ b: JinjaValue, _ pos: JinjaPos) throws -> Bool {
        switch op {
        case .eq: return JinjaCompare.equal(a, b)
        case .ne: return !JinjaCompare.equal(a, b)
        case .lt: return try JinjaCompare.order(a, b, orEqual: false, "<", pos)
        case .gt: return try JinjaCompare.order(b, a, orEqual: false, ">", pos)
        case .le: return try JinjaCompare.order(a, b, orEqual: true, "<=", pos)
        case .ge: return try JinjaCompare.order(b, a, orEqual: true, ">=", pos)
        case .in: return try contains(b, a, pos)
        case .notIn: return !(try contains(b, a, pos))
        }
    }

    // MARK: methods

    private static func str(_ v: JinjaValue, _ what: String, _ pos: JinjaPos) throws -> String {
        guard case .string(let s) = v else { throw jinjaError("\(what) must be a string, not \(v.typeName)", pos) }
        return s
    }

    private static func optionalStr(_ v: JinjaValue, _ what: String, _ pos: JinjaPos) throws -> String? {
        if isNone(v) { return nil }
        return try str(v, what, pos)
    }

    private static func int(_ v: JinjaValue, _ what: String, _ pos: JinjaPos) throws -> Int {
        guard let i = integer(v) else { throw jinjaError("\(what) must be an integer, not \(v.typeName)", pos) }
        return i
    }

    static func stringMethod(_ s: String, _ name: String, _ rawArgs: JinjaCallArgs) throws -> JinjaValue {
        let args = rawArgs.demoted
        let pos = args.pos
        let what = "str.\(name)()"
        switch name {
        case "strip", "lstrip", "rstrip":
            let b = try JinjaArgBinder(args, what, [("chars", JinjaValue.none)])
            let chars = try optionalStr(b["chars"], "the chars argument", pos)
            return .string(JinjaStrings.strip(s, chars, left: name != "rstrip", right: name != "lstrip"))
        case "upper", "lower", "title", "capitalize", "swapcase", "casefold":
            _ = try JinjaArgBinder(args, what, [])
            switch name {
            case "upper": return .string(JinjaStrings.upper(s))
            case "lower", "casefold": return .string(JinjaStrings.lower(s))
            case "title": return .string(JinjaStrings.pythonTitle(s))
            case "capitalize": return .string(JinjaStrings.capitalize(s))
            default:
                return .string(s.unicodeScalars.map { c in
                    c.properties.isUppercase ? c.properties.lowercaseMapping : c.properties.isLowercase ? c.properties.uppercaseMapping : String(c)
                }.joined())
            }
        case "startswith", "endswith":
            let b = try JinjaArgBinder(args, what, [("prefix", nil), ("start", JinjaValue.none), ("end", JinjaValue.none)])
            let candidates: [String]
            switch b["prefix"] {
            case .string(let p): candidates = [p]
            case .tuple(let items): candidates = try items.map { try str($0, "each tuple item", pos) }
            case let v: throw jinjaError("\(name) first arg must be str or a tuple of str, not \(v.typeName)", pos)
            }
            guard case .string(let sliced) = try slice(.string(s), b["start"], b["end"], nil, pos) else { return .bool(false) }
            let a = Array(sliced.unicodeScalars)
            return .bool(candidates.contains { c in
                let p = Array(c.unicodeScalars)
                guard p.count <= a.count else { return false }
                return name == "startswith" ? Array(a[..<p.count]) == p : Array(a[(a.count - p.count)...]) == p
            })
        case "split", "rsplit":
            let b = try JinjaArgBinder(args, what, [("sep", JinjaValue.none), ("maxsplit", JinjaValue.int(-1))])
            let sep = try optionalStr(b["sep"], "the separator", pos)
            if sep == "" { throw jinjaError("empty separator", pos) }
            let maxSplit = try int(b["maxsplit"], "maxsplit", pos)
            let parts = name == "split" ? JinjaStrings.split(s, sep, maxSplit: maxSplit) : JinjaStrings.rsplit(s, sep, maxSplit: maxSplit)
            try JinjaLimits.checkList(parts.count, pos)
            return .list(parts.map { .string($0) })
        case "splitlines":
            let b = try JinjaArgBinder(args, what, [("keepends", JinjaValue.bool(false))])
            let lines = splitLines(s, keepEnds: b["keepends"].truthy)
            try JinjaLimits.checkList(lines.count, pos)
            return .list(lines.map { .string($0) })
        case "replace":
            let b = try JinjaArgBinder(args, what, [("old", nil), ("new", nil), ("count", JinjaValue.int(-1))])
            return .string(try JinjaStrings.replace(s, try str(b["old"], "old", pos), try str(b["new"], "new", pos),
                                                    count: try int(b["count"], "count", pos), pos))
        case "find", "rfind", "index", "rindex", "count":
            let b = try JinjaArgBinder(args, what, [("sub", nil), ("start", JinjaValue.none), ("end", JinjaValue.none)])
            let sub = Array(try str(b["sub"], "the substring", pos).unicodeScalars)
            let a = Array(s.unicodeScalars)
            let n = a.count
            func clamp(_ v: JinjaValue, _ def: Int) throws -> Int {
                if isNone(v) { return def }
                let i = try int(v, "the index", pos)
                return i < 0 ? max(i + n, 0) : min(i, n)
            }
            let lo = try clamp(b["start"], 0), hi = try clamp(b["end"], n)
            let window = lo <= hi ? Array(a[lo..<hi]) : []
            if name == "count" {
                if sub.isEmpty { return .int(window.count + 1) }
                var c = 0, i = 0
                while let j = JinjaStrings.find(window, sub, from: i) { c += 1; i = j + sub.count }
                return .int(c)
            }
            var found: Int?
            if name == "find" || name == "index" {
                found = JinjaStrings.find(window, sub).map { $0 + lo }
            } else {
                var i = 0
                while let j = JinjaStrings.find(window, sub, from: i) { found = j + lo; i = j + 1; if i > window.count { break } }
            }
            if let found { return .int(found) }
            if name == "index" || name == "rindex" { throw jinjaError("substring not found", pos) }
            return .int(-1)
        case "join":
            let b = try JinjaArgBinder(args, what, [("iterable", nil)])
            let parts = try iterate(b["iterable"], pos).map { v -> String in
                guard case .string(let x) = v else { throw jinjaError("sequence item: expected str instance, \(v.typeName) found", pos) }
                return x
            }
            return .string(try joined(parts, s, pos))
        case "removeprefix", "removesuffix":
            let b = try JinjaArgBinder(args, what, [("affix", nil)])
            let a = Array(s.unicodeScalars), p = Array(try str(b["affix"], "the argument", pos).unicodeScalars)
            guard !p.isEmpty, p.count <= a.count else { return .string(s) }
            if name == "removeprefix" { return .string(Array(a[..<p.count]) == p ? JinjaStrings.make(a[p.count...]) : s) }
            return .string(Array(a[(a.count - p.count)...]) == p ? JinjaStrings.make(a[..<(a.count - p.count)]) : s)
        case "isdigit", "isdecimal", "isnumeric", "isalpha", "isalnum", "isspace", "islower", "isupper", "isascii":
            _ = try JinjaArgBinder(args, what, [])
            let a = Array(s.unicodeScalars)
            switch name {
            case "isascii": return .bool(a.allSatisfy { $0.isASCII })
            case "islower", "isupper":
                let cased = a.filter { $0.properties.isCased }
                return .bool(!cased.isEmpty && cased.allSatisfy { name == "islower" ? !$0.properties.isUppercase && $0.properties.generalCategory != .titlecaseLetter : !$0.properties.isLowercase && $0.properties.generalCategory != .titlecaseLetter })
            default:
                guard !a.isEmpty else { return .bool(false) }
                return .bool(a.allSatisfy { c in
                    switch name {
                    case "isdigit", "isdecimal": return c.properties.numericType == .decimal || (name == "isdigit" && c.properties.numericType == .digit)
                    case "isnumeric": return c.properties.numericType != nil
                    case "isalpha": return isLetter(c)
                    case "isalnum": return isLetter(c) || c.properties.numericType != nil
                    default: return jinjaIsSpace(c)
                    }
                })
            }
        default:
            throw jinjaError("unsupported string method '\(name)'", pos)
        }
    }

    private static func isLetter(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    /// Python `str.splitlines`.
    static func splitLines(_ s: String, keepEnds: Bool = false) -> [String] {
        let a = Array(s.unicodeScalars)
        var lines: [String] = []
        var start = 0, i = 0
        let breaks: Set<UInt32> = [0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029]
        while i < a.count {
            if breaks.contains(a[i].value) {
                var end = i + 1
                if a[i] == "\r" && end < a.count && a[end] == "\n" { end += 1 }
                lines.append(JinjaStrings.make(a[start..<(keepEnds ? end : i)]))
                start = end
                i = end
            } else {
                i += 1
            }
        }
        if start < a.count { lines.append(JinjaStrings.make(a[start...])) }
        return lines
    }

    static func dictMethod(_ d: JinjaDict, _ name: String, _ rawArgs: JinjaCallArgs) throws -> JinjaValue {
        let args = rawArgs.demoted
        let what = "dict.\(name)()"
        switch name {
        case "items":
            _ = try JinjaArgBinder(args, what, [])
            return .iterator(JinjaIterator(.view("dict_items"), d.pairs.map { .tuple([.string($0.0), $0.1]) }))
        case "keys":
            _ = try JinjaArgBinder(args, what, [])
            return .iterator(JinjaIterator(.view("dict_keys"), d.keys.map { .string($0) }))
        case "values":
            _ = try JinjaArgBinder(args, what, [])
            return .iterator(JinjaIterator(.view("dict_values"), d.values))
        case "get":
            let b = try JinjaArgBinder(args, what, [("key", nil), ("default", JinjaValue.none)])
            if case .string(let k) = b["key"], let v = d[k] { return v }
            return b["default"]
        case "copy":
            _ = try JinjaArgBinder(args, what, [])
            return .dict(d)
        default:
            throw jinjaError("unsupported dict method '\(name)'", args.pos)
        }
    }

    static func listMethod(_ l: [JinjaValue], _ name: String, _ rawArgs: JinjaCallArgs) throws -> JinjaValue {
        let args = rawArgs.demoted
        let b = try JinjaArgBinder(args, "list.\(name)()", [("value", nil)])
        if name == "count" { return .int(l.filter { JinjaCompare.equal($0, b["value"]) }.count) }
        guard let i = l.firstIndex(where: { JinjaCompare.equal($0, b["value"]) }) else {
            throw jinjaError("\((try? JinjaText.repr(b["value"], args.pos)) ?? "value") is not in list", args.pos)
        }
        return .int(i)
    }

    // MARK: tests

    static let testNames: Set<String> = [
        "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string", "mapping",
        "iterable", "sequence", "callable", "sameas", "in", "lower", "upper", "even", "odd", "divisibleby",
        "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=",
    ]

    static func applyTest(_ name: String, _ rawValue: JinjaValue, _ rawArgs: JinjaCallArgs) throws -> Bool {
        let v = rawValue.plain, args = rawArgs.demoted
        let pos = args.pos
        func one() throws -> JinjaValue { try JinjaArgBinder(args, "test '\(name)'", [("other", nil)])["other"] }
        func none() throws { _ = try JinjaArgBinder(args, "test '\(name)'", []) }
        switch name {
        case "defined": try none(); return !v.isUndefined
        case "undefined": try none(); return v.isUndefined
        case "none": try none(); return isNone(v)
        case "boolean": try none(); if case .bool = v { return true }; return false
        case "true": try none(); if case .bool(true) = v { return true }; return false
        case "false": try none(); if case .bool(false) = v { return true }; return false
        case "integer": try none(); if case .int = v { return true }; return false
        case "float": try none(); if case .double = v { return true }; return false
        case "number": try none(); return JinjaCompare.number(v) != nil
        case "string": try none(); return isString(v)
        case "mapping": try none(); if case .dict = v { return true }; return false
        case "callable": try none(); if case .callable = v { return true }; return false
        case "iterable":
            try none()
            switch v {
            case .undefined, .string, .list, .tuple, .dict, .iterator: return true
            default: return false
            }
        case "sequence":
            try none()
            switch v {
            case .undefined, .string, .list, .tuple, .dict: return true
            default: return false
            }
        case "sameas":
            let other = try one()
            switch (v, other) {
            case (.none, .none): return true
            case (.bool(let x), .bool(let y)): return x == y
            case (.int(let x), .int(let y)): return x == y && (-5...256).contains(x)
            case (.namespace(let x), .namespace(let y)): return x === y
            case (.callable(let x), .callable(let y)): return x === y
            case (.none, _), (_, .none), (.bool, _), (_, .bool): return false
            default: throw jinjaError("unsupported 'sameas' test between \(v.typeName) and \(other.typeName) values (object identity)", pos)
            }
        case "in": return try contains(try one(), v, pos)
        case "lower", "upper":
            try none()
            return try stringMethod(try JinjaText.str(v, pos), name == "lower" ? "islower" : "isupper",
                                    JinjaCallArgs(positional: [], keyword: [], pos: pos)).truthy
        case "even", "odd":
            try none()
            return JinjaCompare.equal(try binary(.mod, v, .int(2), pos), .int(name == "even" ? 0 : 1))
        case "divisibleby":
            return JinjaCompare.equal(try binary(.mod, v, try one(), pos), .int(0))
        case "eq", "equalto", "==": return try compare(.eq, v, try one(), pos)
        case "ne", "!=": return try compare(.ne, v, try one(), pos)
        case "lt", "lessthan", "<": return try compare(.lt, v, try one(), pos)
        case "le", "<=": return try compare(.le, v, try one(), pos)
        case "gt", "greaterthan", ">": return try compare(.gt, v, try one(), pos)
        case "ge", ">=": return try compare(.ge, v, try one(), pos)
        default:
            throw jinjaError("unsupported test '\(name)'", pos)
        }
    }

    // MARK: filters

    static let filterNames: Set<String> = [
        "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "indent", "int",
        "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
        "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique",
        "upper",
    ]

    /// jinja2's attribute getter for filters: dotted paths and integer parts, through `getitem`.
    private static func attributeGetter(_ attribute: JinjaValue, _ pos: JinjaPos) throws -> (JinjaValue) throws -> JinjaValue {
        let parts: [JinjaValue]
        switch attribute {
        case .string(let s): parts = s.split(separator: ".", omittingEmptySubsequences: false).map { p in Int(p).map { .int($0) } ?? .string(String(p)) }
        case .int: parts = [attribute]
        default: throw jinjaError("the attribute argument must be a string or an integer", pos)
        }
        return { item in try parts.reduce(item) { try getItem($0, $1, pos) } }
    }

    /// Case-insensitive sort key (jinja2's `ignore_case`).
    private static func sortKey(_ v: JinjaValue, caseSensitive: Bool) -> JinjaValue {
        if !caseSensitive, case .string(let s) = v { return .string(s.lowercased()) }
        return v
    }

    private static func stableSort(_ items: [JinjaValue], key: (JinjaValue) throws -> JinjaValue, reverse: Bool, _ pos: JinjaPos) throws -> [JinjaValue] {
        let keyed = try items.enumerated().map { ($0.offset, try key($0.element), $0.element) }
        var error: Error?
        let sorted = keyed.sorted { x, y in
            do {
                if try JinjaCompare.less(x.1, y.1, pos) { return !reverse }
                if try JinjaCompare.less(y.1, x.1, pos) { return reverse }
            } catch let e { error = e }
            return x.0 < y.0
        }
        if let error { throw error }
        return sorted.map { $0.2 }
    }

    private static let markupPlainFilters: Set<String> = [
        "length", "count", "tojson", "replace", "join", "int", "float", "first", "last", "list", "min", "max", "unique", "sort",
        "select", "reject", "selectattr", "rejectattr", "map",
    ]

    static func applyFilter(_ name: String, _ rawValue: JinjaValue, _ rawArgs: JinjaCallArgs, _ renderer: JinjaRenderer) throws -> JinjaValue {
        let args = rawArgs.demoted
        var value = rawValue
        if case .markup(let s) = rawValue {
            switch name {
            case "safe", "e", "escape", "string", "default", "d":
                _ = try JinjaArgBinder(args, "filter '\(name)'", name == "default" || name == "d" ? [("default_value", .string("")), ("boolean", .bool(false))] : [])
                return rawValue
            case "upper", "lower", "capitalize", "trim":
                guard case .string(let r) = try applyFilter(name, .string(s), args, renderer) else { return rawValue }
                return .markup(r)
            case "title":
                return try applyFilter(name, .string(s), args, renderer)  // jinja2 joins the words into a plain str
            case "reverse":
                _ = try JinjaArgBinder(args, "filter 'reverse'", [])
                return .markup(JinjaStrings.make(s.unicodeScalars.reversed()))
            default:
                guard markupPlainFilters.contains(name) else {
                    throw jinjaError("unsupported filter '\(name)' on a safe (Markup) string", args.pos)
                }
                value = .string(s)
            }
        }
        let pos = args.pos
        let what = "filter '\(name)'"
        func bind(_ params: [(String, JinjaValue?)]) throws -> JinjaArgBinder { try JinjaArgBinder(args, what, params) }
        switch name {
        case "safe":
            _ = try bind([])
            return .markup(try JinjaText.str(value, pos))
        case "string":
            _ = try bind([])
            return .string(try JinjaText.str(value, pos))
        case "upper", "lower", "capitalize", "title":
            _ = try bind([])
            let s = try JinjaText.str(value, pos)
            switch name {
            case "upper": return .string(JinjaStrings.upper(s))
            case "lower": return .string(JinjaStrings.lower(s))
            case "capitalize": return .string(JinjaStrings.capitalize(s))
            default: return .string(JinjaStrings.jinjaTitle(s))
            }
        case "trim":
            let b = try bind([("chars", JinjaValue.none)])
            return .string(JinjaStrings.strip(try JinjaText.str(value, pos), try optionalStr(b["chars"], "chars", pos), left: true, right: true))
        case "replace":
            let b = try bind([("old", nil), ("new", nil), ("count", JinjaValue.none)])
            let count = isNone(b["count"]) ? -1 : try int(b["count"], "count", pos)
            return .string(try JinjaStrings.replace(try JinjaText.str(value, pos), try JinjaText.str(b["old"], pos),
                                                    try JinjaText.str(b["new"], pos), count: count, pos))
        case "e", "escape":
            _ = try bind([])
            return .markup(JinjaText.htmlEscape(try JinjaText.str(value, pos)))
        case "length", "count":
            _ = try bind([])
            switch value {
            case .undefined: return .int(0)
            case .string(let s): return .int(JinjaStrings.length(s))
            case .list(let l), .tuple(let l): return .int(l.count)
            case .dict(let d): return .int(d.count)
            case .namespace(let ns): return .int(ns.attributes.count)
            case .iterator(let it) where it.isView: return .int(it.viewCount)
            default: throw jinjaError("object of type '\(value.typeName)' has no len()", pos)
            }
        case "default", "d":
            let b = try bind([("default_value", .string("")), ("boolean", .bool(false))])
            if value.isUndefined || (b["boolean"].truthy && !value.truthy) { return b["default_value"] }
            return value
        case "first":
            _ = try bind([])
            if case .iterator(let it) = value {
                return it.nextItem() ?? .undefined(hint: "No first item, sequence was empty.")
            }
            return try iterate(value, pos).first ?? .undefined(hint: "No first item, sequence was empty.")
        case "last":
            _ = try bind([])
            if case .iterator(let it) = value, !it.isView { throw jinjaError("'generator' object is not reversible", pos) }
            return try iterate(value, pos).last ?? .undefined(hint: "No last item, sequence was empty.")
        case "list":
            _ = try bind([])
            return .list(try iterate(value, pos))
        case "reverse":
            _ = try bind([])
            if case .string(let s) = value { return .string(JinjaStrings.make(s.unicodeScalars.reversed())) }
            if case .iterator(let it) = value, !it.isView { return .list(it.drain().reversed()) }
            return .iterator(JinjaIterator(.generator, try iterate(value, pos).reversed()))
        case "join":
            let b = try bind([("d", .string("")), ("attribute", JinjaValue.none)])
            var items = try iterate(value, pos)
            if !isNone(b["attribute"]) {
                let get = try attributeGetter(b["attribute"], pos)
                items = try items.map(get)
            }
            var parts: [String] = []
            var total = 0
            for item in items {  // checked as they are made: items may share one large value
                parts.append(try JinjaText.str(item, pos))
                total += parts[parts.count - 1].utf8.count
                try JinjaLimits.checkString(total, pos)
            }
            return .string(try joined(parts, try JinjaText.str(b["d"], pos), pos))
        case "items":
            _ = try bind([])
            switch value {
            case .undefined: return .iterator(JinjaIterator(.generator, []))
            case .dict(let d): return .iterator(JinjaIterator(.generator, d.pairs.map { .tuple([.string($0.0), $0.1]) }))
            default: throw jinjaError("Can only get item pairs from a mapping.", pos)
            }
        case "dictsort":
            let b = try bind([("case_sensitive", .bool(false)), ("by", .string("key")), ("reverse", .bool(false))])
            guard case .dict(let d) = value else { throw jinjaError("dictsort expects a mapping", pos) }
            let byValue: Bool
            switch b["by"] {
            case .string("key"): byValue = false
            case .string("value"): byValue = true
            default: throw jinjaError("You can only sort by either \"key\" or \"value\"", pos)
            }
            let cs = b["case_sensitive"].truthy
            let pairs: [JinjaValue] = d.pairs.map { .tuple([.string($0.0), $0.1]) }
            return .list(try stableSort(pairs, key: { p in
                guard case .tuple(let kv) = p else { return p }
                return sortKey(kv[byValue ? 1 : 0], caseSensitive: cs)
            }, reverse: b["reverse"].truthy, pos))
        case "sort":
            let b = try bind([("reverse", .bool(false)), ("case_sensitive", .bool(false)), ("attribute", JinjaValue.none)])
            let cs = b["case_sensitive"].truthy
            let get = isNone(b["attribute"]) ? { $0 } : try attributeGetter(b["attribute"], pos)
            return .list(try stableSort(try iterate(value, pos), key: { sortKey(try get($0), caseSensitive: cs) }, reverse: b["reverse"].truthy, pos))
        case "unique":
            let b = try bind([("case_sensitive", .bool(false)), ("attribute", JinjaValue.none)])
            let cs = b["case_sensitive"].truthy
            let get = isNone(b["attribute"]) ? { $0 } : try attributeGetter(b["attribute"], pos)
            var seen: [JinjaValue] = []
            var out: [JinjaValue] = []
            for item in try iterate(value, pos) {
                let k = sortKey(try get(item), caseSensitive: cs)
                if !seen.contains(where: { JinjaCompare.equal($0, k) }) {
                    seen.append(k)
                    out.append(item)
                }
            }
            return .iterator(JinjaIterator(.generator, out))
        case "min", "max":
            let b = try bind([("case_sensitive", .bool(false)), ("attribute", JinjaValue.none)])
            let cs = b["case_sensitive"].truthy
            let get = isNone(b["attribute"]) ? { $0 } : try attributeGetter(b["attribute"], pos)
            let items = try iterate(value, pos)
            guard var best = items.first else { return .undefined(hint: "No aggregated item, sequence was empty.") }
            for item in items.dropFirst() {
                let a = sortKey(try get(item), caseSensitive: cs), c = sortKey(try get(best), caseSensitive: cs)
                if name == "min" ? try JinjaCompare.less(a, c, pos) : try JinjaCompare.less(c, a, pos) { best = item }
            }
            return best
        case "sum":
            let b = try bind([("attribute", JinjaValue.none), ("start", .int(0))])
            let get = isNone(b["attribute"]) ? { $0 } : try attributeGetter(b["attribute"], pos)
            return try iterate(value, pos).reduce(b["start"]) { try binary(.add, $0, try get($1), pos) }
        case "abs":
            _ = try bind([])
            switch value {
            case .int(let i): return .int(Swift.abs(i))
            case .bool(let x): return .int(x ? 1 : 0)
            case .double(let x): return .double(Swift.abs(x))
            case .undefined(let hint): throw jinjaError(hint, pos)
            default: throw jinjaError("bad operand type for abs(): '\(value.typeName)'", pos)
            }
        case "int":
            let b = try bind([("default", .int(0)), ("base", .int(10))])
            let base = try int(b["base"], "base", pos)
            switch value {
            case .undefined(let hint): throw jinjaError(hint, pos)
            case .int: return value
            case .bool(let x): return .int(x ? 1 : 0)
            case .double(let x): return x.isFinite && Swift.abs(x) < 9.2e18 ? .int(Int(x)) : b["default"]
            case .string(let s):
                let t = JinjaStrings.strip(s, nil, left: true, right: true).replacingOccurrences(of: "_", with: "")
                if let i = pythonInt(t, base: base) { return .int(i) }
                if base == 10, let x = Double(t), x.isFinite, Swift.abs(x) < 9.2e18 { return .int(Int(x)) }
                return b["default"]
            default: return b["default"]
            }
        case "float":
            let b = try bind([("default", .double(0))])
            switch value {
            case .undefined(let hint): throw jinjaError(hint, pos)
            case .double: return value
            case .int(let i): return .double(Double(i))
            case .bool(let x): return .double(x ? 1 : 0)
            case .string(let s):
                let t = JinjaStrings.strip(s, nil, left: true, right: true).replacingOccurrences(of: "_", with: "")
                switch t.lowercased() {
                case "inf", "+inf", "infinity", "+infinity": return .double(.infinity)
                case "-inf", "-infinity": return .double(-.infinity)
                case "nan", "+nan", "-nan": return .double(.nan)
                default: return Double(t).map { .double($0) } ?? b["default"]
                }
            default: return b["default"]
            }
        case "round":
            let b = try bind([("precision", .int(0)), ("method", .string("common"))])
            let precision = try int(b["precision"], "precision", pos)
            let x: Double
            switch value {
            case .int(let i): if case .string("common") = b["method"] { return .int(i) }; x = Double(i)
            case .bool(let v): if case .string("common") = b["method"] { return .int(v ? 1 : 0) }; x = v ? 1 : 0
            case .double(let d): x = d
            default: throw jinjaError("round expects a number, not \(value.typeName)", pos)
            }
            switch b["method"] {
            case .string("common"):
                guard precision >= 0, x.isFinite else {
                    let scale = Foundation.pow(10.0, Double(-precision))
                    return .double((x / scale).rounded(.toNearestOrEven) * scale)
                }
                return .double(Double(String(format: "%.\(precision)f", x)) ?? x)
            case .string("ceil"):
                let scale = Foundation.pow(10.0, Double(precision))
                return .double((x * scale).rounded(.up) / scale)
            case .string("floor"):
                let scale = Foundation.pow(10.0, Double(precision))
                return .double((x * scale).rounded(.down) / scale)
            default:
                throw jinjaError("method must be common, ceil or floor", pos)
            }
        case "indent":
            let b = try bind([("width", .int(4)), ("first", .bool(false)), ("blank", .bool(false))])
            let indention: String
            if case .string(let w) = b["width"] { indention = w } else { indention = try spaces(try int(b["width"], "width", pos), pos) }
            // jinja2 appends "\n" with +=, which only strings support.
            guard case .string(let text) = value else {
                if case .undefined(let hint) = value { throw jinjaError(hint, pos) }
                throw jinjaError("unsupported operand type(s) for +=: '\(value.typeName)' and 'str'", pos)
            }
            let s = text + "\n"
            let lineCount = splitLines(s).count
            try JinjaLimits.checkRepeatedString(indention.utf8.count + 1, times: lineCount + 1, pos)
            try JinjaLimits.checkString(s.utf8.count + (indention.utf8.count + 1) * (lineCount + 1), pos)
            var rv: String
            if b["blank"].truthy {
                rv = splitLines(s).joined(separator: "\n" + indention)
            } else {
                var lines = splitLines(s)
                rv = lines.removeFirst()
                if !lines.isEmpty { rv += "\n" + lines.map { $0.isEmpty ? $0 : indention + $0 }.joined(separator: "\n") }
            }
            if b["first"].truthy { rv = indention + rv }
            return .string(rv)
        case "tojson":
            // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
            let b = try bind([("ensure_ascii", .bool(false)), ("indent", JinjaValue.none), ("separators", JinjaValue.none), ("sort_keys", .bool(false))])
            var indent: String?
            switch b["indent"] {
            case .none: indent = nil
            case .string(let s): indent = s
            case let v: indent = try spaces(try int(v, "indent", pos), pos)
            }
            var itemSep = indent == nil ? ", " : ",", keySep = ": "
            if !isNone(b["separators"]) {
                let seps = try iterate(b["separators"], pos)
                guard seps.count == 2, case .string(let i) = seps[0], case .string(let k) = seps[1] else {
                    throw jinjaError("separators must be a pair of strings", pos)
                }
                itemSep = i
                keySep = k
            }
            var text = try JinjaText.json(value, indent: indent, itemSeparator: itemSep, keySeparator: keySep, sortKeys: b["sort_keys"].truthy, pos)
            if b["ensure_ascii"].truthy {
                var out = ""
                for c in text.unicodeScalars {
                    if c.value < 0x80 { out.unicodeScalars.append(c); continue }
                    for unit in String(c).utf16 { out += String(format: "\\u%04x", unit) }
                }
                text = out
            }
            return .string(text)
        case "attr":
            let b = try bind([("name", nil)])
            let n = try str(b["name"], "the attribute name", pos)
            switch value {
            case .dict: return .undefined(hint: "'dict object' has no attribute '\(n)'")
            default: return try getAttribute(value, n, pos)
            }
        case "map":
            // jinja2's map/select/reject yield nothing for a falsy input (none, '', []).
            if !value.truthy { return .iterator(JinjaIterator(.generator, [])) }
            return try mapFilter(value, args, renderer)
        case "select", "reject", "selectattr", "rejectattr":
            if !value.truthy { return .iterator(JinjaIterator(.generator, [])) }
            let byAttribute = name.hasSuffix("attr")
            var positional = args.positional
            var get: (JinjaValue) throws -> JinjaValue = { $0 }
            if byAttribute {
                guard !positional.isEmpty else { throw jinjaError("\(what) requires an attribute name", pos) }
                get = try attributeGetter(positional.removeFirst(), pos)
            }
            var test: ((JinjaValue) throws -> Bool) = { $0.truthy }
            if !positional.isEmpty {
                guard case .string(let testName) = positional.removeFirst() else { throw jinjaError("\(what) expects a test name", pos) }
                guard testNames.contains(testName) else { throw jinjaError("unsupported test '\(testName)'", pos) }
                let testArgs = JinjaCallArgs(positional: positional, keyword: args.keyword, pos: pos)
                test = { try applyTest(testName, $0, testArgs) }
            } else if !args.keyword.isEmpty {
                throw jinjaError("\(what) got unexpected keyword arguments", pos)
            }
            let keep = name.hasPrefix("select")
            return .iterator(JinjaIterator(.generator, try iterate(value, pos).filter { try test(try get($0)) == keep }))
        default:
            throw jinjaError("unsupported filter '\(name)'", pos)
        }
    }

    /// Python `int(text, base)` for an already stripped text: sign, optional 0x/0o/0b prefix
    /// (required to match the base, or chosen by it when base is 0).
    static func pythonInt(_ text: String, base: Int) -> Int? {
        var t = Substring(text)
        var negative = false
        if let f = t.first, f == "+" || f == "-" { negative = f == "-"; t = t.dropFirst() }
        var b = base
        let lower = t.lowercased()
        for (prefix, pb) in [("0x", 16), ("0o", 8), ("0b", 2)] where lower.hasPrefix(prefix) && (b == pb || b == 0) {
            t = t.dropFirst(2)
            b = pb
        }
        if b == 0 {
            guard t.allSatisfy({ $0 == "0" }) || t.first != "0" else { return nil }
            b = 10
        }
        guard (2...36).contains(b), !t.isEmpty, let v = Int(t, radix: b) else { return nil }
        return negative ? -v : v
    }

    private static func mapFilter(_ value: JinjaValue, _ args: JinjaCallArgs, _ renderer: JinjaRenderer) throws -> JinjaValue {
        let pos = args.pos
        let items = try iterate(value, pos)
        if args.positional.isEmpty {
            var attribute: JinjaValue?
            var def: JinjaValue?
            for (k, v) in args.keyword {
                switch k {
                case "attribute": attribute = v
                case "default": def = v
                default: throw jinjaError("filter 'map' got an unexpected keyword argument '\(k)'", pos)
                }
            }
            guard let attribute else { throw jinjaError("filter 'map' needs a filter name or attribute=", pos) }
            let get = try attributeGetter(attribute, pos)
            return .iterator(JinjaIterator(.generator, try items.map { item in
                let v = try get(item)
                if v.isUndefined, let def { return def }
                return v
            }))
        }
        var positional = args.positional
        guard case .string(let filterName) = positional.removeFirst() else { throw jinjaError("filter 'map' expects a filter name", pos) }
        guard filterNames.contains(filterName) else { throw jinjaError("unsupported filter '\(filterName)'", pos) }
        let filterArgs = JinjaCallArgs(positional: positional, keyword: args.keyword, pos: pos)
        return .iterator(JinjaIterator(.generator, try items.map { try applyFilter(filterName, $0, filterArgs, renderer) }))
    }
}
