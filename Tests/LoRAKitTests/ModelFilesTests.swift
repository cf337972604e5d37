import XCTest
@testable import LoRAKit
@testable import LoRAFormats

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
        assertRefused({ _ = try Adapter.load(from: dir, into: model) }, mentions: ["adapter_model.bin", "pickle"])
    }

    func testAdapterWithWrongShapeIsRefusedNamingTheTensor() throws {
        let dir = try copyAdapter()
        // Same tensors, but a config that asks for rank 2: every A no longer fits.
        var json = try String(contentsOfFile: dir + "/adapter_config.json", encoding: .utf8)
        json = json.replacingOccurrences(of: "\"r\": 4", with: "\"r\": 2")
        try json.write(toFile: dir + "/adapter_config.json", atomically: true, encoding: .utf8)
        let model = try LlamaModel.load(folder: llama + "/model")
        assertRefused({ _ = try Adapter.load(from: dir, into: model) },
                      mentions: ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "[4, 64]", "[2, 64]"])
        XCTAssertTrue(model.sites.allSatisfy { $0.linear.adapter == nil }, "a refused adapter leaves the model untouched")
    }

    func testAdapterForAnotherModelIsRefused() throws {
        let model = try LlamaModel.load(folder: fixturesPath + "/mistral_layers/model")  // kv heads 1: v_proj out is 16
        assertRefused({ _ = try Adapter.load(from: llama + "/adapter", into: model) }, mentions: ["has shape"])
    }

    func testUnsupportedArchitectureIsRefusedByName() throws {
        let dir = try temporaryDirectory()
        try #"{"architectures": ["GPT2LMHeadModel"], "n_embd": 64}"#.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        assertRefused({ _ = try LlamaModel.load(folder: dir) }, mentions: ["GPT2LMHeadModel", "not supported"])
        assertRefused({ _ = try LlamaModel.load(folder: dir + "/missing") }, mentions: ["does not exist"])
    }

    func testMergedFolderReloadsWithTheMergedOutputs() throws {
        // A model folder with tokenizer files beside the weights: the export copies them.
        let source = try temporaryDirectory() + "/model"
        try FileManager.default.copyItem(atPath: llama + "/model", toPath: source)
        try #"{"model": {"type": "BPE"}}"#.write(toFile: source + "/tokenizer.json", atomically: true, encoding: .utf8)
        try "{}".write(toFile: source + "/tokenizer_config.json", atomically: true, encoding: .utf8)
        let model = try LlamaModel.load(folder: source)
        let adapter = try Adapter.load(from: llama + "/adapter", into: model)
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
        XCTAssertEqual(names, ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
        XCTAssertEqual(try String(contentsOfFile: out + "/tokenizer.json", encoding: .utf8), #"{"model": {"type": "BPE"}}"#)
        // The fixture's config.json has bos_token_id 1 and eos_token_id 2 and no generation_config.json.
        XCTAssertEqual(try jsonObject(out + "/generation_config.json") as NSDictionary, ["bos_token_id": 1, "eos_token_id": 2])
    }

    /// A merged folder carries the base's generation_config.json whole and the bos/eos ids in both JSON
    /// files; where the base's JSON files do not state them, they come from its tokenizer files.
    func testMergedFolderCarriesGenerationConfigAndTokenIds() throws {
        let tiny = fixturesPath + "/tiny_chat"
        let out = try temporaryDirectory() + "/merged"
        try LlamaModel.load(folder: tiny).saveHuggingFace(to: out)
        XCTAssertEqual(try jsonObject(out + "/generation_config.json") as NSDictionary, try jsonObject(tiny + "/generation_config.json") as NSDictionary)
        let config = try jsonObject(out + "/config.json")
        XCTAssertEqual(config["bos_token_id"] as? Int, 1)
        XCTAssertEqual(config["eos_token_id"] as? Int, 2)

        // Without them in config.json and no generation_config.json: tokenizer_config.json names bos
        // "<|im_start|>" and eos "<|im_end|>", which tokenizer.json's added_tokens number 1 and 2.
        let bare = try temporaryDirectory() + "/bare"
        try FileManager.default.copyItem(atPath: tiny, toPath: bare)
        try FileManager.default.removeItem(atPath: bare + "/generation_config.json")
        var bareConfig = try jsonObject(bare + "/config.json")
        bareConfig["bos_token_id"] = nil
        bareConfig["eos_token_id"] = nil
        try JSONSerialization.data(withJSONObject: bareConfig).write(to: URL(fileURLWithPath: bare + "/config.json"))
        let bareOut = try temporaryDirectory() + "/bare-merged"
        try LlamaModel.load(folder: bare).saveHuggingFace(to: bareOut)
        XCTAssertEqual(try jsonObject(bareOut + "/generation_config.json") as NSDictionary, ["bos_token_id": 1, "eos_token_id": 2])
        let written = try jsonObject(bareOut + "/config.json")
        XCTAssertEqual(written["bos_token_id"] as? Int, 1)
        XCTAssertEqual(written["eos_token_id"] as? Int, 2)
    }

    private func jsonObject(_ path: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any], path)
    }

    func testOutOfVocabularyTokenIsRefused() throws {
        let model = try LlamaModel.load(folder: llama + "/model")
        assertRefused({ _ = try model.logits(Batch(batchSize: 1, seqLen: 2, inputIds: [1, 256], labels: [1, 256])) },
                      mentions: ["256", "vocabulary"])
    }
}

