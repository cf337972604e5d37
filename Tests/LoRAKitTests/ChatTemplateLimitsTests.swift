import Foundation
import XCTest
@testable import LoRAKit

/// Hostile chat templates stop at a named limit (JinjaLimits) with one sentence, quickly,
/// instead of overflowing the stack, aborting an allocation or running forever. The expected
/// positions are counted by hand from the template text.
final class ChatTemplateLimitsTests: XCTestCase {
    /// Parses and renders `source`, expecting `message`, within `seconds` (generous: debug build).
    private func assertFails(_ source: String, _ message: String, seconds: Double = 2,
                             file: StaticString = #filePath, line: UInt = #line) {
        let start = Date()
        do {
            let out = try ChatTemplate(source).render(messages: [ChatMessage(role: "user", content: "hi")], addGenerationPrompt: false)
            XCTFail("rendered \(out.utf8.count) bytes without error", file: file, line: line)
        } catch let e as LoRAError {
            XCTAssertEqual(e.message, message, file: file, line: line)
        } catch {
            XCTFail("not a LoRAError: \(error)", file: file, line: line)
        }
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertLessThan(elapsed, seconds, "took \(elapsed) s", file: file, line: line)
    }

    private let nesting = "expressions and statements nest deeper than the limit of 100 levels"

    func testDeeplyNestedSourceStopsAtTheNestingLimit() {
        // The 101st parenthesized level starts at column 3 + 101.
        assertFails("{{ " + String(repeating: "(", count: 20_000) + "1" + String(repeating: ")", count: 20_000) + " }}",
                    "chat template 1:104: \(nesting)")
        // "{{ 1 + 1 …": the 100th '+' (column 6 + 4 × 99) holds the first operand 101 levels down.
        assertFails("{{ 1" + String(repeating: " + 1", count: 20_000) + " }}", "chat template 1:402: \(nesting)")
        // The 100th 'not' (column 4 + 4 × 99) and the 100th '.' (column 5 + 2 × 99) open level 101.
        assertFails("{{ " + String(repeating: "not ", count: 20_000) + "x }}", "chat template 1:400: \(nesting)")
        assertFails("{{ x" + String(repeating: ".a", count: 20_000) + " }}", "chat template 1:203: \(nesting)")
        // Each "{% if true %}" is 13 characters; inside 100 bodies, the 101st one's condition
        // 'true' (column 13 × 100 + 7) is the 101st level.
        assertFails(String(repeating: "{% if true %}", count: 20_000) + String(repeating: "{% endif %}", count: 20_000),
                    "chat template 1:1307: \(nesting)")
    }

    func testDeepTreeWithinTheSourceLimitStopsAtTheRenderNestingLimit() throws {
        // 45 parenthesized levels, each with a chain of 50 '+': within the source limit, but the
        // left-leaning tree is 45 × 50 levels deep, so rendering it stops at its own limit.
        var expr = "1"
        for _ in 0..<45 { expr = "(" + expr + String(repeating: " + 1", count: 50) + ")" }
        let t = try ChatTemplate("{{ " + expr + " }}")
        XCTAssertThrowsError(try t.render(messages: [ChatMessage](), addGenerationPrompt: false)) { e in
            let message = (e as? LoRAError)?.message ?? ""
            XCTAssertTrue(message.hasPrefix("chat template 1:"), message)
            XCTAssertTrue(message.hasSuffix(": rendering nests deeper than the limit of 500 levels (expressions, statements and macro calls)"), message)
        }
    }

    func testRealisticNestingStillParses() throws {
        let depth50 = "{{ " + String(repeating: "(", count: 50) + "1" + String(repeating: ")", count: 50) + " }}"
        XCTAssertEqual(try ChatTemplate(depth50).render(messages: [ChatMessage](), addGenerationPrompt: false), "1")
        let sum = "{{ 1" + String(repeating: " + 1", count: 60) + " }}"
        XCTAssertEqual(try ChatTemplate(sum).render(messages: [ChatMessage](), addGenerationPrompt: false), "61")
    }

