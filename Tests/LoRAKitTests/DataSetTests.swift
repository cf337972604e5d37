import Foundation
import XCTest
@testable import LoRAKit

final class DataSetTests: XCTestCase {
    let tokenizer = try! Tokenizer.load(path: fixturesPath + "/tokenizers/smollm2")

    func write(_ lines: [String]) throws -> String {
        let path = try temporaryDirectory() + "/data.jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testTextRowsEndWithEOSAndPredictEveryTokenAfterTheFirst() throws {
        let set = try DataSet(path: try write([#"{"text": "Hello world"}"#]), tokenizer: tokenizer)
        XCTAssertEqual(set.format, .text)
        let e = set.examples[0]
        XCTAssertEqual(e.tokens, (tokenizer.encode("Hello world", addSpecialTokens: true) + [2]).map(Int32.init))
        XCTAssertEqual(e.isTarget, [false] + [Bool](repeating: true, count: e.tokens.count - 1))
        let batch = set.batches(size: 1, padId: 2)[0]
        XCTAssertEqual(batch.targets, Array(e.tokens.dropFirst()) + [Batch.ignoreIndex])
    }

    func testMaskPromptTrainsOnTheAssistantTurnOnly() throws {
        let row = #"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]}"#
        let set = try DataSet(path: try write([row]), tokenizer: tokenizer, maskPrompt: true)
        XCTAssertEqual(set.format, .chat)
        let e = set.examples[0]
        let template = try ChatTemplate(tokenizer.chatTemplate!)
        let promptText = try template.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
        let prompt = tokenizer.encode(promptText)
        let targets = e.tokens.indices.filter { e.isTarget[$0] }.map { Int(e.tokens[$0]) }
        // The assistant's turn as the template renders it (closed by <|im_end|> and a newline), then
        // the EOS that closes every example; nothing of the prompt.
        XCTAssertEqual(targets, Array(e.tokens[prompt.count...]).map(Int.init))
        XCTAssertEqual(tokenizer.decode(targets), "Hello there<|im_end|>\n<|im_end|>")
        XCTAssertEqual(e.isTarget[..<prompt.count].filter { $0 }.count, 0)
    }

    func testCompletionRowsMaskThePrompt() throws {
        let set = try DataSet(path: try write([#"{"prompt": "2+2=", "completion": "4"}"#]), tokenizer: tokenizer, maskPrompt: true)
        XCTAssertEqual(set.format, .completion)
        let e = set.examples[0]
        XCTAssertTrue(tokenizer.decode(e.tokens.indices.filter { e.isTarget[$0] }.map { Int(e.tokens[$0]) }).hasPrefix("4"))
    }

    func testTruncationIsCountedAndPaddingIsNeverATarget() throws {
        let set = try DataSet(path: try write([#"{"text": "one two three four five six seven"}"#, #"{"text": "hi"}"#]),
                              tokenizer: tokenizer, maxSequenceLength: 4)
        XCTAssertEqual(set.truncated, 1)
        XCTAssertEqual(set.examples[0].tokens.count, 4)
        let batch = set.batches(size: 2, padId: 2)[0]
        XCTAssertEqual(batch.seqLen, 4)
        let short = set.examples[1].tokens.count
        XCTAssertEqual(Array(batch.targets[(4 + short - 1)..<8]), [Int32](repeating: Batch.ignoreIndex, count: 5 - short))
    }

    func testAMaximumLengthBelowTwoIsRefused() throws {
        let path = try write([#"{"text": "Hello world"}"#])
        for length in [1, 0, -1] {
            XCTAssertThrowsError(try DataSet(path: path, tokenizer: tokenizer, maxSequenceLength: length)) {
                XCTAssertEqual("\($0)", "the maximum sequence length must be at least 2 (got \(length))")
            }
        }
    }

    func testMalformedRowsNameFileAndLine() throws {
        func refuse(_ lines: [String], _ words: String) throws {
            let path = try write(lines)
            XCTAssertThrowsError(try DataSet(path: path, tokenizer: tokenizer)) { e in
                XCTAssertTrue("\(e)".contains(words) && "\(e)".contains(path), "\(e)")
            }
        }
        try refuse([#"{"text": "ok"}"#, "{not json"], ":2: not a JSON object")
        try refuse([#"{"text": 3}"#], ":1: \"text\" must be a string")
        try refuse([#"{"text": "a"}"#, #"{"prompt": "p", "completion": "c"}"#], ":2: a completion row in a text data set")
        try refuse([#"{"messages": []}"#], ":1: \"messages\" must be")
        try refuse([#"{"other": 1}"#], ":1: a row needs")
        try refuse([""], "has no rows")
    }
}
