import Foundation
import XCTest
@testable import LoRAKit

/// Vocabularies stored in GGUF metadata against transformers' reading of the same file.
final class GGUFTokenizerTests: XCTestCase {
    /// A SentencePiece ("llama") vocabulary: tokens, scores and types only, merges derived from the
    /// scores (scripts/make_spm_gguf_fixture.py): ids equal transformers' GGUF tokenizer.
    func testSentencePieceVocabularyMatchesTransformers() throws {
        let dir = fixturesPath + "/tokenizers"
        let tokenizer = try Tokenizer.load(gguf: GGUFFile(path: dir + "/sp_bpe/vocab.gguf"))
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/sp_bpe/vocab_gguf_expected.json"))
        struct Expected: Decodable { let whole: [Int]; let whole_no_special: [Int]; let lines: [[Int]]; let decoded: String }
        let expected = try JSONDecoder().decode(Expected.self, from: data)
        let text = try String(contentsOfFile: dir + "/text.txt", encoding: .utf8)
        XCTAssertEqual(tokenizer.encode(text, addSpecialTokens: true), expected.whole)
        XCTAssertEqual(tokenizer.encode(text), expected.whole_no_special)
        XCTAssertEqual(expected.whole.first, 1, "BOS is added by default for SentencePiece vocabularies")
        let lines = text.unicodeScalars.split(separator: "\n").map { String(String.UnicodeScalarView($0)) }
        XCTAssertEqual(lines.count, expected.lines.count)
        for (line, ids) in zip(lines, expected.lines) { XCTAssertEqual(tokenizer.encode(line), ids, line) }
        XCTAssertEqual(tokenizer.decode(expected.whole_no_special), expected.decoded)
    }

    func testUnsupportedVocabularyIsRefusedByName() throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("tokenizer.ggml.model", .string("bert"))
        w.set("tokenizer.ggml.tokens", .array(.string(["a", "b"])))
        let path = try temporaryDirectory() + "/v.gguf"
        try w.write(to: path)
        XCTAssertThrowsError(try Tokenizer.load(gguf: GGUFFile(path: path))) { e in XCTAssertTrue("\(e)".contains("\"bert\""), "\(e)") }
    }
}
