import Foundation
import LoRAFuzzHarnesses
import XCTest

/// The fuzz harnesses (scripts/fuzz.sh) replayed in-process without sanitizers: the inputs the fuzzers
/// found (Fixtures/fuzz/HARNESS/NAME) must now be refused with their LoRAError, and the seeds
/// (Fuzz/Seeds/HARNESS) must reach their readers.
final class FuzzRegressionTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path

    /// Each finding and the sentence it must now get. A file here crashed the process before its fix.
    static let findings: [String: [String: String]] = [
        "tokenizer": [
            "negative-vocab-id.json": "tokenizer.json: vocab entry \"a\" has id -1, outside 0...16777215",
            "huge-vocab-id.json": "tokenizer.json: vocab entry \"b\" has id 4294967296, outside 0...16777215",
            "huge-special-id.json": "tokenizer.json: BertProcessing cls has id 3000000000, outside 0...16777215",
            "special-id-outside-vocab.json": "tokenizer.json: special token id 5 is outside the vocabulary of 1 tokens",
            "huge-padding.json": "tokenizer.json: padding length must be an integer from 1 to 1048576",
        ],
    ]

    /// Seeds that are real files a reader refuses, and why: the rest must be accepted.
    static let refusedSeeds: [String: String] = [
        "gguf/metadata.gguf": "GGUF file fuzz.gguf has no metadata key llama.attention.head_count.",
        "gguf/smollm2_head.gguf": "GGUF file fuzz.gguf declares an array of 49152 STRING values for metadata key tokenizer.ggml.tokens, more than its remaining 64429 bytes can hold.",
        "gguf/sp_bpe_vocab.gguf": "There is no tensor named blk.0.attn_norm.weight in GGUF file fuzz.gguf.",
        "chat-template/mistral-v0.1.jinja": "Conversation roles must alternate user/assistant/user/assistant/...",
        "chat-template/mixtral-v0.1.jinja": "Conversation roles must alternate user/assistant/user/assistant/...",
        "yaml-config/anchor.yaml": "config.yaml: unknown setting \"base\" (the settings are the long option names, e.g. batch_size)",
    ]

    static func files(in folder: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    static func run(_ harness: FuzzHarness, _ path: String) throws -> FuzzHarness.Outcome {
        harness.run(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    func testEveryFindingIsRefusedWithItsSentence() throws {
        for harness in FuzzHarness.all {
            let folder = fixturesPath + "/fuzz/" + harness.name
            let expected = Self.findings[harness.name] ?? [:]
            XCTAssertEqual(Self.files(in: folder), expected.keys.sorted(), harness.name)
            for (name, message) in expected {
                XCTAssertEqual(try Self.run(harness, folder + "/" + name), .refused(message), "\(harness.name)/\(name)")
            }
        }
    }

    func testSeedsReachTheirReaders() throws {
        var seen: Set<String> = []
        for harness in FuzzHarness.all {
            let names = Self.files(in: Self.repository + "/Fuzz/Seeds/" + harness.name)
            XCTAssertFalse(names.isEmpty, "\(harness.name) has no seeds")
            for name in names {
                let key = harness.name + "/" + name
                seen.insert(key)
                let outcome = try Self.run(harness, Self.repository + "/Fuzz/Seeds/" + key)
                XCTAssertEqual(outcome, Self.refusedSeeds[key].map { .refused($0) } ?? .accepted, key)
            }
        }
        XCTAssertTrue(seen.isSuperset(of: Self.refusedSeeds.keys), "a listed seed is missing")
    }
}
