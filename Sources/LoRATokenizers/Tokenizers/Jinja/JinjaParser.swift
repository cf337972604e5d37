import Foundation
import LoRAFormats

// The syntax tree and a recursive-descent parser that follows jinja2's grammar and operator
// precedence (jinja2/parser.py): conditional < or < and < not < comparisons < + - < ~ < * / // %
// < ** < unary - + < postfix (. [] ()) < filters and `is` tests.

enum JinjaLiteral: Sendable {
    case none, bool(Bool), int(Int), double(Double), string(String)
}

enum JinjaBinaryOp: String, Sendable {
    case add = "+", sub = "-", mul = "*", div = "/", floorDiv = "//", mod = "%", pow = "**", concat = "~"
}

enum JinjaCompareOp: String, Sendable {
    case eq = "==", ne = "!=", lt = "<", le = "<=", gt = ">", ge = ">=", `in` = "in", notIn = "not in"
}

struct JinjaArgs: Sendable {
    var positional: [JinjaExpr] = []
    var keyword: [(String, JinjaExpr)] = []
}

indirect enum JinjaExpr: Sendable {
    case literal(JinjaLiteral, JinjaPos)
    case name(String, JinjaPos)
    case list([JinjaExpr], JinjaPos)
    case tuple([JinjaExpr], JinjaPos)
    case dict([(JinjaExpr, JinjaExpr)], JinjaPos)
    case attribute(JinjaExpr, String, JinjaPos)
    case item(JinjaExpr, JinjaExpr, JinjaPos)
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?, JinjaPos)
    case call(JinjaExpr, JinjaArgs, JinjaPos)
    case filter(JinjaExpr, String, JinjaArgs, JinjaPos)
    case test(JinjaExpr, String, JinjaArgs, negated: Bool, JinjaPos)
    case negate(JinjaExpr, JinjaPos)
    case plus(JinjaExpr, JinjaPos)
    case not(JinjaExpr, JinjaPos)
    case binary(JinjaBinaryOp, JinjaExpr, JinjaExpr, JinjaPos)
    case compare(JinjaExpr, [(JinjaCompareOp, JinjaExpr, JinjaPos)], JinjaPos)
    case and(JinjaExpr, JinjaExpr, JinjaPos)
    case or(JinjaExpr, JinjaExpr, JinjaPos)
    case conditional(test: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?, JinjaPos)

    var pos: JinjaPos {
        switch self {
        case .literal(_, let p), .name(_, let p), .list(_, let p), .tuple(_, let p), .dict(_, let p),
             .attribute(_, _, let p), .item(_, _, let p), .slice(_, _, _, _, let p), .call(_, _, let p),
             .filter(_, _, _, let p), .test(_, _, _, _, let p), .negate(_, let p), .plus(_, let p), .not(_, let p),
             .binary(_, _, _, let p), .compare(_, _, let p), .and(_, _, let p), .or(_, _, let p),
             .conditional(_, _, _, let p):
            return p
        }
    }
}

/// What `{% set %}` and `{% for %}` assign to.
enum JinjaTarget: Sendable {
    case name(String)
    case attribute(String, String, JinjaPos)  // ns.attr
    case tuple([String])
}

struct JinjaMacroParam: Sendable {
    var name: String
    var defaultValue: JinjaExpr?
}

indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpr)
    case ifChain([(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode])
    case forLoop(target: JinjaTarget, iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode], pos: JinjaPos)
    case set(JinjaTarget, JinjaExpr, JinjaPos)
    case setBlock(JinjaTarget, filters: [(String, JinjaArgs, JinjaPos)], body: [JinjaNode], JinjaPos)
    case macro(name: String, params: [JinjaMacroParam], body: [JinjaNode], JinjaPos)
    case filterBlock(filters: [(String, JinjaArgs, JinjaPos)], body: [JinjaNode])
    case loopBreak(JinjaPos)
    case loopContinue(JinjaPos)
}

struct JinjaParser {
    private let tokens: [JinjaToken]
    private var index = 0
    /// How deeply the node being parsed nests (JinjaLimits.sourceNesting): blocks, sub-expressions,
    /// and the operators of a chain (`a + b + c` holds `a` two levels down), so both this
    /// recursive parser and the trees it builds stay shallow.
    private var depth = 0

