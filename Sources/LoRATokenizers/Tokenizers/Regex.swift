import Foundation
import LoRAFormats

/// A set of scalars: a union of items (ranges, general categories, White_Space, nested sets), each possibly
/// negated, the whole possibly negated. ASCII answers come from a bitmap computed once.
struct CharSet: Sendable {
    enum Item: Sendable {
        case range(UInt32, UInt32)
        case categories(UInt32)
        case whitespace
        case set(CharSet)
    }
    var items: [(item: Item, negated: Bool)] = []
    var negated = false
    private(set) var asciiLow: UInt64 = 0
    private(set) var asciiHigh: UInt64 = 0

    init(items: [(item: Item, negated: Bool)], negated: Bool = false) {
        self.items = items
        self.negated = negated
        for c in UInt32(0)..<128 where slowContains(c) {
            if c < 64 { asciiLow |= 1 << UInt64(c) } else { asciiHigh |= 1 << UInt64(c - 64) }
        }
    }

    static func single(_ item: Item, negated: Bool = false) -> CharSet {
        CharSet(items: [(item, negated)])
    }

    @inline(__always)
    func contains(_ c: UInt32) -> Bool {
        if c < 64 { return asciiLow & (1 << UInt64(c)) != 0 }
        if c < 128 { return asciiHigh & (1 << UInt64(c - 64)) != 0 }
        return slowContains(c)
    }

    func slowContains(_ c: UInt32) -> Bool {
        var info: UInt8?
        for (item, itemNegated) in items {
            var hit: Bool
            switch item {
            case .range(let lo, let hi): hit = c >= lo && c <= hi
            case .categories(let mask):
                if info == nil { info = UnicodeTables.info(c) }
                hit = mask & (1 << UInt32(info! & 0x1F)) != 0
            case .whitespace:
                if info == nil { info = UnicodeTables.info(c) }
                hit = info! & UnicodeTables.whitespaceBit != 0
            case .set(let s): hit = s.contains(c)
            }
            if hit != itemNegated { return !negated }
        }
        return negated
    }
}

/// A regular expression in the Oniguruma (Ruby) syntax that tokenizer.json patterns are written in, matched the
/// way tokenizers' Oniguruma matches: backtracking, leftmost-first alternation, greedy quantifiers by default,
/// atomic lookaheads. Covers what tokenizer patterns use (classes with \p{…}, \s, \d, \w, (?i:…), (?!…), (?=…),
/// (?>…), counted repetition, anchors); anything else is refused at parse time and `TokenizerRegex` falls back
/// to NSRegularExpression.
final class BacktrackingRegex: Sendable {
    enum Inst: Sendable {
        case char(UInt32)
        case set(Int)
        case any                       // `.`: anything but \n
        case split(Int, Int)           // try the first, on failure the second
        case guardedSplit(Int, Int, Int) // as split, but the first branch must begin with a scalar of set #3
        case jump(Int)
        case repeatSet(set: Int, min: Int, max: Int, greedy: Bool)
        case look(negate: Bool, next: Int)   // body follows, ends in .succeed; continue at next
        case atomic(next: Int)
        case lineStart, lineEnd, textStart, textEnd, textEndOrFinalNewline
        case wordBoundary(Bool)       // true: \b, false: \B
        case succeed
    }

    let insts: [Inst]
    let sets: [CharSet]
    /// The sets' ASCII bitmaps, two words per set, so the VM's common case touches no CharSet.
    let asciiMaps: [UInt64]

    struct Unsupported: Error { let reason: String }
    /// Groups and classes nested deeper than `maximumNesting`: refused outright (no fallback), as parsing,
    /// compiling and matching them recurse.
    struct TooDeep: Error {}
    static let maximumNesting = 100

    init(pattern: String) throws {
        var parser = Parser(Array(pattern.unicodeScalars.map { $0.value }))
        let node = try parser.parseAll()
        var compiler = Compiler()
        try compiler.emit(node)
        compiler.insts.append(.succeed)
        compiler.guardSplits()
        insts = compiler.insts
        sets = compiler.sets
        asciiMaps = compiler.sets.flatMap { [$0.asciiLow, $0.asciiHigh] }
    }

    /// Steps one search may take: a million, plus a thousand per scalar searched. Real tokenizer patterns take
    /// a few per scalar; a pattern that backtracks exponentially (`(.|.)*x`) would otherwise never finish.
    /// Like Oniguruma's retry limit, running out ends the search: the text left counts as unmatched.
    static func searchBudget(_ count: Int) -> Int { 1_000_000 + 1_000 * count }

