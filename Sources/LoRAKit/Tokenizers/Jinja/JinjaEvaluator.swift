import Foundation

// Renders a parsed template. Scoping follows jinja2: `{% if %}` shares its enclosing scope, every
// iteration of a `{% for %}` body gets a fresh child scope (assignments inside do not survive the
// iteration, which is why templates use namespace()), macros and block sets get their own scope.

final class JinjaScope {
    var vars: [String: JinjaValue] = [:]
    let parent: JinjaScope?

    init(parent: JinjaScope?) { self.parent = parent }

    func lookup(_ name: String) -> JinjaValue? {
        var s: JinjaScope? = self
        while let scope = s {
            if let v = scope.vars[name] { return v }
            s = scope.parent
        }
        return nil
    }
}

enum JinjaFlow { case normal, breakLoop, continueLoop }

final class JinjaRenderer {
    private var output = ""

    func render(_ nodes: [JinjaNode], globals: JinjaScope) throws -> String {
        let top = JinjaScope(parent: globals)
        output = ""
        let flow = try execute(nodes, top)
        if flow != .normal { throw LoRAError("chat template: 'break' or 'continue' used outside a for loop") }
        return output
    }

    // MARK: statements

    private func execute(_ nodes: [JinjaNode], _ scope: JinjaScope) throws -> JinjaFlow {
        for node in nodes {
            let flow = try execute(node, scope)
            if flow != .normal { return flow }
        }
        return .normal
    }

    private func execute(_ node: JinjaNode, _ scope: JinjaScope) throws -> JinjaFlow {
        switch node {
        case .text(let s):
            output += s
        case .output(let e):
            output += try JinjaText.str(try eval(e, scope), e.pos)
        case .ifChain(let branches, let otherwise):
            for (test, body) in branches where try eval(test, scope).truthy {
                return try execute(body, scope)
            }
            return try execute(otherwise, scope)
        case .forLoop(let target, let iterable, let filter, let body, let otherwise, let pos):
            return try executeFor(target, iterable, filter, body, otherwise, pos, scope)
        case .set(let target, let e, let pos):
            try assign(target, try eval(e, scope), scope, pos)
        case .setBlock(let target, let filters, let body, let pos):
            var value = JinjaValue.string(try capture(body, JinjaScope(parent: scope), pos))
            for (name, args, fpos) in filters {
                value = try JinjaBuiltins.applyFilter(name, value, try evalArgs(args, scope, fpos), self)
            }
            try assign(target, value, scope, pos)
        case .filterBlock(let filters, let body):
            var value = JinjaValue.string(try capture(body, JinjaScope(parent: scope), filters.first?.2 ?? JinjaPos(line: 1, column: 1)))
            for (name, args, fpos) in filters {
                value = try JinjaBuiltins.applyFilter(name, value, try evalArgs(args, scope, fpos), self)
            }
            output += try JinjaText.str(value, filters.first?.2 ?? JinjaPos(line: 1, column: 1))
        case .macro(let name, let params, let body, let pos):
            scope.vars[name] = .callable(makeMacro(name, params, body, scope, pos))
        case .loopBreak:
            return .breakLoop
        case .loopContinue:
            return .continueLoop
        }
        return .normal
    }

    /// Renders `body` into a string instead of the output.
    private func capture(_ body: [JinjaNode], _ scope: JinjaScope, _ pos: JinjaPos) throws -> String {
        let saved = output
        output = ""
        defer { output = saved }
        let flow = try execute(body, scope)
        if flow != .normal { throw jinjaError("'break' or 'continue' used outside a for loop", pos) }
        return output
    }