    static func parse(_ source: String) throws -> [JinjaNode] {
        var parser = JinjaParser(tokens: try JinjaLexer.tokenize(source))
        let (body, endTag) = try parser.subparse(until: [])
        if let endTag { throw jinjaError("unexpected '{% \(endTag.0) %}'", endTag.1) }
        return body
    }

    private init(tokens: [JinjaToken]) {
        var t = tokens
        let endPos = tokens.last?.pos ?? JinjaPos(line: 1, column: 1)
        t.append(JinjaToken(kind: .end, pos: endPos))
        self.tokens = t
    }

    // MARK: token helpers

    private var current: JinjaToken { tokens[index] }
    private var next: JinjaToken { tokens[min(index + 1, tokens.count - 1)] }

    private mutating func advance() -> JinjaToken {
        let t = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return t
    }

    private func isOp(_ op: String, _ t: JinjaToken? = nil) -> Bool {
        if case .op(let o) = (t ?? current).kind { return o == op }
        return false
    }

    private func isName(_ name: String, _ t: JinjaToken? = nil) -> Bool {
        if case .name(let n) = (t ?? current).kind { return n == name }
        return false
    }

    private mutating func skipOp(_ op: String) -> Bool {
        if isOp(op) { index += 1; return true }
        return false
    }

    private mutating func skipName(_ name: String) -> Bool {
        if isName(name) { index += 1; return true }
        return false
    }

    private func describe(_ t: JinjaToken) -> String {
        switch t.kind {
        case .data: return "template text"
        case .variableBegin: return "'{{'"
        case .variableEnd: return "'}}'"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "'%}'"
        case .name(let n): return "'\(n)'"
        case .string: return "a string"
        case .integer(let v): return "'\(v)'"
        case .float(let v): return "'\(v)'"
        case .op(let o): return "'\(o)'"
        case .end: return "the end of the template"
        }
    }

    private mutating func expectOp(_ op: String) throws {
        guard skipOp(op) else { throw jinjaError("expected '\(op)', found \(describe(current))", current.pos) }
    }

    private mutating func expectName() throws -> String {
        if case .name(let n) = current.kind { index += 1; return n }
        throw jinjaError("expected a name, found \(describe(current))", current.pos)
    }

    /// One level deeper; the caller restores `depth` when the level ends.
    private mutating func enter(_ pos: JinjaPos) throws {
        depth += 1
        guard depth <= JinjaLimits.sourceNesting else { throw JinjaLimits.sourceNestingError(pos) }
    }

    private mutating func expectBlockEnd() throws {
        guard case .blockEnd = current.kind else {
            throw jinjaError("expected the end of the statement block, found \(describe(current))", current.pos)
        }
        index += 1
    }

    // MARK: statements

    /// Parses nodes until a `{% name %}` whose name is in `endTags` (left unconsumed after `{%`),
    /// returning that name, or until the end of the template.
    private mutating func subparse(until endTags: Set<String>) throws -> ([JinjaNode], (String, JinjaPos)?) {
        var body: [JinjaNode] = []
        while true {
            let t = current
            switch t.kind {
            case .end:
                return (body, nil)
            case .data(let s):
                index += 1
                body.append(.text(s))
            case .variableBegin:
                index += 1
                let e = try parseTuple()
                guard case .variableEnd = current.kind else {
                    throw jinjaError("expected the end of the print statement, found \(describe(current))", current.pos)
                }
                index += 1
                body.append(.output(e))
            case .blockBegin:
                index += 1
                guard case .name(let keyword) = current.kind else {
                    throw jinjaError("expected a statement name after '{%', found \(describe(current))", current.pos)
                }
                if endTags.contains(keyword) { return (body, (keyword, current.pos)) }
                if let node = try parseStatement() { body.append(contentsOf: node) }
            default:
                throw jinjaError("unexpected \(describe(t))", t.pos)
            }
        }
    }

    /// Parses a body up to one of `endTags`, consuming the end keyword (the caller parses its tail).
    private mutating func parseBody(_ endTags: Set<String>, opener: String, openPos: JinjaPos) throws -> ([JinjaNode], String) {
        try enter(openPos)
        defer { depth -= 1 }
        let (body, end) = try subparse(until: endTags)
        guard let end else {
            let expected = endTags.sorted().map { "'\($0)'" }.joined(separator: " or ")
            throw jinjaError("'{% \(opener) %}' opened here is never closed (expected \(expected))", openPos)
        }
        index += 1
        return (body, end.0)
    }