    /// Non-overlapping leftmost matches in `text[range]`, as Oniguruma's search loop finds them.
    func matches(in text: UnsafeBufferPointer<UInt32>, _ range: Range<Int>, stack: inout [Backtrack]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var pos = range.lowerBound
        let end = range.upperBound
        var budget = Self.searchBudget(range.count)
        while pos <= end && budget > 0 {
            if let stop = match(text, from: pos, start: range.lowerBound, end: end, stack: &stack, budget: &budget) {
                out.append(pos..<stop)
                pos = stop > pos ? stop : pos + 1
            } else {
                pos += 1
            }
        }
        return out
    }

    struct Backtrack {
        var pc: Int32
        var pos: Int32
        var bound: Int32   // for repeat entries: the last position the repetition may give back to
        var kind: UInt8    // 0 plain, 1 greedy repeat (pos descends to bound), 2 lazy repeat (pos ascends to bound), 3 barrier
    }

    func match(_ text: UnsafeBufferPointer<UInt32>, from pos: Int, start: Int, end: Int, stack: inout [Backtrack],
               budget: inout Int) -> Int? {
        stack.removeAll(keepingCapacity: true)
        return insts.withUnsafeBufferPointer { code in
            sets.withUnsafeBufferPointer { sets in
                asciiMaps.withUnsafeBufferPointer { maps in
                    run(code, sets, maps, text, pc: 0, pos: pos, start: start, end: end, stack: &stack, budget: &budget)
                }
            }
        }
    }

    private func run(_ code: UnsafeBufferPointer<Inst>, _ sets: UnsafeBufferPointer<CharSet>, _ maps: UnsafeBufferPointer<UInt64>,
                     _ text: UnsafeBufferPointer<UInt32>,
                     pc startPC: Int, pos startPos: Int, start: Int, end: Int, stack: inout [Backtrack], budget: inout Int) -> Int? {
        @inline(__always) func member(_ i: Int, _ c: UInt32) -> Bool {
            if c < 128 { return maps[2 * i + Int(c >> 6)] & (1 << UInt64(c & 63)) != 0 }
            return sets[i].slowContains(c)
        }
        let base = stack.count
        var pc = startPC
        var pos = startPos
        while true {
            budget -= 1
            if budget < 0 { return nil }
            var ok = true
            switch code[pc] {
            case .char(let c):
                if pos < end && text[pos] == c { pos += 1; pc += 1 } else { ok = false }
            case .set(let i):
                if pos < end && member(i, text[pos]) { pos += 1; pc += 1 } else { ok = false }
            case .any:
                if pos < end && text[pos] != 10 { pos += 1; pc += 1 } else { ok = false }
            case .split(let a, let b):
                stack.append(Backtrack(pc: Int32(b), pos: Int32(pos), bound: 0, kind: 0))
                pc = a
            case .guardedSplit(let a, let b, let g):
                if pos < end && member(g, text[pos]) {
                    stack.append(Backtrack(pc: Int32(b), pos: Int32(pos), bound: 0, kind: 0))
                    pc = a
                } else {
                    pc = b
                }
            case .jump(let a):
                pc = a
            case .repeatSet(let i, let min, let max, let greedy):
                let limit = max < 0 ? end : Swift.min(end, pos + max)
                var k = pos
                while k < limit && member(i, text[k]) { k += 1 }
                let count = k - pos
                if count < min { ok = false; break }
                if greedy {
                    if count > min { stack.append(Backtrack(pc: Int32(pc + 1), pos: Int32(k - 1), bound: Int32(pos + min), kind: 1)) }
                    pos = k
                } else {
                    if count > min { stack.append(Backtrack(pc: Int32(pc + 1), pos: Int32(pos + min + 1), bound: Int32(k), kind: 2)) }
                    pos += min
                }
                pc += 1
            case .look(let negate, let next):
                let mark = stack.count
                let found = run(code, sets, maps, text, pc: pc + 1, pos: pos, start: start, end: end, stack: &stack, budget: &budget) != nil
                stack.removeSubrange(mark...)
                if found != negate { pc = next } else { ok = false }
            case .atomic(let next):
                let mark = stack.count
                let stop = run(code, sets, maps, text, pc: pc + 1, pos: pos, start: start, end: end, stack: &stack, budget: &budget)
                stack.removeSubrange(mark...)
                if let stop { pos = stop; pc = next } else { ok = false }
            case .lineStart:
                if pos == start || text[pos - 1] == 10 { pc += 1 } else { ok = false }
            case .lineEnd:
                if pos == end || text[pos] == 10 { pc += 1 } else { ok = false }
            case .textStart:
                if pos == start { pc += 1 } else { ok = false }
            case .textEnd:
                if pos == end { pc += 1 } else { ok = false }
            case .textEndOrFinalNewline:
                if pos == end || (pos == end - 1 && text[pos] == 10) { pc += 1 } else { ok = false }
            case .wordBoundary(let want):
                let before = pos > start && Self.isWord(text[pos - 1])
                let after = pos < end && Self.isWord(text[pos])
                if (before != after) == want { pc += 1 } else { ok = false }
            case .succeed:
                return pos
            }
            if ok { continue }
            // Backtrack.
            guard stack.count > base else { return nil }
            let top = stack.removeLast()
            pc = Int(top.pc)
            pos = Int(top.pos)
            switch top.kind {
            case 1:
                if top.pos > top.bound { stack.append(Backtrack(pc: top.pc, pos: top.pos - 1, bound: top.bound, kind: 1)) }
            case 2:
                if top.pos < top.bound { stack.append(Backtrack(pc: top.pc, pos: top.pos + 1, bound: top.bound, kind: 2)) }
            default:
                break
            }
        }
    }