    func testRealTemplatesRenderAOneMegabyteChat() throws {
        // 100 alternating messages of about 10 KB each, through every fixture template: all of
        // the text comes out (messages whole, as sampled), within the step and size limits.
        let filler = String(repeating: "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", count: 180)
        let contents = (0..<100).map { "message \($0): " + filler + "end \($0)." }
        let messages = contents.enumerated().map { ChatMessage(role: $0.offset % 2 == 0 ? "user" : "assistant", content: $0.element) }
        let folder = fixturesPath + "/chat_templates"
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".jinja") }.sorted()
        XCTAssertEqual(names.count, 12)
        for name in names {
            let t = try ChatTemplate(String(contentsOfFile: folder + "/" + name, encoding: .utf8))
            let out = try t.render(messages: messages, addGenerationPrompt: false, bosToken: "<s>", eosToken: "</s>")
            XCTAssertGreaterThan(out.utf8.count, contents.reduce(0) { $0 + $1.utf8.count }, name)
            for i in [0, 57, 99] { XCTAssertTrue(out.contains(contents[i]), "\(name): message \(i)") }
        }
    }

    func testSelfCallingMacroStopsAtTheRenderNestingLimit() {
        // Each call nests an output statement and a call expression (2 levels); the name 'f'
        // (column 19) is evaluated at level 2 × 249 + 3 = 501.
        assertFails("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
                    "chat template 1:19: rendering nests deeper than the limit of 500 levels (expressions, statements and macro calls)")
    }

    private let stringLimit = "a string would exceed the limit of 16 MiB"

    func testStringRepetitionStopsAtTheStringLimit() {
        assertFails("{{ 'x' * 1000000000 }}", "chat template 1:8: \(stringLimit)")
        assertFails("{{ 'x' * 9223372036854775807 }}", "chat template 1:8: \(stringLimit)")
        assertFails("{{ 'x' * 16777217 }}", "chat template 1:8: \(stringLimit)")
    }

    func testStringAtTheLimitRenders() throws {
        let out = try ChatTemplate("{{ 'x' * 16777216 }}").render(messages: [ChatMessage](), addGenerationPrompt: false)
        XCTAssertEqual(out.utf8.count, 16_777_216)
    }

    func testStringDoubledInALoopStopsAtTheStringLimit() {
        // 'ab' doubled: 2^25 bytes on the 24th doubling; the '~' is at column 32 + 24 + 20.
        assertFails("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
                    "chat template 1:76: \(stringLimit)")
        assertFails("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
                    "chat template 1:76: \(stringLimit)")
        // join and replace grow a string in one call.
        assertFails("{{ ['x' * 10000000, 'y' * 10000000]|join }}", "chat template 1:37: \(stringLimit)")
        assertFails("{{ ('x' * 1000000)|replace('x', 'xxxxxxxxxxxxxxxxxxxx') }}", "chat template 1:20: \(stringLimit)")
        assertFails("{{ ('x' * 1000000).replace('x', 'xxxxxxxxxxxxxxxxxxxx') }}", "chat template 1:27: \(stringLimit)")
        assertFails("{{ 'a\nb'|indent(100000000) }}", "chat template 2:4: \(stringLimit)")
    }

    func testBlockScopedSetDoesNotDouble() throws {
        // jinja2 scoping: each iteration's `set` is local, so `s` is 'abab' in every iteration.
        let t = try ChatTemplate("{% set s = 'ab' %}{% for i in range(64) %}{% set s = s ~ s %}{% endfor %}{{ s }}")
        XCTAssertEqual(try t.render(messages: [ChatMessage](), addGenerationPrompt: false), "ab")
    }

    private let listLimit = "a list would exceed the limit of 1048576 items"

    func testListGrowthStopsAtTheListLimit() {
        assertFails("{{ [1] * 1000000000 }}", "chat template 1:8: \(listLimit)")
        // Doubling [1] counts a step per item taken and made, so the step limit ends it first
        // (about 2^18 items), at the right-hand 'ns.l' (its '.' is at column 31 + 24 + 24).
        assertFails("{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
                    "chat template 1:79: rendering exceeds the limit of 1000000 steps")
        assertFails("{{ ('x' * 2000000)|list|length }}", "chat template 1:20: \(listLimit)")
    }

    func testHugeRangeIsRefusedBeforeItIsMade() {
        assertFails("{{ range(0, 9223372036854775807)|length }}",
                    "chat template 1:9: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).")
        assertFails("{{ range(-9223372036854775807, 9223372036854775807, 2)|length }}",
                    "chat template 1:9: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).")
    }

    func testNestedLoopsStopAtTheStepLimit() {
        assertFails("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                    "chat template 1:32: rendering exceeds the limit of 1000000 steps")
    }

    func testOutputStopsAtTheOutputLimit() {
        assertFails("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "chat template: output exceeds the limit of 16 MiB")
    }

    private let valueNesting = "values nest deeper than the limit of 100 levels"

    func testDeepOrSelfHoldingValuesStopAtTheValueNestingLimit() {
        // The list literal '[ns.l]' is at column 30 + 26 + 15.
        assertFails("{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}{% endfor %}",
                    "chat template 1:71: \(valueNesting)")
        // A namespace holding itself would print forever; the right-hand 'ns' is at column 30 + 15.
        assertFails("{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}", "chat template 1:44: \(valueNesting)")
        var input: Any = "leaf"
        for _ in 0..<200 { input = [input] }
        XCTAssertThrowsError(try ChatTemplate("{{ x }}").render(messages: [ChatMessage](), addGenerationPrompt: false, extra: ["x": input])) { e in
            XCTAssertEqual((e as? LoRAError)?.message, "chat template input nests deeper than the limit of 100 levels")
        }
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        XCTAssertThrowsError(try ChatTemplateJSON(parsing: deep)) { e in
            XCTAssertEqual((e as? LoRAError)?.message, "invalid JSON at offset 100: arrays and objects nest deeper than the limit of 100 levels")
        }
    }

    func testRaiseExceptionMessageIsOneLine() throws {
        let t = try ChatTemplate("{{ raise_exception('line one\\nline two\\t\\x1b[31m') }}")
        XCTAssertThrowsError(try t.render(messages: [ChatMessage](), addGenerationPrompt: false)) { e in
            XCTAssertEqual((e as? LoRAError)?.message, "line one\\nline two\\t\\u{1B}[31m")
        }
    }

    func testErrorsEchoingTemplateTextAreOneLine() {
        assertFails("{{ x|wordwrap }}{% if %}", "chat template 1:23: expected an expression, found '%}'")
        assertFails("{{ {'a\nb': 1}.c.d }}", "chat template 2:9: 'dict object' has no attribute 'c'")
        assertFails("{{ 'it\\nbroke' + 1 }}", "chat template 1:16: can only concatenate str (not \"int\") to str")
        assertFails("{{ [1, 2].index('a\\nb') }}", "chat template 1:16: 'a\\nb' is not in list")
    }
}