    private static let unsupportedStatements: Set<String> = [
        "include", "import", "from", "extends", "block", "call", "with", "do", "autoescape", "trans",
        "pluralize", "endblock", "endcall", "endwith", "endautoescape", "endtrans", "print",
    ]

    private mutating func parseStatement() throws -> [JinjaNode]? {
        let keywordToken = advance()
        guard case .name(let keyword) = keywordToken.kind else { return nil }
        let pos = keywordToken.pos
        switch keyword {
        case "if":
            return [try parseIf(pos)]
        case "for":
            return [try parseFor(pos)]
        case "set":
            return [try parseSet(pos)]
        case "macro":
            return [try parseMacro(pos)]
        case "filter":
            let filters = try parseFilterChain(leadingPipe: false)
            try expectBlockEnd()
            let (body, _) = try parseBody(["endfilter"], opener: "filter", openPos: pos)
            try expectBlockEnd()
            return [.filterBlock(filters: filters, body: body)]
        case "break", "continue":
            try expectBlockEnd()
            return [keyword == "break" ? .loopBreak(pos) : .loopContinue(pos)]
        case "generation":
            // transformers' AssistantTracker extension: the body renders as is.
            try expectBlockEnd()
            let (body, _) = try parseBody(["endgeneration"], opener: "generation", openPos: pos)
            try expectBlockEnd()
            return body
        default:
            if Self.unsupportedStatements.contains(keyword) {
                throw jinjaError("unsupported template construct '{% \(keyword) %}'", pos)
            }
            throw jinjaError("unknown tag '{% \(keyword) %}'", pos)
        }
    }

    private mutating func parseIf(_ pos: JinjaPos) throws -> JinjaNode {
        var branches: [(JinjaExpr, [JinjaNode])] = []
        var test = try parseTuple(withCondExpr: false)
        var otherwise: [JinjaNode] = []
        while true {
            try expectBlockEnd()
            let (body, end) = try parseBody(["elif", "else", "endif"], opener: "if", openPos: pos)
            branches.append((test, body))
            if end == "elif" {
                test = try parseTuple(withCondExpr: false)
                continue
            }
            if end == "else" {
                try expectBlockEnd()
                (otherwise, _) = try parseBody(["endif"], opener: "if", openPos: pos)
            }
            try expectBlockEnd()
            return .ifChain(branches, otherwise: otherwise)
        }
    }

    private mutating func parseAssignTarget(forLoop: Bool) throws -> JinjaTarget {
        let t = current
        if !forLoop, case .name(let n) = t.kind, isOp(".", next) {
            index += 2
            let attr = try expectName()
            return .attribute(n, attr, t.pos)
        }
        var names: [String] = []
        let parenthesized = skipOp("(")
        repeat {
            if parenthesized && isOp(")") { break }
            let nameToken = current
            let n = try expectName()
            if ["true", "false", "none", "True", "False", "None"].contains(n) {
                throw jinjaError("cannot assign to '\(n)'", nameToken.pos)
            }
            names.append(n)
        } while skipOp(",")
        if parenthesized { try expectOp(")") }
        if names.count == 1 && !parenthesized { return .name(names[0]) }
        return .tuple(names)
    }

    private mutating func parseFor(_ pos: JinjaPos) throws -> JinjaNode {
        let target = try parseAssignTarget(forLoop: true)
        guard skipName("in") else { throw jinjaError("expected 'in' in the for loop, found \(describe(current))", current.pos) }
        let iterable = try parseTuple(withCondExpr: false)
        var filter: JinjaExpr?
        if skipName("if") { filter = try parseExpression() }
        if isName("recursive") { throw jinjaError("unsupported template construct 'recursive' for loop", current.pos) }
        try expectBlockEnd()
        let (body, end) = try parseBody(["endfor", "else"], opener: "for", openPos: pos)
        var otherwise: [JinjaNode] = []
        if end == "else" {
            try expectBlockEnd()
            (otherwise, _) = try parseBody(["endfor"], opener: "for", openPos: pos)
        }
        try expectBlockEnd()
        return .forLoop(target: target, iterable: iterable, filter: filter, body: body, otherwise: otherwise, pos: pos)
    }

