import Foundation
import XCTest
@testable import LoRAKit
@testable import LoRATokenizers

/// Chat templates rendered by our Jinja engine against transformers' own rendering
/// (Fixtures/chat_templates, written by scripts/make_chat_template_fixtures.py).
final class ChatTemplateTests: XCTestCase {
    private let folder = fixturesPath + "/chat_templates"

    private typealias Node = ChatTemplateJSON.Node

    private func load() throws -> Node {
        let text = try String(contentsOfFile: folder + "/expected.json", encoding: .utf8)
        return try ChatTemplateJSON(parsing: text).node
    }

    private func member(_ n: Node, _ key: String) -> Node? {
        if case .object(let pairs) = n { return pairs.first { $0.0 == key }?.1 }
        return nil
    }

    private func string(_ n: Node?) -> String? {
        if case .string(let s)? = n { return s }
        return nil
    }

    private func array(_ n: Node?) -> [Node] {
        if case .array(let a)? = n { return a }
        return []
    }

    private func pairs(_ n: Node?) -> [(String, Node)] {
        if case .object(let p)? = n { return p }
        return []
    }

    private func messages(_ n: Node) -> [ChatMessage] {
        array(n).map { ChatMessage(role: string(member($0, "role"))!, content: string(member($0, "content"))) }
    }

    private func extra(_ n: Node?) -> [String: Any] {
        Dictionary(uniqueKeysWithValues: pairs(n).map { ($0.0, ChatTemplateJSON(node: $0.1) as Any) })
    }

    /// Checks a render against a fixture entry: the same text, or a LoRAError where Python raised
    /// (with the same message for raise_exception and undefined-variable errors).
    private func check(_ entry: Node, _ label: String, _ render: () throws -> String) {
        if let expected = string(member(entry, "output")) {
            do {
                let got = try render()
                if got != expected {
                    XCTFail("\(label): rendered text differs\n--- expected ---\n\(expected.debugDescription)\n--- got ---\n\(got.debugDescription)")
                }
            } catch {
                XCTFail("\(label): threw \(error)")
            }
            return
        }
        let type = string(member(entry, "error_type")) ?? ""
        let message = string(member(entry, "error")) ?? ""
        do {
            let got = try render()
            XCTFail("\(label): expected \(type) '\(message)' but rendered \(got.debugDescription)")
        } catch let error as LoRAError {
            switch type {
            case "TemplateError":
                XCTAssertEqual(error.message, message, label)
            case "UndefinedError", "SecurityError", "ZeroDivisionError":
                XCTAssertTrue(error.message.contains(message), "\(label): '\(error.message)' does not contain '\(message)'")
            default:
                break
            }
        } catch {
            XCTFail("\(label): threw a non-LoRAError \(error)")
        }
    }

    func testTemplatesMatchTransformers() throws {
        let root = try load()
        let conversations = member(root, "conversations")!
        let cases = array(member(root, "cases"))
        XCTAssertGreaterThan(cases.count, 150)
        var templates: [String: ChatTemplate] = [:]
        var covered = Set<String>()
        for c in cases {
            let name = string(member(c, "template"))!
            if templates[name] == nil {
                templates[name] = try ChatTemplate(String(contentsOfFile: "\(folder)/\(name).jinja", encoding: .utf8))
            }
            covered.insert(name)
            let conversation = string(member(c, "conversation"))!
            let agp: Bool
            if case .bool(let b)? = member(c, "add_generation_prompt") { agp = b } else { agp = false }
            let label = "\(name) × \(conversation) (add_generation_prompt=\(agp), extra=\(pairs(member(c, "extra")).map { $0.0 }))"
            check(c, label) {
                try templates[name]!.render(messages: messages(member(conversations, conversation)!), addGenerationPrompt: agp,
                                            bosToken: string(member(c, "bos_token")), eosToken: string(member(c, "eos_token")),
                                            extra: extra(member(c, "extra")))
            }
        }
        XCTAssertEqual(covered, ["smollm2", "qwen2", "qwen2.5", "llama3", "llama3.1", "llama3.2", "mistral-v0.1", "mixtral-v0.1",
                                 "mistral-v0.2", "mistral-v0.3", "mistral-large-2407", "zephyr"])
    }