    private func executeFor(_ target: JinjaTarget, _ iterable: JinjaExpr, _ filter: JinjaExpr?, _ body: [JinjaNode],
                            _ otherwise: [JinjaNode], _ pos: JinjaPos, _ scope: JinjaScope) throws -> JinjaFlow {
        var items = try JinjaBuiltins.iterate(try eval(iterable, scope), iterable.pos)
        if let filter {
            items = try items.filter { item in
                let s = JinjaScope(parent: scope)
                try assign(target, item, s, pos)
                return try eval(filter, s).truthy
            }
        }
        if items.isEmpty {
            return try execute(otherwise, JinjaScope(parent: scope))
        }
        let count = items.count
        for (i, item) in items.enumerated() {
            let s = JinjaScope(parent: scope)
            try assign(target, item, s, pos)
            var loop = JinjaDict()
            loop["index"] = .int(i + 1)
            loop["index0"] = .int(i)
            loop["revindex"] = .int(count - i)
            loop["revindex0"] = .int(count - i - 1)
            loop["first"] = .bool(i == 0)
            loop["last"] = .bool(i == count - 1)
            loop["length"] = .int(count)
            loop["depth"] = .int(1)
            loop["depth0"] = .int(0)
            loop["previtem"] = i > 0 ? items[i - 1] : .undefined(hint: "there is no previous item")
            loop["nextitem"] = i < count - 1 ? items[i + 1] : .undefined(hint: "there is no next item")
            loop["cycle"] = .callable(JinjaCallable("cycle") { args in
                guard !args.positional.isEmpty else { throw jinjaError("no items for cycling given", args.pos) }
                return args.positional[i % args.positional.count]
            })
            loop["changed"] = .callable(JinjaCallable("changed") { args in
                throw jinjaError("unsupported template construct 'loop.changed'", args.pos)
            })
            s.vars["loop"] = .dict(loop)
            if try execute(body, s) == .breakLoop { break }
        }
        return .normal
    }

    private func assign(_ target: JinjaTarget, _ value: JinjaValue, _ scope: JinjaScope, _ pos: JinjaPos) throws {
        switch target {
        case .name(let n):
            scope.vars[n] = value
        case .tuple(let names):
            let items = try JinjaBuiltins.iterate(value, pos)
            guard items.count == names.count else {
                throw jinjaError(items.count > names.count ? "too many values to unpack (expected \(names.count))"
                                 : "not enough values to unpack (expected \(names.count), got \(items.count))", pos)
            }
            for (n, v) in zip(names, items) { scope.vars[n] = v }
        case .attribute(let n, let attr, let apos):
            guard case .namespace(let ns)? = scope.lookup(n) else {
                throw jinjaError("cannot assign attribute on non-namespace object '\(n)'", apos)
            }
            ns.attributes[attr] = value
        }
    }

    private func makeMacro(_ name: String, _ params: [JinjaMacroParam], _ body: [JinjaNode], _ defined: JinjaScope,
                           _ pos: JinjaPos) -> JinjaCallable {
        JinjaCallable(name) { [unowned self] args in
            guard args.positional.count <= params.count else {
                throw jinjaError("macro '\(name)' takes \(params.count) argument(s) but got \(args.positional.count) (varargs are unsupported)", args.pos)
            }
            let s = JinjaScope(parent: defined)
            for (i, v) in args.positional.enumerated() { s.vars[params[i].name] = v }
            for (k, v) in args.keyword {
                guard params.contains(where: { $0.name == k }) else {
                    throw jinjaError("macro '\(name)' has no argument named '\(k)' (kwargs are unsupported)", args.pos)
                }
                s.vars[k] = v
            }
            for p in params where s.vars[p.name] == nil {
                if let d = p.defaultValue {
                    s.vars[p.name] = try self.eval(d, s)
                } else {
                    s.vars[p.name] = .undefined(hint: "parameter '\(p.name)' was not provided")
                }
            }
            return .string(try self.capture(body, s, pos))
        }
    }

    // MARK: expressions

    func evalArgs(_ args: JinjaArgs, _ scope: JinjaScope, _ pos: JinjaPos) throws -> JinjaCallArgs {
        JinjaCallArgs(positional: try args.positional.map { try eval($0, scope) },
                      keyword: try args.keyword.map { ($0.0, try eval($0.1, scope)) },
                      pos: pos)
    }