    static func isWord(_ c: UInt32) -> Bool {
        GeneralCategory.onigWord & (1 << UInt32(UnicodeTables.category(c))) != 0 || c == 0x200C || c == 0x200D
    }

    /// `\w`: the word categories plus Join_Control (U+200C, U+200D), which Oniguruma counts as word characters.
    static let wordSet = CharSet(items: [(.categories(GeneralCategory.onigWord), false), (.range(0x200C, 0x200D), false)])

    // MARK: Parsing

    indirect enum Node {
        case empty
        case set(CharSet)
        case char(UInt32)
        case any
        case concat([Node])
        case alt([Node])
        case repeatNode(Node, min: Int, max: Int, greedy: Bool, possessive: Bool)
        case look(Node, negate: Bool)
        case atomic(Node)
        case assertion(Inst)

        var canBeEmpty: Bool {
            switch self {
            case .empty, .assertion, .look: return true
            case .set, .char, .any: return false
            case .concat(let ns): return ns.allSatisfy { $0.canBeEmpty }
            case .alt(let ns): return ns.contains { $0.canBeEmpty }
            case .repeatNode(let n, let min, _, _, _): return min == 0 || n.canBeEmpty
            case .atomic(let n): return n.canBeEmpty
            }
        }
    }

    struct Parser {
        let s: [UInt32]
        var i = 0
        var caseInsensitive = false
        var depth = 0

        mutating func enter() throws {
            depth += 1
            guard depth <= BacktrackingRegex.maximumNesting else { throw TooDeep() }
        }

        init(_ s: [UInt32]) { self.s = s }

        var atEnd: Bool { i >= s.count }
        func peek(_ k: Int = 0) -> UInt32? { i + k < s.count ? s[i + k] : nil }
        func isChar(_ ch: Character, at k: Int = 0) -> Bool { peek(k) == ch.unicodeScalars.first!.value }

        mutating func parseAll() throws -> Node {
            let n = try parseAlternation()
            if !atEnd { throw Unsupported(reason: "unbalanced ')'") }
            return n
        }

        mutating func parseAlternation() throws -> Node {
            var branches = [try parseConcat()]
            while isChar("|") {
                i += 1
                branches.append(try parseConcat())
            }
            return branches.count == 1 ? branches[0] : .alt(branches)
        }

        mutating func parseConcat() throws -> Node {
            var items: [Node] = []
            while !atEnd && !isChar("|") && !isChar(")") {
                // An inline flag group `(?i)` changes the rest of the enclosing group.
                if isChar("("), isChar("?", at: 1), let (on, len) = inlineFlags(), peek(len) == 0x29 {
                    i += len + 1
                    caseInsensitive = on
                    continue
                }
                var atom = try parseAtom()
                atom = try parseQuantifiers(atom)
                items.append(atom)
            }
            return items.count == 1 ? items[0] : (items.isEmpty ? .empty : .concat(items))
        }