final class ShardedModelTests: XCTestCase {
    /// A model split over two shards listed in model.safetensors.index.json, one shard F16 and one
    /// BF16, loads with every weight equal to the original rounded to that type.
    func testShardedF16AndBF16CheckpointLoadsExactly() throws {
        let src = fixturesPath + "/llama_tied/model"
        let original = try SafetensorsFile(path: src + "/model.safetensors")
        let dir = try temporaryDirectory()
        try FileManager.default.copyItem(atPath: src + "/config.json", toPath: dir + "/config.json")
        var f16 = SafetensorsWriter(), bf16 = SafetensorsWriter()
        var map: [String: String] = [:]
        for name in original.names {
            let info = original.tensors[name]!
            let values = try original.floats(name)
            if name.contains("layers.1.") {
                bf16.add(name, shape: info.shape, floats: values, as: .BF16); map[name] = "model-00002-of-00002.safetensors"
            } else {
                f16.add(name, shape: info.shape, floats: values, as: .F16); map[name] = "model-00001-of-00002.safetensors"
            }
        }
        try f16.write(to: dir + "/model-00001-of-00002.safetensors")
        try bf16.write(to: dir + "/model-00002-of-00002.safetensors")
        let index = try JSONSerialization.data(withJSONObject: ["metadata": [String: Any](), "weight_map": map])
        try index.write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))

        let model = try LlamaModel.load(folder: dir)
        let loaded = Dictionary(uniqueKeysWithValues: model.namedWeights())
        XCTAssertEqual(Set(loaded.keys), Set(original.names))
        for name in original.names {
            let expected = try original.floats(name).map { v in
                name.contains("layers.1.") ? bfloat16BitsToFloat(floatToBFloat16Bits(v)) : float16BitsToFloat(floatToFloat16Bits(v))
            }
            XCTAssertEqual(loaded[name]!.array, expected, name)
        }
    }

    func testMissingShardIsRefused() throws {
        let dir = try temporaryDirectory()
        try FileManager.default.copyItem(atPath: fixturesPath + "/llama_tied/model/config.json", toPath: dir + "/config.json")
        try #"{"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}}"#
            .write(toFile: dir + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try LlamaModel.load(folder: dir)) { e in
            XCTAssertTrue("\(e)".contains("model-00001-of-00002.safetensors"), "\(e)")
        }
    }
}

final class LoRAInitTests: XCTestCase {
    /// PEFT's inits: kaiming-uniform A within ±1/√in and B zero (a no-op adapter), gaussian A with
    /// std 1/r, and "false" leaving B non-zero.
    func testInitializations() {
        var r = SeededRandom(seed: 9)
        let k = LoRA(inFeatures: 400, outFeatures: 30, rank: 8, alpha: 16, initialization: .kaiming, random: &r)
        let bound = 1 / Float(400).squareRoot()
        XCTAssertLessThanOrEqual(k.a.value.array.map(abs).max()!, bound)
        XCTAssertGreaterThan(k.a.value.array.map(abs).max()!, 0.99 * bound)
        XCTAssertEqual(k.b.value.array, [Float](repeating: 0, count: 240))
        XCTAssertEqual(k.scaling, 2)
        let g = LoRA(inFeatures: 400, outFeatures: 30, rank: 8, alpha: 16, rsLoRA: true, initialization: .gaussian, random: &r)
        let values = g.a.value.array.map(Double.init)
        let std = (values.map { $0 * $0 }.reduce(0, +) / Double(values.count)).squareRoot()
        XCTAssertEqual(std, 1.0 / 8, accuracy: 0.01)  // 3200 samples: the estimate's std is about 0.0016
        XCTAssertEqual(g.scaling, 16 / Float(8).squareRoot(), accuracy: 1e-6)
        let none = LoRA(inFeatures: 400, outFeatures: 30, rank: 8, alpha: 16, initialization: .none, random: &r)
        XCTAssertGreaterThan(none.b.value.array.map(abs).max()!, 0)
        XCTAssertLessThanOrEqual(none.b.value.array.map(abs).max()!, 1 / Float(8).squareRoot())
    }
}
