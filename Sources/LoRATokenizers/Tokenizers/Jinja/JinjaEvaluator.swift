import Foundation
import LoRAFormats

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
    /// Nesting of evaluation right now, and work done so far (JinjaLimits.renderNesting, .steps).
    private var depth = 0
    private var steps = 0
    /// Where evaluation is, for the limits' errors.
    private var position = JinjaPos(line: 1, column: 1)

    func render(_ nodes: [JinjaNode], globals: JinjaScope) throws -> String {
        let top = JinjaScope(parent: globals)
        output = ""
        depth = 0
        steps = 0
        let flow = try execute(nodes, top)
        if flow != .normal { throw LoRAError("chat template: 'break' or 'continue' used outside a for loop") }
        return output
    }

    // MARK: limits

    /// Counts `count` steps of work against the budget.
    private func step(_ count: Int = 1) throws {
        steps += count
        guard steps <= JinjaLimits.steps else { throw JinjaLimits.stepsError(position) }
    }

    /// Runs `body` one level deeper.
    private func nested<T>(_ body: () throws -> T) throws -> T {
        depth += 1
        defer { depth -= 1 }
        guard depth <= JinjaLimits.renderNesting else { throw JinjaLimits.renderNestingError(position) }
        try step()
        return try body()
    }

    /// Counts the work of taking or making `v` in an operator (`byOperator`: strings are copied
    /// whole) or in a filter, test or call (which go through strings character by character).
    private func charge(_ v: JinjaValue, byOperator: Bool = false) throws {
        switch v {
        case .string(let s), .markup(let s):
            try step(s.utf8.count / (byOperator ? JinjaLimits.bytesPerOperatorStep : JinjaLimits.bytesPerStep))
        case .list(let l), .tuple(let l): try step(l.count / JinjaLimits.itemsPerStep)
        case .dict(let d): try step(d.count / JinjaLimits.itemsPerStep)
        case .iterator(let it): try step(it.allItems.count / JinjaLimits.itemsPerStep)
        default: break
        }
    }

    /// Evaluates an operand of an operator, filter, test or call, counting its size.
    private func operand(_ e: JinjaExpr, _ scope: JinjaScope, byOperator: Bool = false) throws -> JinjaValue {
        let v = try eval(e, scope)
        try charge(v, byOperator: byOperator)
        return v
    }

    private func emit(_ text: String) throws {
        guard text.utf8.count <= JinjaLimits.outputBytes - output.utf8.count else { throw JinjaLimits.outputError }
        output += text
    }

    /// Throws if `value`, a container just built, nests too deeply; each item looked at is a step.
    private func checkNesting(_ value: JinjaValue, level: Int = 1) throws {
        let items: [JinjaValue]
        switch value {
        case .list(let l), .tuple(let l): items = l
        case .dict(let d): items = d.values
        case .namespace(let ns): items = ns.attributes.values
        case .iterator(let it): items = it.allItems
        default: return
        }
        guard level <= JinjaLimits.valueNesting else { throw JinjaLimits.valueNestingError(position) }
        try step(items.count)
        for item in items { try checkNesting(item, level: level + 1) }
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
        try nested { try executeUnchecked(node, scope) }
    }

    private func executeUnchecked(_ node: JinjaNode, _ scope: JinjaScope) throws -> JinjaFlow {
        switch node {
        case .text(let s):
            try emit(s)
        case .output(let e):
            try emit(try JinjaText.str(try eval(e, scope), e.pos))
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
            try emit(try JinjaText.str(value, filters.first?.2 ?? JinjaPos(line: 1, column: 1)))
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
        try charge(.string(output))
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
            position = pos
            try step(JinjaLimits.stepsPerIteration)
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
            let previous = ns.attributes[attr]
            ns.attributes[attr] = value
            // Checked once assigned, so a value that holds this namespace is found to never end;
            // it is then taken back, leaving no namespace that holds itself.
            do { try checkNesting(value, level: 2) } catch {
                ns.attributes[attr] = previous
                throw error
            }
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
        JinjaCallArgs(positional: try args.positional.map { try operand($0, scope) },
                      keyword: try args.keyword.map { ($0.0, try operand($0.1, scope)) },
                      pos: pos)
    }

    func eval(_ expr: JinjaExpr, _ scope: JinjaScope) throws -> JinjaValue {
        position = expr.pos
        return try nested {
            let value = try evalUnchecked(expr, scope)
            position = expr.pos  // the value's limits are this expression's
            switch expr {
            case .filter, .test, .call: try step(JinjaLimits.stepsPerCall - 1)  // `nested` counted one
            default: break
            }
            switch (expr, value) {
            case (.list, _), (.tuple, _), (.dict, _), (.call, .dict), (.call, .namespace): try checkNesting(value)
            case (.binary, _): try charge(value, byOperator: true)
            case (.filter, _), (.call, _): try charge(value)
            default: break
            }
            return value
        }
    }

    private func evalUnchecked(_ expr: JinjaExpr, _ scope: JinjaScope) throws -> JinjaValue {
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
            return try JinjaBuiltins.getAttribute(try operand(obj, scope), name, pos)
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
            return try JinjaBuiltins.applyFilter(name, try operand(value, scope), try evalArgs(args, scope, pos), self)
        case .test(let value, let name, let args, let negated, let pos):
            let r = try JinjaBuiltins.applyTest(name, try operand(value, scope), try evalArgs(args, scope, pos))
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
            return try JinjaBuiltins.binary(op, try operand(a, scope, byOperator: true), try operand(b, scope, byOperator: true), pos)
        case .compare(let first, let ops, _):
            var left = try operand(first, scope, byOperator: true)
            for (op, rightExpr, pos) in ops {
                let right = try operand(rightExpr, scope, byOperator: true)
                if !(try JinjaBuiltins.compare(op, left, right, pos)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        }
    }
}