        /// Reads `(?i` / `(?-i` with the '(' at i + base; returns (case-insensitive on, length from the '(' up to
        /// the ':' or ')').
        func inlineFlags(base: Int = 0) -> (Bool, Int)? {
            var k = base + 2
            var on = true
            var sawI = false
            while let c = peek(k) {
                if c == 0x2D { on = false } else if c == 0x69 { sawI = true } else if c == 0x3A || c == 0x29 { break } else { return nil }
                k += 1
            }
            return sawI ? (on, k - base) : nil
        }

        mutating func parseQuantifiers(_ atomIn: Node) throws -> Node {
            var atom = atomIn
            while let c = peek() {
                var min = 0, max = -1
                if c == 0x2A { i += 1 } // *
                else if c == 0x2B { min = 1; i += 1 } // +
                else if c == 0x3F { max = 1; i += 1 } // ?
                else if c == 0x7B, let (lo, hi, len) = try countedQuantifier() { min = lo; max = hi; i += len }
                else { break }
                var greedy = true, possessive = false
                if isChar("?") { greedy = false; i += 1 } else if isChar("+") && c != 0x7B { possessive = true; i += 1 }
                if case .assertion = atom { throw Unsupported(reason: "quantified assertion") }
                atom = .repeatNode(atom, min: min, max: max, greedy: greedy, possessive: possessive)
            }
            return atom
        }

        /// `{n}`, `{n,}`, `{n,m}`, `{,m}` at i, or nil when the brace is a literal (as Oniguruma reads it).
        func countedQuantifier() throws -> (Int, Int, Int)? {
            var k = 1
            func number() throws -> Int? {
                var v: Int?
                while let c = peek(k), c >= 0x30 && c <= 0x39 {
                    v = (v ?? 0) * 10 + Int(c - 0x30)
                    k += 1
                    // Oniguruma's own limit (ONIG_MAX_REPEAT_NUM); it also keeps the arithmetic from overflowing.
                    if v! > 100_000 { throw Unsupported(reason: "repetition count over 100000") }
                }
                return v
            }
            let lo = try number()
            if peek(k) == 0x7D { return lo.map { ($0, $0, k + 1) } }
            guard peek(k) == 0x2C else { return nil }
            k += 1
            let hi = try number()
            guard peek(k) == 0x7D, lo != nil || hi != nil else { return nil }
            return (lo ?? 0, hi ?? -1, k + 1)
        }

        mutating func parseAtom() throws -> Node {
            let c = s[i]
            switch c {
            case 0x28: // (
                i += 1
                try enter()
                let savedCI = caseInsensitive
                defer { caseInsensitive = savedCI; depth -= 1 }
                var kind = 0 // 0 group, 1 lookahead, 2 negative lookahead, 3 atomic
                if isChar("?") {
                    if isChar(":", at: 1) { i += 2 }
                    else if isChar("=", at: 1) { kind = 1; i += 2 }
                    else if isChar("!", at: 1) { kind = 2; i += 2 }
                    else if isChar(">", at: 1) { kind = 3; i += 2 }
                    else if let (on, len) = inlineFlags(base: -1), peek(len - 1) == 0x3A { caseInsensitive = on; i += len }
                    else { throw Unsupported(reason: "group kind (?\(String(UnicodeScalar(peek(1) ?? 63) ?? "?"))") }
                }
                let inner = try parseAlternation()
                guard isChar(")") else { throw Unsupported(reason: "missing ')'") }
                i += 1
                switch kind {
                case 1: return .look(inner, negate: false)
                case 2: return .look(inner, negate: true)
                case 3: return .atomic(inner)
                default: return inner
                }
            case 0x5B: // [
                return .set(try parseClass())
            case 0x2E: // .
                i += 1
                return .any
            case 0x5E: i += 1; return .assertion(.lineStart)
            case 0x24: i += 1; return .assertion(.lineEnd)
            case 0x5C: // backslash
                return try parseEscape()
            case 0x2A, 0x2B, 0x3F:
                throw Unsupported(reason: "quantifier without operand")
            default:
                i += 1
                return literal(c)
            }
        }

        func literal(_ c: UInt32) -> Node {
            if caseInsensitive {
                let v = UnicodeTables.caseVariants(c)
                if v.count > 1 { return .set(CharSet(items: v.map { (.range($0, $0), false) })) }
            }
            return .char(c)
        }

