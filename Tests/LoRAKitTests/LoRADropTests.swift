import Foundation
import XCTest
@testable import LoRAKit

/// LoRA-Drop on constructed cases whose answer is known, and the shared pairs it trains.
final class LoRADropTests: XCTestCase {
    static let config = LoRAConfig(r: 4, loraAlpha: 8, targetModules: .allLinear)

    func settings(iterations: Int) -> TrainingSettings {
        var s = TrainingSettings()
        s.iterations = iterations; s.batchSize = 3; s.learningRate = 1e-2; s.seed = 3; s.maxGradNorm = nil
        return s
    }

    /// Block 0's MLP norm weight is zero: its gate and up projections read x = 0, and its down
    /// projection reads SwiGLU(0, 0) = 0, so their updates add nothing and they must rank last.
    func testLayersWhoseInputIsZeroRankLastAndShare() throws {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        model.blocks[0].mlpNorm.buffer.update(repeating: 0)
        var drop = LoRADrop.Settings()
        drop.probeSteps = 4; drop.sampleRatio = 0.5; drop.threshold = 0.9
        let selection = try LoRADrop.probe(model: model, config: Self.config, trainingSet: TrainingLoopTests.examples,
                                           training: settings(iterations: 10), settings: drop, padId: 0)
        XCTAssertTrue(model.sites.allSatisfy { $0.linear.adapter == nil }, "the probe leaves no adapter behind")
        XCTAssertEqual(selection.sampleExamples, 6, "⌈0.5 · 11⌉ examples")
        XCTAssertEqual(selection.sites.count, 14)
        XCTAssertEqual(selection.sites.map(\.importance).reduce(0, +), 1, accuracy: 1e-12)
        let dead = ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"]
        let ranked = selection.sites.sorted { $0.importance > $1.importance }.map(\.site)
        XCTAssertEqual(Set(ranked.suffix(3)), Set(dead))
        for site in selection.sites where dead.contains(site.site) {
            XCTAssertEqual(site.importance, 0, site.site)
            XCTAssertFalse(site.kept, site.site)
        }
        // The kept sites are the fewest most important ones reaching the threshold.
        let keptShares = selection.sites.filter(\.kept).map(\.importance)
        XCTAssertGreaterThanOrEqual(keptShares.reduce(0, +), 0.9)
        XCTAssertLessThan(keptShares.reduce(0, +) - keptShares.min()!, 0.9)
        // gate and up have one shape and share one pair; down is the only one of its shape.
        let groups = selection.sharedGroups
        XCTAssertTrue(groups.contains { Set($0).isSuperset(of: dead.prefix(2)) }, "\(groups)")
        XCTAssertEqual(Set(groups.flatMap { $0 }), Set(selection.sites.filter { !$0.kept }.map(\.site)))
    }

    /// The shared sites read one pair: trained once, saved under every sharing site's keys, reloaded
    /// with the same logits (as PEFT, which sees separate equal tensors).
    func testSharedPairIsOneTensorTrainedOnceAndSavedUnderEverySite() throws {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        let group = ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.1.mlp.gate_proj"]
        let adapter = try Adapter.attach(to: model, config: Self.config, seed: 3, sharing: [group])
        XCTAssertEqual(adapter.parameters.count, 2 * 14 - 2 * 2, "a shared pair is one pair of parameters")
        XCTAssertEqual(adapter.weights.count, 2 * 14, "but every site's keys are saved")
        let loop = try TrainingLoop(model: model, adapter: adapter, trainingSet: TrainingLoopTests.examples, settings: settings(iterations: 3), padId: 0)
        _ = try loop.run(folder: nil)
        let loras = adapter.sites(of: LoRA.self).filter { group.contains($0.site.path) }.map(\.adapter)
        XCTAssertTrue(loras.allSatisfy { $0.a.value === loras[0].a.value && $0.b.value === loras[0].b.value })
        XCTAssertNotEqual(loras[0].b.value.array, Array(repeating: 0, count: loras[0].b.value.count), "the shared B trained")

        let folder = try temporaryDirectory()
        try adapter.save(to: folder)
        let file = try SafetensorsFile(path: folder + "/adapter_model.safetensors")
        for path in group.dropFirst() {
            for m in ["lora_A", "lora_B"] {
                XCTAssertEqual(try file.floats("\(Adapter.keyPrefix)\(path).\(m).weight"), try file.floats("\(Adapter.keyPrefix)\(group[0]).\(m).weight"))
            }
        }
        let batch = Batch(batchSize: 1, seqLen: 5, tokens: [1, 7, 3, 9, 2], targets: [7, 3, 9, 2, Batch.ignoreIndex])
        let trained = try model.logits(batch).array
        let fresh = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        _ = try Adapter.load(from: folder, into: fresh)
        XCTAssertEqual(try fresh.logits(batch).array, trained)
    }

    /// The shared pair's gradient is the sum of the sharing sites' gradients (a tied weight), checked
    /// against central finite differences of the loss.
    func testSharedPairGradientMatchesFiniteDifferences() throws {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 2)
        let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 2, loraAlpha: 4, targetModules: .names(["gate_proj", "up_proj"]),
                                                                       initialization: .none), seed: 5,
                                         sharing: [["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]])
        let batch = Batch(batchSize: 1, seqLen: 6, tokens: [1, 7, 3, 9, 2, 4], targets: [7, 3, 9, 2, 4, Batch.ignoreIndex])
        let shared = adapter.parameters[1]  // the group owner's B
        for p in adapter.parameters { p.grad.zero() }
        _ = try model.forwardBackward(batch)
        for i in [0, 17, 63] {
            let h: Float = 1e-2, original = shared.value[i]
            shared.value[i] = original + h
            let up = try model.evaluate(DataSet(examples: [Example(tokens: batch.tokens, isTarget: [false, true, true, true, true, true])]), batchSize: 1, padId: 0).loss
            shared.value[i] = original - h
            let down = try model.evaluate(DataSet(examples: [Example(tokens: batch.tokens, isTarget: [false, true, true, true, true, true])]), batchSize: 1, padId: 0).loss
            shared.value[i] = original
            XCTAssertEqual(Double(shared.grad[i]), (up - down) / Double(2 * h), accuracy: 2e-3, "index \(i)")
        }
    }

    func testSelectionKeepsTheFewestLayersReachingTheThreshold() {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        let sites = Array(model.sites.filter { $0.layer != nil }.prefix(4))  // q, k, v, o of block 0
        let s = LoRADrop.select(importances: zip(sites, [1.0, 6.0, 2.0, 1.0]).map { ($0, $1) }, threshold: 0.7, probeSteps: 1, sampleExamples: 1)
        // Shares 0.1, 0.6, 0.2, 0.1: k (0.6) then v (0.8 ≥ 0.7) are kept.
        XCTAssertEqual(s.sites.map(\.kept), [false, true, true, false])
        XCTAssertEqual(s.sites.map(\.importance), [0.1, 0.6, 0.2, 0.1])
        // q and o are both 32 → 32 in this model's attention: o reads q's pair.
        XCTAssertEqual(s.sites[3].sharesWith, sites[0].path)
        XCTAssertEqual(s.sharedGroups, [[sites[0].path, sites[3].path]])
    }
}
