import XCTest
@testable import LoRAKit

/// Loading and writing model and adapter folders, and refusing bad ones in one sentence.
final class ModelFilesTests: XCTestCase {
    let llama = fixturesPath + "/llama_tied"

    func copyAdapter() throws -> String {
        let dir = try temporaryDirectory()
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            try FileManager.default.copyItem(atPath: llama + "/adapter/" + f, toPath: dir + "/" + f)
        }
        return dir
    }

    func assertRefused(_ body: () throws -> Void, mentions words: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            XCTAssertTrue(e is LoRAError, "\(e)", file: file, line: line)
            for w in words { XCTAssertTrue("\(e)".contains(w), "'\(e)' lacks '\(w)'", file: file, line: line) }
        }
    }

    func testPickledAdapterIsRefused() throws {
        let dir = try copyAdapter()
        try FileManager.default.moveItem(atPath: dir + "/adapter_model.safetensors", toPath: dir + "/adapter_model.bin")
        let model = try LlamaModel.load(folder: llama + "/model")
        assertRefused({ _ = try LoRAAdapter.load(from: dir, into: model) }, mentions: ["adapter_model.bin", "pickle"])
    }

    func testAdapterWithWrongShapeIsRefusedNamingTheTensor() throws {
        let dir = try copyAdapter()
        // Same tensors, but a config that asks for rank 2: every A no longer fits.
        var json = try String(contentsOfFile: dir + "/adapter_config.json", encoding: .utf8)
        json = json.replacingOccurrences(of: "\"r\": 4", with: "\"r\": 2")
        try json.write(toFile: dir + "/adapter_config.json", atomically: true, encoding: .utf8)
        let model = try LlamaModel.load(folder: llama + "/model")
        assertRefused({ _ = try LoRAAdapter.load(from: dir, into: model) },
                      mentions: ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "[4, 64]", "[2, 64]"])
        XCTAssertTrue(model.sites.allSatisfy { $0.linear.adapter == nil }, "a refused adapter leaves the model untouched")
    }

    func testAdapterForAnotherModelIsRefused() throws {
        let model = try LlamaModel.load(folder: fixturesPath + "/mistral_layers/model")  // kv heads 1: v_proj out is 16
        assertRefused({ _ = try LoRAAdapter.load(from: llama + "/adapter", into: model) }, mentions: ["has shape"])
    }

    func testUnsupportedArchitectureIsRefusedByName() throws {
        let dir = try temporaryDirectory()
        try #"{"architectures": ["GPT2LMHeadModel"], "n_embd": 64}"#.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        assertRefused({ _ = try LlamaModel.load(folder: dir) }, mentions: ["GPT2LMHeadModel", "not supported"])
        assertRefused({ _ = try LlamaModel.load(folder: dir + "/missing") }, mentions: ["does not exist"])
    }

    func testMergedFolderReloadsWithTheMergedOutputs() throws {
        let model = try LlamaModel.load(folder: llama + "/model")
        let adapter = try LoRAAdapter.load(from: llama + "/adapter", into: model)
        let batch = Batch(batchSize: 1, seqLen: 5, inputIds: [1, 7, 9, 4, 2], labels: [1, 7, 9, 4, 2])
        let adapted = try model.logits(batch).array
        try adapter.merge()
        let out = try temporaryDirectory() + "/merged"
        try model.saveHuggingFace(to: out)
        let reloaded = try LlamaModel.load(folder: out)
        XCTAssertTrue(reloaded.headIsTied)
        XCTAssertLessThan(relativeError(try reloaded.logits(batch).array, adapted), 1e-5)
        assertRefused({ try model.saveHuggingFace(to: out) }, mentions: ["already exists"])
        // bf16 keeps 8 bits of mantissa: outputs agree to about 1e-2.
        let half = out + "-bf16"
        try model.saveHuggingFace(to: half, dtype: .bf16)
        XCTAssertLessThan(relativeError(try LlamaModel.load(folder: half).logits(batch).array, adapted), 3e-2)
        let names = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        XCTAssertEqual(names, ["config.json", "model.safetensors"])
    }

    func testOutOfVocabularyTokenIsRefused() throws {
        let model = try LlamaModel.load(folder: llama + "/model")
        assertRefused({ _ = try model.logits(Batch(batchSize: 1, seqLen: 2, inputIds: [1, 256], labels: [1, 256])) },
                      mentions: ["256", "vocabulary"])
    }
}
