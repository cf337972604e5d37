import Foundation
import XCTest
@testable import LoRAKit

/// `lora inspect`'s library side: AdapterSummary and ModelSummary, checked against independent
/// references (ΔW formed explicitly, parameter counts from shapes and configs, the gguf package).
final class InspectTests: XCTestCase {
    /// s·‖B·A‖_F with B·A formed element by element (plain loops, in Double).
    func explicitDeltaNorm(a: [Float], b: [Float], rank: Int, inFeatures: Int, outFeatures: Int, scaling: Double) -> Double {
        var sum = 0.0
        for o in 0..<outFeatures {
            for i in 0..<inFeatures {
                var w = 0.0
                for k in 0..<rank { w += Double(b[o * rank + k]) * Double(a[k * inFeatures + i]) }
                sum += (scaling * w) * (scaling * w)
            }
        }
        return sum.squareRoot()
    }

    /// Checks every site of an adapter folder against its tensors: shapes, parameter count, ‖ΔW‖.
    func checkSites(_ summary: AdapterSummary, scaling: (String, Int) -> Double) throws {
        let file = try SafetensorsFile(path: summary.folder + "/adapter_model.safetensors")
        for site in summary.sites {
            let key = Adapter.keyPrefix + site.path
            let a = try file.info(key + ".lora_A.weight"), b = try file.info(key + ".lora_B.weight")
            XCTAssertEqual(site.shapeA, a.shape, site.path)
            XCTAssertEqual(site.shapeB, b.shape, site.path)
            XCTAssertEqual(site.rank, a.shape[0], site.path)
            XCTAssertEqual(site.parameterCount, a.shape[0] * a.shape[1] + b.shape[0] * b.shape[1], site.path)
            XCTAssertEqual(site.scaling, scaling(site.path, site.rank), accuracy: 1e-12, site.path)
            let expected = explicitDeltaNorm(a: try file.floats(key + ".lora_A.weight"), b: try file.floats(key + ".lora_B.weight"),
                                             rank: site.rank, inFeatures: a.shape[1], outFeatures: b.shape[0], scaling: site.scaling)
            XCTAssertGreaterThan(expected, 0, site.path)
            XCTAssertEqual(site.deltaNorm, expected, accuracy: 1e-10 * expected, site.path)
        }
    }

