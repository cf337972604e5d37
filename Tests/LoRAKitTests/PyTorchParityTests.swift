import Foundation
import XCTest
@testable import LoRAKit

/// The engine against PyTorch + transformers + PEFT on tiny random models (fixtures from
/// scripts/make_fixtures.py): logits, loss, every LoRA gradient, three AdamW steps, and merging.
final class PyTorchParityTests: XCTestCase {
    static let cases = ["llama_tied", "llama3_untied", "qwen2_bias", "mistral_layers"]

    struct Case {
        let model: LlamaModel
        let adapter: Adapter
        let reference: SafetensorsFile
        let batch: Batch
        /// Positions with attention_mask 1 (pad positions' logits follow transformers' mask convention, not ours).
        let realPositions: [Int]
    }

    static func load(_ name: String) throws -> Case {
        let dir = fixturesPath + "/" + name
        let model = try LlamaModel.load(folder: dir + "/model")
        let adapter = try Adapter.load(from: dir + "/adapter", into: model)
        let ref = try SafetensorsFile(path: dir + "/reference.safetensors")
        let shape = ref.tensors["input_ids"]!.shape
        let ids = try ref.ints("input_ids").map(Int32.init), labels = try ref.ints("labels").map(Int32.init)
        let mask = try ref.ints("attention_mask")
        let batch = Batch(batchSize: shape[0], seqLen: shape[1], inputIds: ids, labels: labels)
        return Case(model: model, adapter: adapter, reference: ref, batch: batch,
                    realPositions: mask.indices.filter { mask[$0] == 1 })
    }

    /// Logits at real positions, flattened.
    static func realLogits(_ logits: [Float], _ c: Case) -> [Float] {
        let v = c.model.config.vocabSize
        return c.realPositions.flatMap { logits[($0 * v)..<(($0 + 1) * v)] }
    }

    func testLogitsAndLossMatchPyTorch() throws {
        for name in Self.cases {
            let c = try Self.load(name)
            let logits = try c.model.logits(c.batch)
            let err = relativeError(Self.realLogits(logits.array, c), Self.realLogits(try c.reference.floats("logits"), c))
            XCTAssertLessThan(err, 1e-5, "\(name) logits")
            let loss = try c.model.loss(c.batch).loss, refLoss = Double(try c.reference.floats("loss")[0])
            XCTAssertEqual(loss, refLoss, accuracy: 1e-5 * refLoss, "\(name) loss")
        }
    }

    func testGradientsMatchPyTorch() throws {
        for name in Self.cases {
            let c = try Self.load(name)
            for p in c.adapter.parameters { p.grad.zero() }
            let loss = try c.model.forwardBackward(c.batch)
            XCTAssertEqual(loss, Double(try c.reference.floats("loss")[0]), accuracy: 1e-4, "\(name) loss")
            XCTAssertEqual(c.adapter.parameters.count, c.reference.names.filter { $0.hasPrefix("grad.") }.count, name)
            for p in c.adapter.parameters {
                let ref = try c.reference.floats("grad." + p.name)
                XCTAssertLessThan(relativeError(p.grad.array, ref), 1e-4, "\(name) \(p.name)")
            }
        }
    }