    private mutating func parseSet(_ pos: JinjaPos) throws -> JinjaNode {
        let target = try parseAssignTarget(forLoop: false)
        if skipOp("=") {
            let value = try parseTuple()
            try expectBlockEnd()
            return .set(target, value, pos)
        }
        let filters = try parseFilterChain(leadingPipe: true)
        try expectBlockEnd()
        let (body, _) = try parseBody(["endset"], opener: "set", openPos: pos)
        try expectBlockEnd()
        return .setBlock(target, filters: filters, body: body, pos)
    }

    private mutating func parseMacro(_ pos: JinjaPos) throws -> JinjaNode {
        let name = try expectName()
        try expectOp("(")
        var params: [JinjaMacroParam] = []
        while !isOp(")") {
            if !params.isEmpty { try expectOp(",") }
            if isOp(")") { break }
            let p = try expectName()
            var d: JinjaExpr?
            if skipOp("=") { d = try parseExpression() }
            params.append(JinjaMacroParam(name: p, defaultValue: d))
        }
        try expectOp(")")
        try expectBlockEnd()
        let (body, _) = try parseBody(["endmacro"], opener: "macro", openPos: pos)
        if case .name = current.kind { index += 1 }  // `{% endmacro name %}`
        try expectBlockEnd()
        return .macro(name: name, params: params, body: body, pos)
    }

    /// `name(args) | name ...` after `{% filter`, or the optional `| name ...` after `{% set x`.
    private mutating func parseFilterChain(leadingPipe: Bool) throws -> [(String, JinjaArgs, JinjaPos)] {
        var filters: [(String, JinjaArgs, JinjaPos)] = []
        if leadingPipe && !skipOp("|") { return filters }
        repeat {
            let t = current
            let name = try parseDottedName()
            let args = isOp("(") ? try parseCallArgs() : JinjaArgs()
            filters.append((name, args, t.pos))
        } while skipOp("|")
        return filters
    }

    private mutating func parseDottedName() throws -> String {
        var name = try expectName()
        while isOp("."), case .name(let more) = next.kind {
            index += 2
            name += "." + more
        }
        return name
    }


    // MARK: expressions

    private mutating func parseExpression(withCondExpr: Bool = true) throws -> JinjaExpr {
        try enter(current.pos)
        defer { depth -= 1 }
        return withCondExpr ? try parseCondExpr() : try parseOr()
    }

    /// A comma-separated list makes a tuple (`{{ a, b }}`, `{% set x = 1, 2 %}`).
    private mutating func parseTuple(withCondExpr: Bool = true) throws -> JinjaExpr {
        let pos = current.pos
        var items: [JinjaExpr] = []
        var sawComma = false
        while true {
            if !items.isEmpty {
                guard skipOp(",") else { break }
                sawComma = true
            }
            if isTupleEnd() { break }
            items.append(try parseExpression(withCondExpr: withCondExpr))
        }
        if !sawComma {
            guard let only = items.first else { throw jinjaError("expected an expression, found \(describe(current))", current.pos) }
            return only
        }
        return .tuple(items, pos)
    }

    private func isTupleEnd() -> Bool {
        switch current.kind {
        case .variableEnd, .blockEnd, .end: return true
        case .op(let o): return o == ")" || o == "]" || o == "}"
        case .name(let n): return n == "in" || n == "if" || n == "recursive"
        default: return false
        }
    }

    private mutating func parseCondExpr() throws -> JinjaExpr {
        var expr = try parseOr()
        let outer = depth
        defer { depth = outer }
        while isName("if") {
            let pos = advance().pos
            try enter(pos)
            let test = try parseOr()
            var otherwise: JinjaExpr?
            if skipName("else") { otherwise = try parseCondExpr() }
            expr = .conditional(test: test, then: expr, otherwise: otherwise, pos)
        }
        return expr
    }

    private mutating func parseOr() throws -> JinjaExpr {
        var left = try parseAnd()
        let outer = depth
        defer { depth = outer }
        while isName("or") {
            let pos = advance().pos
            try enter(pos)
            left = .or(left, try parseAnd(), pos)
        }
        return left
    }

    private mutating func parseAnd() throws -> JinjaExpr {
        var left = try parseNot()
        let outer = depth
        defer { depth = outer }
        while isName("and") {
            let pos = advance().pos
            try enter(pos)
            left = .and(left, try parseNot(), pos)
        }
        return left
    }

