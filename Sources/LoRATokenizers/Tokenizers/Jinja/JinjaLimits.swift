import Foundation
import LoRAFormats

/// The limits that keep a hostile chat template from exhausting the stack, memory or time.
/// Real chat templates are under 20 KB, nest about ten levels deep, and render under 1 MB in a
/// few thousand steps; each limit is far above that, and each, when hit, throws one sentence
/// naming it.
enum JinjaLimits {
    /// Nesting of the template source: parenthesized, bracketed and operator sub-expressions and
    /// blocks (`{% if %}`, `{% for %}` …) inside one another, as parsed.
    static let sourceNesting = 100
    /// Nesting while rendering: expressions, statements and macro calls inside one another
    /// (a macro calling itself stops here).
    static let renderNesting = 500
    /// Nesting of values: lists, tuples, dicts and namespaces inside one another, whether built
    /// by the template or passed in.
    static let valueNesting = 100
    /// The rendered text, in UTF-8 bytes.
    static let outputBytes = 16 << 20
    /// One string value, in UTF-8 bytes.
    static let stringBytes = 16 << 20
    /// One list or tuple, in items.
    static let listItems = 1 << 20
    /// Work per render, in steps of roughly a microsecond of a debug build: one per expression and
    /// statement, `stepsPerCall` per filter, test or call, `stepsPerIteration` per loop iteration,
    /// one per item of a list or dict that an operator, filter, test or call takes or makes, and
    /// one per `bytesPerStep` bytes of such a string (`bytesPerOperatorStep` for an operator's,
    /// which copies it whole rather than character by character). A chat of a hundred short
    /// messages takes about 10,000 steps, one of a hundred 10 KB messages (1 MB) about 150,000.
    static let steps = 1_000_000
    static let stepsPerIteration = 16
    static let stepsPerCall = 4
    static let itemsPerStep = 1
    static let bytesPerStep = 16
    static let bytesPerOperatorStep = 1024

    static func sourceNestingError(_ pos: JinjaPos) -> LoRAError {
        jinjaError("expressions and statements nest deeper than the limit of \(sourceNesting) levels", pos)
    }

    static func renderNestingError(_ pos: JinjaPos) -> LoRAError {
        jinjaError("rendering nests deeper than the limit of \(renderNesting) levels (expressions, statements and macro calls)", pos)
    }

    static func valueNestingError(_ pos: JinjaPos) -> LoRAError {
        jinjaError("values nest deeper than the limit of \(valueNesting) levels", pos)
    }

    static let outputError = LoRAError("chat template: output exceeds the limit of \(outputBytes >> 20) MiB")

    static func stepsError(_ pos: JinjaPos) -> LoRAError {
        jinjaError("rendering exceeds the limit of \(steps) steps", pos)
    }

    /// Throws unless a string of `bytes` UTF-8 bytes is within the limit.
    static func checkString(_ bytes: Int, _ pos: JinjaPos) throws {
        guard bytes <= stringBytes else { throw jinjaError("a string would exceed the limit of \(stringBytes >> 20) MiB", pos) }
    }

    /// Throws unless a string of `count` copies of `bytes` bytes each is within the limit.
    static func checkRepeatedString(_ bytes: Int, times count: Int, _ pos: JinjaPos) throws {
        let (total, overflow) = bytes.multipliedReportingOverflow(by: count)
        try checkString(overflow ? Int.max : total, pos)
    }

    /// Throws unless a list of `count` items is within the limit.
    static func checkList(_ count: Int, _ pos: JinjaPos) throws {
        guard count <= listItems else { throw jinjaError("a list would exceed the limit of \(listItems) items", pos) }
    }

    /// Throws unless a list of `count` copies of `items` items each is within the limit.
    static func checkRepeatedList(_ items: Int, times count: Int, _ pos: JinjaPos) throws {
        let (total, overflow) = items.multipliedReportingOverflow(by: count)
        try checkList(overflow ? Int.max : total, pos)
    }
}