    func testTiedAdapterDeltaNormsEqualTheExplicitProduct() throws {
        let summary = try AdapterSummary.load(folder: fixturesPath + "/llama_tied/adapter")
        XCTAssertEqual(summary.peftType, "LORA")
        XCTAssertEqual(summary.config.r, 4)
        XCTAssertEqual(summary.config.loraAlpha, 8)
        XCTAssertFalse(summary.config.useRSLoRA)
        XCTAssertFalse(summary.useDoRA)
        XCTAssertEqual(summary.initialization, "true")
        XCTAssertEqual(summary.targetModules, ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"])
        XCTAssertNil(summary.config.baseModelNameOrPath)
        // 2 layers × 7 sites, in the forward pass's order.
        let names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
        XCTAssertEqual(summary.sites.map(\.path), (0..<2).flatMap { l in names.map { "model.layers.\(l).\($0)" } })
        try checkSites(summary) { _, _ in 8.0 / 4.0 }
        // Parameter count from the config's shapes (hidden 64, q 4×16, kv 2×16, intermediate 160): r·(in + out) per site.
        let d = 64, q = 64, kv = 32, f = 160, r = 4
        let perLayer = r * ((d + q) + 2 * (d + kv) + (q + d) + 2 * (d + f) + (f + d))
        XCTAssertEqual(summary.parameterCount, 2 * perLayer)
        XCTAssertEqual(summary.parameterCount, 8960)
        XCTAssertEqual(summary.dtypes.map(\.name), ["F32"])
        XCTAssertEqual(summary.dtypes.map(\.count), [28])
        XCTAssertTrue(summary.otherTensors.isEmpty)
        XCTAssertTrue(summary.warnings.isEmpty)
    }

    func testRSLoRAAndPatternsGiveTheScalingOfTheAttachedAdapter() throws {
        // qwen2_bias: rsLoRA, r 4, alpha 8, rank_pattern {v_proj: 2}, alpha_pattern {o_proj: 4}.
        let folder = fixturesPath + "/qwen2_bias/adapter"
        let summary = try AdapterSummary.load(folder: folder)
        XCTAssertTrue(summary.config.useRSLoRA)
        try checkSites(summary) { path, rank in
            let alpha = path.hasSuffix("o_proj") ? 4.0 : 8.0
            XCTAssertEqual(rank, path.hasSuffix("v_proj") ? 2 : 4, path)
            return alpha / Double(rank).squareRoot()
        }
        // The adapter as the engine attaches it agrees on every site's rank and scaling.
        let model = try LlamaModel.load(folder: fixturesPath + "/qwen2_bias/model")
        let adapter = try Adapter.load(from: folder, into: model)
        XCTAssertEqual(adapter.modules.count, summary.sites.count)
        for (site, lora) in adapter.sites(of: LoRA.self) {
            let s = try XCTUnwrap(summary.sites.first { $0.path == site.path }, site.path)
            XCTAssertEqual(s.rank, lora.rank)
            XCTAssertEqual(s.scaling, Double(lora.scaling), accuracy: 1e-6 * s.scaling)
        }
        XCTAssertEqual(summary.parameterCount, adapter.parameterCount)
    }

    func testTargetedHeadAndItsSavedBaseWeight() throws {
        let summary = try AdapterSummary.load(folder: fixturesPath + "/llama3_untied/adapter")
        XCTAssertEqual(summary.sites.last?.path, "lm_head")
        XCTAssertEqual(summary.sites.last?.shapeB, [256, 4])
        XCTAssertEqual(summary.otherTensors, ["base_model.model.lm_head.base_layer.weight"])
        try checkSites(summary) { _, _ in 2 }
    }

    func testNormsOfRandomFactorsEqualTheExplicitProduct() {
        for (r, inF, outF) in [(1, 5, 3), (3, 7, 11), (8, 33, 17)] {
            var g = SeededRandom(seed: UInt64(r * 100 + inF))
            let a = (0..<(r * inF)).map { _ in g.uniform(-1, 1) }, b = (0..<(outF * r)).map { _ in g.uniform(-1, 1) }
            let n = AdapterSummary.norms(a: a, b: b, rank: r, inFeatures: inF, outFeatures: outF)
            let expected = explicitDeltaNorm(a: a, b: b, rank: r, inFeatures: inF, outFeatures: outF, scaling: 1)
            XCTAssertEqual(n.ba, expected, accuracy: 1e-12 * expected)
            XCTAssertEqual(n.a, a.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot(), accuracy: 1e-12)
            XCTAssertEqual(n.b, b.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot(), accuracy: 1e-12)
        }
        // A fresh adapter (B = 0) has ΔW = 0.
        XCTAssertEqual(AdapterSummary.norms(a: [1, 2, 3, 4], b: [0, 0, 0, 0], rank: 2, inFeatures: 2, outFeatures: 2).ba, 0)
    }

    func testDoRAAdapterIsDescribedWithItsMagnitudeVector() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = try JSONSerialization.jsonObject(with: LoRAConfig(r: 2, loraAlpha: 4, targetModules: .names(["q_proj"])).json()) as! [String: Any]
        config["use_dora"] = true
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir + "/adapter_config.json"))
        var w = SafetensorsWriter()
        let key = Adapter.keyPrefix + "model.layers.0.self_attn.q_proj"
        w.add(key + ".lora_A.weight", shape: [2, 3], floats: [1, 0, 0, 0, 1, 0])
        w.add(key + ".lora_B.weight", shape: [4, 2], floats: [1, 0, 0, 1, 0, 0, 0, 0])
        w.add(key + ".lora_magnitude_vector", shape: [4], floats: [1, 1, 1, 1])
        try w.write(to: dir + "/adapter_model.safetensors")
        let summary = try AdapterSummary.load(folder: dir)
        XCTAssertTrue(summary.useDoRA)
        XCTAssertEqual(summary.sites.count, 1)
        XCTAssertEqual(summary.sites[0].parameterCount, 6 + 8 + 4)
        // B·A is a 4×3 matrix with two ones; s = 4/2.
        XCTAssertEqual(summary.sites[0].deltaNorm, 2 * 2.0.squareRoot(), accuracy: 1e-12)
    }

    /// PEFT's VeRA fixture: 14 sites, PEFT's 1,264 trainable parameters, λ_d at its init 0.1 (‖λ_d‖ = 0.1·√8).
    func testVeRAAdapterSummary() throws {
        let summary = try VeRASummary.load(folder: VariantFixtures.folder("vera") + "/adapter")
        XCTAssertEqual(summary.sites.count, 14)
        XCTAssertEqual(summary.parameterCount, 1_264)
        XCTAssertEqual(summary.projectionA, [8, 160])
        XCTAssertEqual(summary.projectionB, [160, 8])
        XCTAssertEqual(summary.sites[0].path, "model.layers.0.self_attn.q_proj")
        XCTAssertEqual(summary.sites[0].outFeatures, 64)
        XCTAssertEqual(summary.sites[0].normD, 0.1 * 8.0.squareRoot(), accuracy: 1e-6)
        let lambdaB = try SafetensorsFile(path: VariantFixtures.folder("vera") + "/adapter/adapter_model.safetensors")
            .floats("base_model.model.model.layers.0.self_attn.q_proj.vera_lambda_b")
        XCTAssertEqual(summary.sites[0].normB, lambdaB.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot(), accuracy: 1e-9)
    }

    func testNonLoRAAdapterIsRefusedInOneSentence() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(#"{"peft_type": "IA3", "target_modules": ["k_proj"]}"#.utf8).write(to: URL(fileURLWithPath: dir + "/adapter_config.json"))
        XCTAssertThrowsError(try AdapterSummary.load(folder: dir)) { error in
            XCTAssertTrue((error as? LoRAError)?.message.contains("peft_type IA3 is not a LoRA adapter") == true, "\(error)")
        }
    }

    func testHuggingFaceFolderSummary() throws {
        let folder = fixturesPath + "/llama_tied/model"
        let m = try ModelSummary.load(path: folder)
        XCTAssertEqual(m.format, .huggingFace)
        XCTAssertEqual(m.architecture, "llama")
        XCTAssertEqual(m.architectureClass, "LlamaForCausalLM")
        XCTAssertTrue(m.supported)
        XCTAssertEqual(m.layers, 2)
        XCTAssertEqual(m.hiddenSize, 64)
        XCTAssertEqual(m.heads, 4)
        XCTAssertEqual(m.kvHeads, 2)
        XCTAssertEqual(m.headDim, 16)
        XCTAssertEqual(m.intermediateSize, 160)
        XCTAssertEqual(m.vocabSize, 256)
        XCTAssertEqual(m.contextLength, 128)
        XCTAssertEqual(m.ropeTheta, 10000)
        XCTAssertEqual(m.tiedEmbeddings, true)
        // The count from tensor shapes equals ModelConfig's formula and the loaded model's.
        let config = try ModelConfig.load(path: folder + "/config.json")
        XCTAssertEqual(m.parameterCount, config.parameterCount)
        XCTAssertEqual(m.parameterCount, 102_720)
        XCTAssertEqual(m.tensorCount, 2 + 2 * 9)
        XCTAssertEqual(m.tensorTypes.map(\.name), ["F32"])
        XCTAssertEqual(m.tensorTypes.map(\.count), [20])
        let size = try FileManager.default.attributesOfItem(atPath: folder + "/model.safetensors")[.size] as! NSNumber
        XCTAssertGreaterThan(m.diskBytes, size.intValue)
    }

    func testGGUFTypeCountsEqualTheGGUFPackage() throws {
        // From the gguf package (0.19.0, /work/venv): for f in metadata, quants:
        //   r = gguf.GGUFReader(f"Tests/LoRAKitTests/Fixtures/gguf/{f}.gguf")
        //   collections.Counter(t.tensor_type.name for t in r.tensors), sum(int(t.n_elements) for t in r.tensors)
        // metadata: {F32: 2, Q4_0: 1}, 389 elements; quants: Q8_0 ×2 and one each of the rest, 27008 elements.
        let metadata = try ModelSummary.load(gguf: fixturesPath + "/gguf/metadata.gguf")
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: metadata.tensorTypes.map { ($0.name, $0.count) }), ["F32": 2, "Q4_0": 1])
        XCTAssertEqual(metadata.parameterCount, 389)
        let quants = try ModelSummary.load(gguf: fixturesPath + "/gguf/quants.gguf")
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: quants.tensorTypes.map { ($0.name, $0.count) }),
                       ["Q8_0": 2, "F32": 1, "F16": 1, "BF16": 1, "Q4_0": 1, "Q4_1": 1, "Q5_0": 1, "Q5_1": 1,
                        "Q2_K": 1, "Q3_K": 1, "Q4_K": 1, "Q5_K": 1, "Q6_K": 1])
        XCTAssertEqual(quants.tensorTypes.first?.name, "Q8_0", "most frequent first")
        XCTAssertEqual(quants.tensorCount, 14)
        XCTAssertEqual(quants.parameterCount, 27008)
        XCTAssertFalse(quants.supported)
    }

    func testSmolLM2GGUFSummaryEqualsTheGGUFPackage() throws {
        let path = SmolLM2Tests.modelPath
        guard FileManager.default.fileExists(atPath: path) else { throw XCTSkip("\(path) not present (bash scripts/fetch_smollm2.sh fetches it)") }
        let m = try ModelSummary.load(path: path)
        // Reference numbers from the gguf package 0.19.0 (/work/venv/bin/python):
        //   r = gguf.GGUFReader(path); collections.Counter(t.tensor_type.name for t in r.tensors)
        //     → {'Q4_1': 210, 'F32': 61, 'Q8_0': 1}
        //   len(r.tensors) → 272; sum(int(t.n_elements) for t in r.tensors) → 134515008
        //   r.fields[k].contents() for llama.block_count 30, embedding_length 576, attention.head_count 9,
        //   head_count_kv 3, feed_forward_length 1536, vocab_size 49152, context_length 8192, rope.freq_base 100000.0,
        //   rope.dimension_count 64, general.file_type 3 (LlamaFileType.MOSTLY_Q4_1); there is no output.weight.
        XCTAssertEqual(m.tensorTypes.map(\.name), ["Q4_1", "F32", "Q8_0"])
        XCTAssertEqual(m.tensorTypes.map(\.count), [210, 61, 1])
        XCTAssertEqual(m.tensorCount, 272)
        XCTAssertEqual(m.parameterCount, 134_515_008)
        XCTAssertEqual(m.architecture, "llama")
        XCTAssertTrue(m.supported)
        XCTAssertEqual(m.layers, 30)
        XCTAssertEqual(m.hiddenSize, 576)
        XCTAssertEqual(m.heads, 9)
        XCTAssertEqual(m.kvHeads, 3)
        XCTAssertEqual(m.headDim, 64)
        XCTAssertEqual(m.intermediateSize, 1536)
        XCTAssertEqual(m.vocabSize, 49152)
        XCTAssertEqual(m.contextLength, 8192)
        XCTAssertEqual(m.ropeTheta, 100000)
        XCTAssertEqual(m.tiedEmbeddings, true)
        XCTAssertEqual(m.declaredType, "MOSTLY_Q4_1")
        XCTAssertEqual(m.tokenizer, "gpt2")
        XCTAssertTrue(m.hasChatTemplate)
        // The hyperparameters also give ModelConfig's count for SmolLM2-135M (no tensor beyond the model's).
        XCTAssertEqual(m.parameterCount, ModelConfig.smolLM2_135M.parameterCount)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber
        XCTAssertEqual(m.diskBytes, size.intValue)
    }
}