    private mutating func parseNot() throws -> JinjaExpr {
        if isName("not") {
            let pos = advance().pos
            try enter(pos)
            defer { depth -= 1 }
            return .not(try parseNot(), pos)
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> JinjaExpr {
        let pos = current.pos
        let left = try parseMath1()
        var ops: [(JinjaCompareOp, JinjaExpr, JinjaPos)] = []
        while true {
            let t = current
            if case .op(let o) = t.kind, let op = JinjaCompareOp(rawValue: o), op != .in, op != .notIn {
                index += 1
                ops.append((op, try parseMath1(), t.pos))
            } else if isName("in") {
                index += 1
                ops.append((.in, try parseMath1(), t.pos))
            } else if isName("not") && isName("in", next) {
                index += 2
                ops.append((.notIn, try parseMath1(), t.pos))
            } else {
                break
            }
        }
        return ops.isEmpty ? left : .compare(left, ops, pos)
    }

    private mutating func parseMath1() throws -> JinjaExpr {
        var left = try parseConcat()
        let outer = depth
        defer { depth = outer }
        while isOp("+") || isOp("-") {
            let t = advance()
            try enter(t.pos)
            left = .binary(isOp("+", t) ? .add : .sub, left, try parseConcat(), t.pos)
        }
        return left
    }

    private mutating func parseConcat() throws -> JinjaExpr {
        var left = try parseMath2()
        let outer = depth
        defer { depth = outer }
        while isOp("~") {
            let t = advance()
            try enter(t.pos)
            left = .binary(.concat, left, try parseMath2(), t.pos)
        }
        return left
    }

    private mutating func parseMath2() throws -> JinjaExpr {
        var left = try parsePow()
        let outer = depth
        defer { depth = outer }
        while true {
            let t = current
            guard case .op(let o) = t.kind, let op = ["*": JinjaBinaryOp.mul, "/": .div, "//": .floorDiv, "%": .mod][o] else { break }
            index += 1
            try enter(t.pos)
            left = .binary(op, left, try parsePow(), t.pos)
        }
        return left
    }

    private mutating func parsePow() throws -> JinjaExpr {
        var left = try parseUnary()
        let outer = depth
        defer { depth = outer }
        while isOp("**") {
            let t = advance()
            try enter(t.pos)
            left = .binary(.pow, left, try parseUnary(), t.pos)
        }
        return left
    }

    private mutating func parseUnary(withFilter: Bool = true) throws -> JinjaExpr {
        var node: JinjaExpr
        let outer = depth
        defer { depth = outer }
        if isOp("-") {
            let pos = advance().pos
            try enter(pos)
            node = .negate(try parseUnary(withFilter: false), pos)
        } else if isOp("+") {
            let pos = advance().pos
            try enter(pos)
            node = .plus(try parseUnary(withFilter: false), pos)
        } else {
            node = try parsePrimary()
        }
        node = try parsePostfix(node)
        if withFilter { node = try parseFilterExpr(node) }
        return node
    }

    private mutating func parsePrimary() throws -> JinjaExpr {
        let t = current
        switch t.kind {
        case .name(let n):
            index += 1
            switch n {
            case "true", "True": return .literal(.bool(true), t.pos)
            case "false", "False": return .literal(.bool(false), t.pos)
            case "none", "None": return .literal(.none, t.pos)
            default: return .name(n, t.pos)
            }
        case .string(var s):
            index += 1
            while case .string(let more) = current.kind {  // adjacent literals concatenate
                s += more
                index += 1
            }
            return .literal(.string(s), t.pos)
        case .integer(let v):
            index += 1
            return .literal(.int(v), t.pos)
        case .float(let v):
            index += 1
            return .literal(.double(v), t.pos)
        case .op("("):
            index += 1
            if skipOp(")") { return .tuple([], t.pos) }
            let first = try parseExpression()
            if skipOp(")") { return first }
            var items = [first]
            while skipOp(",") {
                if isOp(")") { break }
                items.append(try parseExpression())
            }
            try expectOp(")")
            return .tuple(items, t.pos)
        case .op("["):
            index += 1
            var items: [JinjaExpr] = []
            while !isOp("]") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("]") { break }
                items.append(try parseExpression())
            }
            try expectOp("]")
            return .list(items, t.pos)
        case .op("{"):
            index += 1
            var items: [(JinjaExpr, JinjaExpr)] = []
            while !isOp("}") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("}") { break }
                let key = try parseExpression()
                try expectOp(":")
                items.append((key, try parseExpression()))
            }
            try expectOp("}")
            return .dict(items, t.pos)
        default:
            throw jinjaError("unexpected \(describe(t)) in an expression", t.pos)
        }
    }