        mutating func parseEscape() throws -> Node {
            i += 1
            guard let c = peek() else { throw Unsupported(reason: "trailing backslash") }
            switch c {
            case 0x41: i += 1; return .assertion(.textStart)                 // \A
            case 0x7A: i += 1; return .assertion(.textEnd)                   // \z
            case 0x5A: i += 1; return .assertion(.textEndOrFinalNewline)     // \Z
            case 0x62: i += 1; return .assertion(.wordBoundary(true))        // \b
            case 0x42: i += 1; return .assertion(.wordBoundary(false))       // \B
            default: break
            }
            if let item = try classEscape() {
                return .set(CharSet(items: [item]))
            }
            let v = try escapedScalar()
            return literal(v)
        }

        /// A class shorthand at i (just after the backslash): \s \S \d \D \w \W \h \H \p{…} \P{…}; nil otherwise.
        mutating func classEscape() throws -> (item: CharSet.Item, negated: Bool)? {
            guard let c = peek() else { return nil }
            switch c {
            case 0x73: i += 1; return (.whitespace, false)
            case 0x53: i += 1; return (.whitespace, true)
            case 0x64: i += 1; return (.categories(GeneralCategory.Nd.bit), false)
            case 0x44: i += 1; return (.categories(GeneralCategory.Nd.bit), true)
            case 0x77: i += 1; return (.set(BacktrackingRegex.wordSet), false)
            case 0x57: i += 1; return (.set(BacktrackingRegex.wordSet), true)
            case 0x68, 0x48: // Ruby syntax: \h is a hex digit
                i += 1
                let set = CharSet(items: [(.range(0x30, 0x39), false), (.range(0x41, 0x46), false), (.range(0x61, 0x66), false)])
                return (.set(set), c == 0x48)
            case 0x70, 0x50:
                i += 1
                guard isChar("{") else { throw Unsupported(reason: "\\p without braces") }
                i += 1
                var negate = c == 0x50
                if isChar("^") { negate.toggle(); i += 1 }
                var name = ""
                while let d = peek(), d != 0x7D { name.unicodeScalars.append(UnicodeScalar(d)!); i += 1 }
                guard isChar("}") else { throw Unsupported(reason: "unterminated \\p{") }
                i += 1
                guard let mask = GeneralCategory.mask(named: name) else { throw Unsupported(reason: "property \\p{\(name)}") }
                return (.categories(mask), negate)
            default:
                return nil
            }
        }

        /// The scalar an escape at i (just after the backslash) denotes.
        mutating func escapedScalar() throws -> UInt32 {
            guard let c = peek() else { throw Unsupported(reason: "trailing backslash") }
            i += 1
            switch c {
            case 0x74: return 9     // \t
            case 0x6E: return 10    // \n
            case 0x72: return 13    // \r
            case 0x66: return 12    // \f
            case 0x76: return 11    // \v
            case 0x61: return 7     // \a
            case 0x65: return 27    // \e
            case 0x30: return 0     // \0
            case 0x78: // \xHH or \x{H…}
                if isChar("{") {
                    i += 1
                    var v: UInt32 = 0
                    while let d = peek(), d != 0x7D {
                        guard let h = hexValue(d), v <= 0x10FFFF else { throw Unsupported(reason: "bad \\x{}") }
                        v = v * 16 + h; i += 1
                    }
                    i += 1
                    return v
                }
                var v: UInt32 = 0
                for _ in 0..<2 { guard let d = peek(), let h = hexValue(d) else { break }; v = v * 16 + h; i += 1 }
                return v
            case 0x75: // \uHHHH
                var v: UInt32 = 0
                for _ in 0..<4 { guard let d = peek(), let h = hexValue(d) else { throw Unsupported(reason: "bad \\u") }; v = v * 16 + h; i += 1 }
                return v
            default:
                if (c >= 0x31 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) {
                    throw Unsupported(reason: "escape \\\(String(UnicodeScalar(c)!))")
                }
                return c
            }
        }

        func hexValue(_ d: UInt32) -> UInt32? {
            switch d {
            case 0x30...0x39: return d - 0x30
            case 0x41...0x46: return d - 0x41 + 10
            case 0x61...0x66: return d - 0x61 + 10
            default: return nil
            }
        }

