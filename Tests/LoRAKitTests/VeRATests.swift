import Foundation
import XCTest
@testable import LoRAKit

/// VeRA against PEFT (VeraConfig, save_projection=True) on the llama_tied model: an adapter PEFT saved
/// with its projections and random λ_b (fixture from scripts/make_variant_fixtures.py vera).
final class VeRATests: XCTestCase {
    func testPEFTsVeRAAdapterLoadsWithItsLogitsAndGradients() throws {
        let (c, reference) = try VariantFixtures.load("vera")
        let veras = c.adapter.sites(of: VeRA.self)
        XCTAssertEqual(veras.count, 14)
        XCTAssertEqual(c.adapter.parameterCount, 1_264, "PEFT's trainable-parameter line for this model")
        XCTAssertEqual(c.adapter.parameters.count, 28)
        // Every layer reads the one pair of projections, not a copy.
        let a = c.adapter.shared[0].value.data, b = c.adapter.shared[1].value.data
        XCTAssertTrue(veras.allSatisfy { $0.adapter.projectionA.value.data == a && $0.adapter.projectionB.value.data == b })
        try VariantFixtures.checkLogitsAndGradients(c, reference, "VeRA")
    }

    func testThreeAdamWStepsMatchPEFTAndLeaveTheProjectionsAlone() throws {
        let (c, reference) = try VariantFixtures.load("vera")
        let projections = c.adapter.shared.map(\.value.array)
        let optimizer = AdamW(parameters: c.adapter.parameters, learningRate: 1e-2, eps: 1e-4, weightDecay: 0.01)
        try VariantFixtures.checkThreeSteps(c, optimizer, reference, "VeRA")
        XCTAssertEqual(c.adapter.shared.map(\.value.array), projections, "the projections are frozen")
    }

    func testMergeMatchesPEFTAndUnmergeRestoresTheBase() throws {
        let (c, reference) = try VariantFixtures.load("vera")
        try VariantFixtures.checkMergeAndUnmerge(c, reference, "VeRA")
    }

    /// Ours is PEFT's file: the same tensor names and values, the projections once, peft_type VERA.
    func testSavedVeRAAdapterIsPEFTsFile() throws {
        let (c, _) = try VariantFixtures.load("vera")
        let config = try VariantFixtures.checkSavedFileIsPEFTs(c.adapter, "vera")
        XCTAssertEqual(config["peft_type"] as? String, "VERA")
    }

    /// A fresh VeRA: λ_b zero (a no-op), λ_d = d_initial, projections kaiming-uniform (a = 0) as large as the widest layer.
    func testFreshVeRAStartsAsANoOpWithPEFTsShapes() throws {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        let batch = Batch(batchSize: 1, seqLen: 4, inputIds: [1, 2, 3, 4], labels: [1, 2, 3, 4])
        let before = try model.logits(batch)
        let adapter = try Adapter.attach(to: model, config: VeRAConfig(r: 16, targetModules: .allLinear), seed: 0)
        let c = model.config, widest = max(c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim)
        XCTAssertEqual(adapter.shared.map(\.value.shape), [[16, widest], [widest, 16]])
        let bound = (6 / Float(widest)).squareRoot()
        XCTAssertTrue(adapter.shared[0].value.array.allSatisfy { abs($0) <= bound })
        XCTAssertTrue(adapter.sites(of: VeRA.self).allSatisfy { $0.adapter.lambdaD.value.array.allSatisfy { $0 == 0.1 } })
        XCTAssertEqual(try model.logits(batch).array, before.array)
    }
}
