import Foundation
import LoRAFuzzHarnesses
import XCTest
@testable import LoRAKit
@testable import LoRAFormats
@testable import LoRATokenizers
@testable import LoRACommandLine

/// The fuzz harnesses (scripts/fuzz.sh) replayed in-process without sanitizers: the inputs the fuzzers
/// found (Fixtures/fuzz/HARNESS/NAME) must now be refused with their LoRAError, and the seeds
/// (Fuzz/Seeds/HARNESS) must reach their readers.
final class FuzzRegressionTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path

    /// Each finding and the sentence it must now get (nil: accepted). A file here crashed or hung the process
    /// before its fix.
    static let findings: [String: [String: String?]] = [
        "tokenizer": [
            "negative-vocab-id.json": "tokenizer.json: vocab entry \"a\" has id -1, outside 0...16777215",
            "huge-vocab-id.json": "tokenizer.json: vocab entry \"b\" has id 4294967296, outside 0...16777215",
            "huge-special-id.json": "tokenizer.json: BertProcessing cls has id 3000000000, outside 0...16777215",
            "special-id-outside-vocab.json": "tokenizer.json: special token id 5 is outside the vocabulary of 1 tokens",
            "huge-padding.json": "tokenizer.json: padding length must be an integer from 1 to 1048576",
            "regex-deep-groups.json": "tokenizer.json: Split pre-tokenizer: regex nests groups or classes more than 100 deep",
            "regex-deep-classes.json": "tokenizer.json: Split pre-tokenizer: regex nests groups or classes more than 100 deep",
            "regex-huge-count.json": #"tokenizer.json: Split pre-tokenizer: regex "a{99999999999999999999999}" is not supported"#,
            "regex-huge-hex.json": #"tokenizer.json: Split pre-tokenizer: regex "\\x{FFFFFFFFFFFF}" is not supported"#,
            "regex-exponential.json": nil,  // (.|.)*x backtracks 2^n ways; the search budget stops it
            "regex-trailing-escape.json": #"tokenizer.json: Split pre-tokenizer: regex "[a-\\" is not supported"#,
        ],
        "model-config": [
            "heads-zero.json": "config.json: num_attention_heads is 0; it must be between 1 and 4096",
            "kv-heads-zero.json": "config.json: num_key_value_heads is 0; it must be between 1 and 4",
            "parameter-count-overflow.json": #"config.json: "intermediate_size" must be an integer"#,
        ],
        "adapter-config": [
            "rank-pattern-zero.json": #"adapter_config.json: rank_pattern["v_proj"] must be positive and at most 8192 (got 0)"#,
        ],
        // Yams's base-60 integer arithmetic trapped on overflow; the harness reads every setting with try?, so
        // the file is accepted, and `testOverflowingYAMLIntegerIsNotAnInteger` checks the sentence.
        "yaml-config": [
            "sexagesimal-overflow.yaml": nil,
        ],
    ]

    func testOverflowingYAMLIntegerIsNotAnInteger() throws {
        let file = try ConfigFile(path: fixturesPath + "/fuzz/yaml-config/sexagesimal-overflow.yaml", allowedKeys: trainSettingNames)
        XCTAssertThrowsError(try file.int("iters")) {
            XCTAssertTrue("\($0)".hasSuffix("sexagesimal-overflow.yaml: iters must be an integer"), "\($0)")
        }
        let plain = try temporaryDirectory() + "/plain.yaml"
        try "iters: 1_000\nbatch_size: 0x10\n".write(toFile: plain, atomically: true, encoding: .utf8)
        let ok = try ConfigFile(path: plain, allowedKeys: trainSettingNames)
        XCTAssertEqual(try ok.int("iters"), 1000)
        XCTAssertEqual(try ok.int("batch-size"), 16)
    }

    /// Seeds that are real files a reader refuses, and why: the rest must be accepted.
    static let refusedSeeds: [String: String] = [
        "gguf/metadata.gguf": "GGUF file fuzz.gguf has no metadata key llama.attention.head_count.",
        "gguf/smollm2_head.gguf": "GGUF file fuzz.gguf declares an array of 49152 STRING values for metadata key tokenizer.ggml.tokens, more than its remaining 64429 bytes can hold.",
        "gguf-header/smollm2_head.gguf": "GGUF file fuzz.gguf declares an array of 49152 STRING values for metadata key tokenizer.ggml.tokens, more than its remaining 64429 bytes can hold.",
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
                XCTAssertEqual(try Self.run(harness, folder + "/" + name), message.map { .refused($0) } ?? .accepted, "\(harness.name)/\(name)")
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

    /// A search that would backtrack exponentially stops after its budget of steps, finding nothing more.
    func testABacktrackingSearchStopsAtItsBudget() throws {
        let regex = try BacktrackingRegex(pattern: "(.|.)*x")
        let text = [UInt32](repeating: 0x61, count: 60) + [0x78]  // 60 × "a", then "x"
        var stack: [BacktrackingRegex.Backtrack] = []
        // Without the budget the first attempt alone would take about 2^60 steps.
        XCTAssertEqual(text.withUnsafeBufferPointer { regex.matches(in: $0, 0..<60, stack: &stack) }, [])
        // Within budget the same pattern matches as Oniguruma does: the whole text up to the x.
        XCTAssertEqual(text.withUnsafeBufferPointer { regex.matches(in: $0, 50..<61, stack: &stack) }, [50..<61])
    }
}