        mutating func parseClass() throws -> CharSet {
            i += 1 // [
            try enter()
            defer { depth -= 1 }
            var negated = false
            if isChar("^") { negated = true; i += 1 }
            var items: [(item: CharSet.Item, negated: Bool)] = []
            var first = true
            while true {
                guard let c = peek() else { throw Unsupported(reason: "unterminated class") }
                if c == 0x5D && !first { i += 1; break } // ]
                first = false
                if c == 0x5B { // nested class (or POSIX bracket)
                    if isChar(":", at: 1) { throw Unsupported(reason: "POSIX bracket") }
                    items.append((.set(try parseClass()), false))
                    continue
                }
                if c == 0x26 && isChar("&", at: 1) { throw Unsupported(reason: "class intersection") }
                var lo: UInt32
                if c == 0x5C {
                    i += 1
                    if let item = try classEscape() { items.append(item); continue }
                    if isChar("b") { i += 1; lo = 8 } else { lo = try escapedScalar() }
                } else {
                    lo = c
                    i += 1
                }
                var hi = lo
                if isChar("-"), let n = peek(1), n != 0x5D {
                    i += 1
                    if n == 0x5C {
                        i += 1
                        if peek().map({ [0x73, 0x53, 0x64, 0x44, 0x77, 0x57, 0x70, 0x50, 0x68, 0x48].contains($0) }) == true {
                            throw Unsupported(reason: "range to a class")
                        }
                        hi = try escapedScalar()
                    } else if n == 0x5B {
                        throw Unsupported(reason: "range to a class")
                    } else {
                        hi = n
                        i += 1
                    }
                    guard hi >= lo else { throw Unsupported(reason: "reversed range") }
                }
                if caseInsensitive {
                    if hi - lo <= 512 {
                        for v in lo...hi { for w in UnicodeTables.caseVariants(v) where w < lo || w > hi { items.append((.range(w, w), false)) } }
                    } else {
                        throw Unsupported(reason: "large case-insensitive range")
                    }
                }
                items.append((.range(lo, hi), false))
            }
            return CharSet(items: items, negated: negated)
        }
    }

    // MARK: Compiling

    struct Compiler {
        var insts: [Inst] = []
        var sets: [CharSet] = []

        mutating func addSet(_ s: CharSet) -> Int {
            sets.append(s)
            return sets.count - 1
        }

        mutating func emit(_ node: Node) throws {
            if insts.count > 200_000 { throw Unsupported(reason: "pattern too large") }
            switch node {
            case .empty:
                break
            case .char(let c):
                insts.append(.char(c))
            case .set(let s):
                insts.append(.set(addSet(s)))
            case .any:
                insts.append(.any)
            case .assertion(let inst):
                insts.append(inst)
            case .concat(let ns):
                for n in ns { try emit(n) }
            case .alt(let ns):
                // split L1, next; L1: a; jump end; next: split L2, … ; last
                var jumps: [Int] = []
                for (k, n) in ns.enumerated() {
                    if k < ns.count - 1 {
                        let splitAt = insts.count
                        insts.append(.split(0, 0))
                        try emit(n)
                        jumps.append(insts.count)
                        insts.append(.jump(0))
                        insts[splitAt] = .split(splitAt + 1, insts.count)
                    } else {
                        try emit(n)
                    }
                }
                for j in jumps { insts[j] = .jump(insts.count) }
            case .look(let body, let negate):
                let at = insts.count
                insts.append(.look(negate: negate, next: 0))
                try emit(body)
                insts.append(.succeed)
                insts[at] = .look(negate: negate, next: insts.count)
            case .atomic(let body):
                let at = insts.count
                insts.append(.atomic(next: 0))
                try emit(body)
                insts.append(.succeed)
                insts[at] = .atomic(next: insts.count)
            case .repeatNode(let body, let min, let max, let greedy, let possessive):
                if possessive {
                    try emit(.atomic(.repeatNode(body, min: min, max: max, greedy: true, possessive: false)))
                    return
                }
                if let set = singleSet(body) {
                    insts.append(.repeatSet(set: addSet(set), min: min, max: max, greedy: greedy))
                    return
                }
                if max >= 0 && max < min { throw Unsupported(reason: "bad repetition bounds") }
                if body.canBeEmpty && (max < 0 || max > min) { throw Unsupported(reason: "repetition of a possibly empty group") }
                if min > 1000 || max > 1000 { throw Unsupported(reason: "repetition count over 1000") }
                for _ in 0..<min { try emit(body) }
                if max < 0 {
                    // L: split(body, end) ; body ; jump L
                    let loop = insts.count
                    insts.append(.split(0, 0))
                    try emit(body)
                    insts.append(.jump(loop))
                    insts[loop] = greedy ? .split(loop + 1, insts.count) : .split(insts.count, loop + 1)
                } else {
                    var splits: [Int] = []
                    for _ in min..<max {
                        splits.append(insts.count)
                        insts.append(.split(0, 0))
                        try emit(body)
                    }
                    let end = insts.count
                    for s in splits { insts[s] = greedy ? .split(s + 1, end) : .split(end, s + 1) }
                }
            }
        }