    func eval(_ expr: JinjaExpr, _ scope: JinjaScope) throws -> JinjaValue {
        switch expr {
        case .literal(let lit, _):
            switch lit {
            case .none: return .none
            case .bool(let b): return .bool(b)
            case .int(let i): return .int(i)
            case .double(let d): return .double(d)
            case .string(let s): return .string(s)
            }
        case .name(let n, _):
            return scope.lookup(n) ?? .undefinedName(n)
        case .list(let items, _):
            return .list(try items.map { try eval($0, scope) })
        case .tuple(let items, _):
            return .tuple(try items.map { try eval($0, scope) })
        case .dict(let pairs, _):
            var d = JinjaDict()
            for (k, v) in pairs {
                guard case .string(let key) = try eval(k, scope).plain else {
                    throw jinjaError("unsupported dict literal with a non-string key", k.pos)
                }
                d[key] = try eval(v, scope)
            }
            return .dict(d)
        case .attribute(let obj, let name, let pos):
            return try JinjaBuiltins.getAttribute(try eval(obj, scope), name, pos)
        case .item(let obj, let key, let pos):
            return try JinjaBuiltins.getItem(try eval(obj, scope), try eval(key, scope), pos)
        case .slice(let obj, let start, let stop, let step, let pos):
            let target = try eval(obj, scope)
            return try JinjaBuiltins.slice(target, try start.map { try eval($0, scope) }, try stop.map { try eval($0, scope) },
                                           try step.map { try eval($0, scope) }, pos)
        case .call(let callee, let args, let pos):
            let f = try eval(callee, scope)
            let a = try evalArgs(args, scope, pos)
            switch f {
            case .callable(let c): return try c.body(a)
            case .undefined(let hint): throw jinjaError(hint, pos)
            default: throw jinjaError("'\(f.typeName)' object is not callable", pos)
            }
        case .filter(let value, let name, let args, let pos):
            return try JinjaBuiltins.applyFilter(name, try eval(value, scope), try evalArgs(args, scope, pos), self)
        case .test(let value, let name, let args, let negated, let pos):
            let r = try JinjaBuiltins.applyTest(name, try eval(value, scope), try evalArgs(args, scope, pos))
            return .bool(r != negated)
        case .negate(let e, let pos):
            switch try eval(e, scope) {
            case .int(let i): return .int(-i)
            case .bool(let b): return .int(b ? -1 : 0)
            case .double(let d): return .double(-d)
            case .undefined(let hint): throw jinjaError(hint, pos)
            case let v: throw jinjaError("bad operand type for unary -: '\(v.typeName)'", pos)
            }
        case .plus(let e, let pos):
            switch try eval(e, scope) {
            case .int(let i): return .int(i)
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .double(d)
            case .undefined(let hint): throw jinjaError(hint, pos)
            case let v: throw jinjaError("bad operand type for unary +: '\(v.typeName)'", pos)
            }
        case .not(let e, _):
            return .bool(!(try eval(e, scope).truthy))
        case .and(let a, let b, _):
            let left = try eval(a, scope)
            return left.truthy ? try eval(b, scope) : left
        case .or(let a, let b, _):
            let left = try eval(a, scope)
            return left.truthy ? left : try eval(b, scope)
        case .conditional(let test, let then, let otherwise, let pos):
            if try eval(test, scope).truthy { return try eval(then, scope) }
            if let otherwise { return try eval(otherwise, scope) }
            return .undefined(hint: "the inline if-expression on line \(pos.line) evaluated to false and no else section was defined.")
        case .binary(let op, let a, let b, let pos):
            return try JinjaBuiltins.binary(op, try eval(a, scope), try eval(b, scope), pos)
        case .compare(let first, let ops, _):
            var left = try eval(first, scope)
            for (op, rightExpr, pos) in ops {
                let right = try eval(rightExpr, scope)
                if !(try JinjaBuiltins.compare(op, left, right, pos)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        }
    }
}