    func testThreeAdamWStepsMatchPyTorch() throws {
        for name in Self.cases {
            let c = try Self.load(name)
            let info = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixturesPath + "/\(name)/info.json")))
            let opt = (info as! [String: Any])["optimizer"] as! [String: Any]
            let eps = (opt["eps"] as! NSNumber).floatValue
            XCTAssertEqual(eps, 1e-4, "\(name): scripts/make_fixtures.py explains this eps")
            let optimizer = AdamW(parameters: c.adapter.parameters, learningRate: 1e-2, eps: eps, weightDecay: 0.01)
            let trainer = Trainer(model: c.model, optimizer: optimizer, totalSteps: 3, maxGradNorm: 0.5)
            let losses = try c.reference.floats("losses"), norms = try c.reference.floats("grad_norms")
            for s in 0..<3 {
                let r = try trainer.step([c.batch])
                XCTAssertEqual(r.loss, Double(losses[s]), accuracy: 1e-5 * Double(losses[s]), "\(name) loss at step \(s)")
                XCTAssertEqual(r.gradNorm, norms[s], accuracy: 1e-4 * norms[s], "\(name) grad norm at step \(s)")
            }
            for p in c.adapter.parameters {
                let ref = try c.reference.floats("step3." + p.name)
                XCTAssertLessThan(relativeError(p.value.array, ref), 1e-4, "\(name) \(p.name) after 3 steps")
            }
        }
    }

    func testMergeMatchesPyTorchAndUnmergeRestoresWeights() throws {
        for name in Self.cases {
            let c = try Self.load(name)
            let unmerged = try c.model.logits(c.batch).array
            let original = c.adapter.modules.map { $0.site.linear.weight.array }
            try c.adapter.merge()
            let merged = try c.model.logits(c.batch).array
            XCTAssertLessThan(relativeError(Self.realLogits(merged, c), Self.realLogits(unmerged, c)), 1e-5, "\(name) merged vs unmerged")
            XCTAssertLessThan(relativeError(Self.realLogits(merged, c), Self.realLogits(try c.reference.floats("merged_logits"), c)), 1e-5,
                              "\(name) merged vs PEFT merge_and_unload")
            try c.adapter.unmerge()
            for (m, w0) in zip(c.adapter.modules, original) {
                let w = m.site.linear.weight.array
                let maxDiff = zip(w, w0).map { abs($0 - $1) }.max()!
                XCTAssertLessThanOrEqual(maxDiff, 1e-6, "\(name) \(m.site.path) after unmerge")
            }
        }
    }

    func testAdapterRoundTripsThroughPEFTFormat() throws {
        let c = try Self.load("qwen2_bias")
        let dir = try temporaryDirectory()
        try c.adapter.save(to: dir)
        let saved = try SafetensorsFile(path: dir + "/adapter_model.safetensors")
        XCTAssertEqual(saved.metadata, ["format": "pt"])
        let original = try SafetensorsFile(path: fixturesPath + "/qwen2_bias/adapter/adapter_model.safetensors")
        XCTAssertEqual(saved.names, original.names)
        for n in original.names { XCTAssertEqual(try saved.floats(n), try original.floats(n), n) }
        let config = try LoRAConfig.load(path: dir + "/adapter_config.json")
        XCTAssertEqual(config.rankPattern, ["v_proj": 2])
        XCTAssertEqual(config.alphaPattern, ["o_proj": 4])
        XCTAssertTrue(config.useRSLoRA)
        XCTAssertEqual(c.adapter.sites(of: LoRA.self).first { $0.site.path.hasSuffix("layers.0.self_attn.v_proj") }!.adapter.scaling,
                       8 / Float(2).squareRoot(), accuracy: 1e-6)
    }
}

/// Writes a trained adapter and its merged model to .build/interop/ for scripts/check_interop.py,
/// which loads them with PEFT and transformers (not in CI, which has no PyTorch).
final class InteropExportTests: XCTestCase {
    func testTrainedAdapterAndMergedModelExportAndReload() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/interop").path
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let dir = fixturesPath + "/llama3_untied"
        let model = try LlamaModel.load(folder: dir + "/model")
        let adapter = try Adapter.load(from: dir + "/adapter", into: model)
        let ref = try SafetensorsFile(path: dir + "/reference.safetensors")
        let ids = try ref.ints("input_ids").map(Int32.init), labels = try ref.ints("labels").map(Int32.init)
        let batch = Batch(batchSize: 2, seqLen: 12, inputIds: ids, labels: labels)
        let trainer = Trainer(model: model, optimizer: AdamW(parameters: adapter.parameters, learningRate: 1e-2), totalSteps: 3)
        for _ in 0..<3 { _ = try trainer.step([batch]) }
        let loss = try model.loss(batch).loss, logits = try model.logits(batch)
        try adapter.save(to: root + "/adapter")
        var out = SafetensorsWriter()
        out.add("logits", shape: logits.shape, floats: logits.array)
        out.add("loss", shape: [1], floats: [Float(loss)])
        try out.write(to: root + "/ours.safetensors")

        // Reloading our own files gives the same outputs.
        let fresh = try LlamaModel.load(folder: dir + "/model")
        let reloaded = try Adapter.load(from: root + "/adapter", into: fresh)
        XCTAssertEqual(try fresh.loss(batch).loss, loss, accuracy: 1e-6)
        try reloaded.merge()
        try fresh.saveHuggingFace(to: root + "/merged")
        let merged = try LlamaModel.load(folder: root + "/merged")
        XCTAssertFalse(merged.headIsTied)
        XCTAssertEqual(try merged.loss(batch).loss, loss, accuracy: 1e-5 * loss)
    }
}