        /// Gives each split whose first branch must begin by consuming a scalar (a char, a set, or a repetition
        /// of at least one) that scalar's set, so the VM can skip the branch without a backtrack entry.
        mutating func guardSplits() {
            for k in insts.indices {
                guard case .split(let a, let b) = insts[k] else { continue }
                switch insts[a] {
                case .char(let c): insts[k] = .guardedSplit(a, b, addSet(CharSet.single(.range(c, c))))
                case .set(let i): insts[k] = .guardedSplit(a, b, i)
                case .repeatSet(let i, let min, _, _) where min >= 1: insts[k] = .guardedSplit(a, b, i)
                default: break
                }
            }
        }

        func singleSet(_ node: Node) -> CharSet? {
            switch node {
            case .set(let s): return s
            case .char(let c): return CharSet.single(.range(c, c))
            case .any: return CharSet.single(.range(10, 10), negated: true)
            default: return nil
            }
        }
    }
}

/// A tokenizer.json regex: the backtracking engine when it can parse the pattern, NSRegularExpression otherwise.
final class TokenizerRegex: @unchecked Sendable {
    let pattern: String
    private let engine: BacktrackingRegex?
    private let fallback: NSRegularExpression?

    init(pattern: String, context: String) throws {
        self.pattern = pattern
        do {
            engine = try BacktrackingRegex(pattern: pattern)
            fallback = nil
        } catch is BacktrackingRegex.TooDeep {
            throw LoRAError("\(context): regex nests groups or classes more than \(BacktrackingRegex.maximumNesting) deep")
        } catch {
            engine = nil
            do {
                fallback = try NSRegularExpression(pattern: pattern, options: [])
            } catch {
                throw LoRAError("\(context): regex \(pattern.debugDescription) is not supported")
            }
        }
    }

    /// A literal pattern (Split/Replace with a "String" pattern).
    init(literal: String) {
        pattern = literal
        let scalars = literal.unicodeScalars.map { $0.value }
        engine = try? BacktrackingRegex(literalScalars: scalars)
        fallback = nil
    }

    var usesFallback: Bool { engine == nil }

    func matches(in text: UnsafeBufferPointer<UInt32>, _ range: Range<Int>, stack: inout [BacktrackingRegex.Backtrack]) -> [Range<Int>] {
        if let engine { return engine.matches(in: text, range, stack: &stack) }
        guard let fallback, !range.isEmpty else { return [] }
        // Through a String and UTF-16 offsets, mapped back to scalar offsets.
        var s = String.UnicodeScalarView()
        var utf16Start: [Int] = []
        utf16Start.reserveCapacity(range.count + 1)
        var u = 0
        for k in range {
            utf16Start.append(u)
            let scalar = Unicode.Scalar(text[k]) ?? "\u{FFFD}"
            s.append(scalar)
            u += scalar.value > 0xFFFF ? 2 : 1
        }
        utf16Start.append(u)
        let string = String(s)
        func scalarIndex(_ utf16: Int) -> Int {
            var lo = 0, hi = utf16Start.count - 1
            while lo < hi { let mid = (lo + hi) / 2; if utf16Start[mid] < utf16 { lo = mid + 1 } else { hi = mid } }
            return lo
        }
        return fallback.matches(in: string, range: NSRange(location: 0, length: u)).map {
            range.lowerBound + scalarIndex($0.range.location) ..< range.lowerBound + scalarIndex($0.range.location + $0.range.length)
        }
    }
}

extension BacktrackingRegex {
    /// A pattern that matches exactly `literal` (no syntax). An empty literal matches the empty string at every
    /// position, as tokenizers' escaped empty regex does.
    convenience init(literalScalars: [UInt32]) throws {
        var escaped = ""
        for c in literalScalars { escaped += String(format: "\\x{%X}", c) }
        try self.init(pattern: escaped)
    }
}