    private mutating func parsePostfix(_ start: JinjaExpr) throws -> JinjaExpr {
        var node = start
        let outer = depth
        defer { depth = outer }
        while true {
            let t = current
            if isOp(".") || isOp("[") || isOp("(") { try enter(t.pos) }
            if isOp(".") {
                index += 1
                switch current.kind {
                case .name(let n):
                    index += 1
                    node = .attribute(node, n, t.pos)
                case .integer(let v):
                    index += 1
                    node = .item(node, .literal(.int(v), t.pos), t.pos)
                default:
                    throw jinjaError("expected an attribute name after '.', found \(describe(current))", current.pos)
                }
            } else if isOp("[") {
                index += 1
                node = try parseSubscript(node, t.pos)
            } else if isOp("(") {
                node = .call(node, try parseCallArgs(), t.pos)
            } else {
                return node
            }
        }
    }

    private mutating func parseSubscript(_ target: JinjaExpr, _ pos: JinjaPos) throws -> JinjaExpr {
        var parts: [JinjaExpr?] = []
        var isSlice = false
        if !isOp(":") { parts.append(try parseExpression()) } else { parts.append(nil) }
        if isOp(",") { throw jinjaError("unsupported template construct: tuple subscript", current.pos) }
        while skipOp(":") {
            isSlice = true
            if isOp(":") || isOp("]") { parts.append(nil) } else { parts.append(try parseExpression()) }
            if parts.count > 3 { throw jinjaError("too many ':' in a slice", current.pos) }
        }
        try expectOp("]")
        if !isSlice, let only = parts[0] { return .item(target, only, pos) }
        while parts.count < 3 { parts.append(nil) }
        return .slice(target, parts[0], parts[1], parts[2], pos)
    }

    private mutating func parseCallArgs() throws -> JinjaArgs {
        try expectOp("(")
        var args = JinjaArgs()
        while !isOp(")") {
            if !args.positional.isEmpty || !args.keyword.isEmpty { try expectOp(",") }
            if isOp(")") { break }
            if isOp("*") || isOp("**") {
                throw jinjaError("unsupported template construct: '\(isOp("*") ? "*" : "**")' argument unpacking", current.pos)
            }
            if case .name(let n) = current.kind, isOp("=", next) {
                index += 2
                args.keyword.append((n, try parseExpression()))
            } else {
                if !args.keyword.isEmpty { throw jinjaError("a positional argument follows a keyword argument", current.pos) }
                args.positional.append(try parseExpression())
            }
        }
        try expectOp(")")
        return args
    }

    /// Filter and test names are checked when evaluated (jinja2 3.x also defers unknown filters in
    /// conditional branches), so a template using an unsupported filter only in a branch a plain
    /// chat never takes still renders, and fails with the position when that branch runs.
    private mutating func parseFilterExpr(_ start: JinjaExpr) throws -> JinjaExpr {
        var node = start
        let outer = depth
        defer { depth = outer }
        while true {
            if isOp("|") || isName("is") || isOp("(") { try enter(current.pos) }
            if isOp("|") {
                index += 1
                let t = current
                let name = try parseDottedName()
                let args = isOp("(") ? try parseCallArgs() : JinjaArgs()
                node = .filter(node, name, args, t.pos)
            } else if isName("is") {
                index += 1
                let negated = skipName("not")
                let t = current
                let name = try parseDottedName()
                var args = JinjaArgs()
                if isOp("(") {
                    args = try parseCallArgs()
                } else if startsBareTestArgument() {
                    if isName("is") { throw jinjaError("cannot chain multiple tests with 'is'", current.pos) }
                    args.positional = [try parsePostfix(try parsePrimary())]
                }
                node = .test(node, name, args, negated: negated, t.pos)
            } else if isOp("(") {
                let pos = current.pos
                node = .call(node, try parseCallArgs(), pos)
            } else {
                return node
            }
        }
    }

    /// jinja2 accepts one argument without parentheses: `x is divisibleby 3`, `x is sameas none`.
    private func startsBareTestArgument() -> Bool {
        switch current.kind {
        case .name(let n): return !["else", "or", "and"].contains(n)
        case .string, .integer, .float: return true
        case .op(let o): return o == "[" || o == "{"
        default: return false
        }
    }
}