    /// Small templates, each pinning one jinja2 behaviour (whitespace control, scoping, Python
    /// printing, filters, errors), rendered by transformers' environment.
    func testSnippetsMatchJinja2() throws {
        let snippets = array(member(try load(), "snippets"))
        XCTAssertGreaterThan(snippets.count, 50)
        for s in snippets {
            let source = string(member(s, "template"))!
            check(s, "snippet \(source.debugDescription)") {
                try ChatTemplate(source).render(messages: [ChatMessage](), addGenerationPrompt: false, extra: extra(member(s, "context")))
            }
        }
    }

    // MARK: unsupported constructs

    private func assertError(_ source: String, mentions parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        do {
            let t = try ChatTemplate(source)
            _ = try t.render(messages: [ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true,
                             extra: ["d": ["a": 1], "x": "s"])
            XCTFail("\(source.debugDescription) rendered without error", file: file, line: line)
        } catch let e as LoRAError {
            for p in parts {
                XCTAssertTrue(e.message.contains(p), "'\(e.message)' does not mention \(p)", file: file, line: line)
            }
        } catch {
            XCTFail("not a LoRAError: \(error)", file: file, line: line)
        }
    }

    func testUnsupportedConstructsNameTheConstructAndPosition() {
        assertError("{% include 'other.jinja' %}", mentions: ["'{% include %}'", "1:4"])
        assertError("ok\n  {% extends 'base' %}", mentions: ["'{% extends %}'", "2:6"])
        assertError("{% call m() %}x{% endcall %}", mentions: ["'{% call %}'", "1:4"])
        assertError("{% with a = 1 %}{% endwith %}", mentions: ["'{% with %}'", "1:4"])
        assertError("{% frobnicate %}", mentions: ["unknown tag '{% frobnicate %}'", "1:4"])
        assertError("line one\n{{ x|format(1) }}", mentions: ["filter 'format'", "2:6"])
        assertError("{{ x|wordwrap }}", mentions: ["filter 'wordwrap'", "1:6"])
        assertError("{% if x is escaped %}{% endif %}", mentions: ["test 'escaped'", "1:12"])
        assertError("{% for m in messages recursive %}{% endfor %}", mentions: ["recursive", "1:22"])
        assertError("{{ f(*args) }}", mentions: ["'*' argument unpacking", "1:6"])
        assertError("{{ 'a %s' % x }}", mentions: ["'%' string formatting", "1:11"])
        assertError("{{ x.format(1) }}", mentions: ["string method 'format'", "1:12"])
        assertError("{{ x.zfill(5) }}", mentions: ["string method 'zfill'", "1:11"])
        assertError("{{ cycler(1, 2) }}", mentions: ["'cycler()'", "1:10"])
        assertError("{{ messages|map('upper') }}", mentions: ["printing a generator", "1:13"])
        assertError("{{ d.items }}", mentions: ["printing the function 'items'", "1:5"])
        assertError("{% if true %}never closed", mentions: ["'{% if %}'", "never closed", "1:4"])
        assertError("{{ 'unterminated }}", mentions: ["unterminated string", "1:4"])
        assertError("{{ 1 + }}", mentions: ["'}}'", "1:8"])
        assertError("{# no end", mentions: ["comment", "1:1"])
        assertError("{{ x is sameas 'a' }}", mentions: ["'sameas'", "1:9"])
    }

    func testUnsupportedFilterOnlyFailsWhenItsBranchRuns() throws {
        let t = try ChatTemplate("{% if tools %}{{ tools|wordwrap }}{% endif %}{{ messages[0].content }}")
        XCTAssertEqual(try t.render(messages: [ChatMessage(role: "user", content: "plain")], addGenerationPrompt: false), "plain")
        XCTAssertThrowsError(try t.render(messages: [ChatMessage(role: "user", content: "x")], addGenerationPrompt: false,
                                          extra: ["tools": ["t"]])) { e in
            XCTAssertEqual((e as? LoRAError)?.message, "chat template 1:24: unsupported filter 'wordwrap'")
        }
    }

    func testRaiseExceptionBecomesLoRAErrorWithItsMessage() throws {
        let t = try ChatTemplate("{% if messages[0].role != 'system' %}{{ raise_exception('A system message is required!') }}{% endif %}ok")
        XCTAssertThrowsError(try t.render(messages: [ChatMessage(role: "user", content: "x")], addGenerationPrompt: false)) { e in
            XCTAssertEqual((e as? LoRAError)?.message, "A system message is required!")
        }
        XCTAssertEqual(try t.render(messages: [ChatMessage(role: "system", content: "x")], addGenerationPrompt: false), "ok")
    }

    // MARK: expressions and filters against values computed by hand

    private func r(_ source: String, _ extra: [String: Any] = [:]) throws -> String {
        try ChatTemplate(source).render(messages: [ChatMessage](), addGenerationPrompt: false, extra: extra)
    }

    func testArithmeticAndComparisons() throws {
        XCTAssertEqual(try r("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 6 / 3 }} {{ 2 ** 8 }}"), "3 -4 1 2 3.5 2.0 256")
        XCTAssertEqual(try r("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'a' + 'b' ~ 3 }} {{ 'ab' * 2 }}"), "7 9 ab3 abab")
        XCTAssertEqual(try r("{{ 0.1 + 0.2 }} {{ 1e-7 }} {{ 2.50 }} {{ 1e16 }} {{ 123.0 }}"), "0.30000000000000004 1e-07 2.5 1e+16 123.0")
        XCTAssertEqual(try r("{{ 1 < 2 < 3 }} {{ 2 < 1 < 3 }} {{ 'b' > 'a' }} {{ 1 == 1.0 }} {{ 'x' != 'y' }}"), "True False True True True")
        XCTAssertEqual(try r("{{ 'ell' in 'hello' }} {{ 3 not in [1, 2] }} {{ 'k' in {'k': 0} }}"), "True True True")
        XCTAssertEqual(try r("{{ none or 'd' }} {{ 'a' and 'b' }} {{ not '' }} {{ 'y' if 1 > 2 else 'n' }}"), "d b True n")
    }

    func testStringsSlicesAndMethods() throws {
        XCTAssertEqual(try r("{{ s[1:] }}|{{ s[::-1] }}|{{ s[-2:] }}|{{ s[0] }}|{{ s|length }}", ["s": "héllo"]), "éllo|olléh|lo|h|5")
        XCTAssertEqual(try r("{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s|trim }}", ["s": " \t x y \n"]), "x y|x y \n| \t x y|x y")
        XCTAssertEqual(try r("{{ 'a,b'.split(',') }} {{ 'Hi There'.lower() }} {{ 'hi'.upper() }} {{ 'ab'.startswith('a') }} {{ 'ab'.endswith('a') }}"),
                       "['a', 'b'] hi there HI True False")
        XCTAssertEqual(try r("{{ 'big cat'.title() }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'big cat'|capitalize }}"), "Big Cat bba Big cat")
        XCTAssertEqual(try r("{{ \"it's\" }} {{ ['it\\'s', 'x\\ny'] }}"), "it's [\"it's\", 'x\\ny']")
    }

    func testFilters() throws {
        XCTAssertEqual(try r("{{ [3, 1, 2]|sort|join(',') }} {{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ [1, 2]|length }}"), "1,2,3 1 3 2")
        XCTAssertEqual(try r("{{ missing|default('dflt') }} {{ ''|default('e', true) }} {{ 'x'|default('y') }}"), "dflt e x")
        XCTAssertEqual(try r("{{ 'a-b'|replace('-', '+') }} {{ 4|string ~ 2 }} {{ '12'|int + 1 }} {{ 'x'|int }} {{ 3|float }}"), "a+b 42 13 0 3.0")
        XCTAssertEqual(try r("{{ m|selectattr('role', 'equalto', 'user')|map(attribute='c')|list }}",
                             ["m": [["role": "user", "c": "1"], ["role": "bot", "c": "2"], ["role": "user", "c": "3"]]]), "['1', '3']")
        XCTAssertEqual(try r("{% for k, v in d|dictsort %}{{ k }}{{ v }}{% endfor %}", ["d": ["b": 2, "a": 1]]), "a1b2")
        XCTAssertEqual(try r("{{ d|tojson }}", ["d": ["a": [1, 2.5, true, "é\"\n"] as [Any], "b": NSNull()]]),
                       "{\"a\": [1, 2.5, true, \"é\\\"\\n\"], \"b\": null}")
        XCTAssertEqual(try r("{{ d|tojson(indent=2) }}", ["d": ["k": [1]]]), "{\n  \"k\": [\n    1\n  ]\n}")
        let ordered = try ChatTemplateJSON(parsing: #"{"z": 1, "a": {"y": [], "b": {}}}"#)
        XCTAssertEqual(try r("{{ d|tojson }} {{ d|tojson(sort_keys=true) }}", ["d": ordered]),
                       #"{"z": 1, "a": {"y": [], "b": {}}} {"a": {"b": {}, "y": []}, "z": 1}"#)
    }

    func testStatementsAndWhitespace() throws {
        XCTAssertEqual(try r("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6")
        XCTAssertEqual(try r("{% for x in 'ab' %}{{ loop.index }}{{ x }}{{ '-' if not loop.last }}{% else %}none{% endfor %}"), "1a-2b")
        XCTAssertEqual(try r("{% for x in [] %}{{ x }}{% else %}none{% endfor %}"), "none")
        XCTAssertEqual(try r("{% if a %}A{% elif b %}B{% else %}C{% endif %}", ["b": true]), "B")
        // trim_blocks removes the newline after a tag, lstrip_blocks the indentation before one.
        XCTAssertEqual(try r("<\n  {% if true %}\n  in\n  {% endif %}\n>"), "<\n  in\n>")
        XCTAssertEqual(try r("a  {{- 'b' -}}  \n c"), "abc")
        XCTAssertEqual(try r("{#- comment -#}\n  x {# inline #}y"), "x y")
    }

    func testAPIInputs() throws {
        let t = try ChatTemplate("{% for m in messages %}{{ m.role }}:{{ m.content if m.content is defined else '<none>' }};{% endfor %}"
                                 + "{{ bos_token is defined }} {{ eos_token }} {{ tools is none }} {{ add_generation_prompt }}")
        let typed = try t.render(messages: [ChatMessage(role: "user", content: "a"), ChatMessage(role: "assistant", content: nil)],
                                 addGenerationPrompt: true, bosToken: nil, eosToken: "</s>")
        XCTAssertEqual(typed, "user:a;assistant:<none>;False </s> True True")
        let untyped = try t.render(messages: [["role": "user", "content": "a"], ["role": "assistant", "content": NSNull()]],
                                   addGenerationPrompt: false, bosToken: "<s>", eosToken: "</s>")
        XCTAssertEqual(untyped, "user:a;assistant:<none>;True </s> True False")
        // Message keys keep role, then content, then the others sorted.
        let json = try ChatTemplate("{{ messages[0]|tojson }}")
            .render(messages: [["tool_calls": [1], "content": "c", "role": "r", "name": "n"]], addGenerationPrompt: false)
        XCTAssertEqual(json, #"{"role": "r", "content": "c", "name": "n", "tool_calls": [1]}"#)
        XCTAssertThrowsError(try t.render(messages: [["role": Date()]], addGenerationPrompt: false))
        // Foundation JSON values keep their types (booleans are not integers).
        let decoded = try JSONSerialization.jsonObject(with: Data(#"{"b": true, "i": 1, "f": 1.5, "n": null, "s": "x"}"#.utf8))
        XCTAssertEqual(try r("{{ d.b }} {{ d.b is boolean }} {{ d.i }} {{ d.i is integer }} {{ d.f }} {{ d.n is none }} {{ d.s }}", ["d": decoded]),
                       "True True 1 True 1.5 True x")
        XCTAssertEqual(try r("{{ n is none }} {{ o }} {{ c|tojson }}", ["n": Optional<Int>.none as Any, "o": Optional(3) as Any, "c": [1.0, 2] as [Double]]),
                       "True 3 [1.0, 2.0]")
        XCTAssertThrowsError(try r("{{ t }}", ["t": (1, 2)]))
    }

    func testSmolLM2TemplateFromGGUFMetadata() throws {
        let t = try ChatTemplate(String(contentsOfFile: folder + "/smollm2.jinja", encoding: .utf8))
        let out = try t.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
        XCTAssertEqual(out, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    }
}
