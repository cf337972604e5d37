import Foundation
import XCTest
@testable import LoRAKit

/// DoRA against PEFT (use_dora=True) on the llama_tied model: an adapter PEFT saved, with magnitudes
/// away from the row norms (fixture from scripts/make_variant_fixtures.py dora).
final class DoRATests: XCTestCase {
    static let folder = fixturesPath + "/variants/dora"

    func load() throws -> (PyTorchParityTests.Case, SafetensorsFile) {
        let base = try PyTorchParityTests.load("llama_tied")
        try base.adapter.detach()
        let adapter = try Adapter.load(from: Self.folder + "/adapter", into: base.model)
        let c = PyTorchParityTests.Case(model: base.model, adapter: adapter, reference: base.reference, batch: base.batch,
                                        realPositions: base.realPositions)
        return (c, try SafetensorsFile(path: Self.folder + "/reference.safetensors"))
    }

    func testPEFTsDoRAAdapterLoadsWithItsLogitsAndGradients() throws {
        let (c, reference) = try load()
        XCTAssertEqual(c.adapter.sites(of: DoRA.self).count, 14)
        XCTAssertEqual(c.adapter.parameterCount, 10_112, "PEFT's trainable-parameter line for this model")
        let logits = try c.model.logits(c.batch)
        let reals = PyTorchParityTests.realLogits
        XCTAssertLessThan(relativeError(reals(logits.array, c), reals(try reference.floats("logits"), c)), 1e-5, "logits")
        for p in c.adapter.parameters { p.grad.zero() }
        let loss = try c.model.forwardBackward(c.batch)
        XCTAssertEqual(loss, Double(try reference.floats("loss")[0]), accuracy: 1e-5 * loss, "loss")
        XCTAssertEqual(c.adapter.parameters.count, 42)
        for p in c.adapter.parameters {
            XCTAssertLessThan(relativeError(p.grad.array, try reference.floats("grad." + p.name)), 1e-4, p.name)
        }
    }

    func testThreeAdamWStepsMatchPEFT() throws {
        let (c, reference) = try load()
        let optimizer = AdamW(parameters: c.adapter.parameters, learningRate: 1e-2, eps: 1e-4, weightDecay: 0.01)
        let trainer = Trainer(model: c.model, optimizer: optimizer, totalSteps: 3, maxGradNorm: 0.5)
        let losses = try reference.floats("losses"), norms = try reference.floats("grad_norms")
        for s in 0..<3 {
            let r = try trainer.step([c.batch])
            XCTAssertEqual(r.loss, Double(losses[s]), accuracy: 1e-5 * Double(losses[s]), "loss at step \(s + 1)")
            XCTAssertEqual(r.gradNorm, norms[s], accuracy: 1e-4 * norms[s], "grad norm at step \(s + 1)")
        }
        var worst: Float = 0
        for p in c.adapter.parameters {
            let err = relativeError(p.value.array, try reference.floats("step3." + p.name))
            XCTAssertLessThan(err, 1e-4, "\(p.name) after 3 steps")
            worst = max(worst, err)
        }
        print("[DoRA] largest relative difference from PEFT after 3 steps: \(worst)")
    }

    func testMergeMatchesPEFTAndUnmergeRestoresTheBase() throws {
        let (c, reference) = try load()
        let original = c.adapter.modules.map { $0.site.linear.weight.array }
        let reals = PyTorchParityTests.realLogits
        try c.adapter.merge()
        let merged = try c.model.logits(c.batch)
        XCTAssertLessThan(relativeError(reals(merged.array, c), reals(try reference.floats("merged_logits"), c)), 1e-5, "merged logits")
        try c.adapter.unmerge()
        for (m, w0) in zip(c.adapter.modules, original) {
            XCTAssertLessThan(relativeError(m.site.linear.weight.array, w0), 1e-6, "\(m.site.path) after unmerge")
        }
        let unmerged = try c.model.logits(c.batch)
        XCTAssertLessThan(relativeError(reals(unmerged.array, c), reals(try reference.floats("unmerged_logits"), c)), 1e-5, "unmerged logits")
    }

    /// Ours loads back with the same values (PEFT's key names, the magnitude without `.weight`).
    func testSavedDoRAAdapterRoundTrips() throws {
        let (c, _) = try load()
        let folder = try temporaryDirectory()
        try c.adapter.save(to: folder)
        let file = try SafetensorsFile(path: folder + "/adapter_model.safetensors")
        XCTAssertTrue(file.names.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"))
        let peft = try SafetensorsFile(path: Self.folder + "/adapter/adapter_model.safetensors")
        XCTAssertEqual(Set(file.names), Set(peft.names))
        for name in peft.names { XCTAssertEqual(try file.floats(name), try peft.floats(name), name) }
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/adapter_config.json"))) as! [String: Any]
        XCTAssertEqual(config["use_dora"] as? Bool, true)
    }
}
