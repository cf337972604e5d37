import Foundation
import XCTest
@testable import LoRAKit

/// DoRA against PEFT (use_dora=True) on the llama_tied model: an adapter PEFT saved, with magnitudes
/// away from the row norms (fixture from scripts/make_variant_fixtures.py dora).
final class DoRATests: XCTestCase {
    static let folder = VariantFixtures.folder("dora")

    func testPEFTsDoRAAdapterLoadsWithItsLogitsAndGradients() throws {
        let (c, reference) = try VariantFixtures.load("dora")
        XCTAssertEqual(c.adapter.sites(of: DoRA.self).count, 14)
        XCTAssertEqual(c.adapter.parameterCount, 10_112, "PEFT's trainable-parameter line for this model")
        XCTAssertEqual(c.adapter.parameters.count, 42)
        try VariantFixtures.checkLogitsAndGradients(c, reference, "DoRA")
    }

    func testThreeAdamWStepsMatchPEFT() throws {
        let (c, reference) = try VariantFixtures.load("dora")
        let optimizer = AdamW(parameters: c.adapter.parameters, learningRate: 1e-2, eps: 1e-4, weightDecay: 0.01)
        try VariantFixtures.checkThreeSteps(c, optimizer, reference, "DoRA")
    }

    func testMergeMatchesPEFTAndUnmergeRestoresTheBase() throws {
        let (c, reference) = try VariantFixtures.load("dora")
        try VariantFixtures.checkMergeAndUnmerge(c, reference, "DoRA")
        let reals = PyTorchParityTests.realLogits
        XCTAssertLessThan(relativeError(reals(try c.model.logits(c.batch).array, c), reals(try reference.floats("unmerged_logits"), c)), 1e-5,
                          "unmerged logits")
    }

    /// Ours is PEFT's file: the magnitude saved without `.weight`, use_dora set.
    func testSavedDoRAAdapterIsPEFTsFile() throws {
        let (c, _) = try VariantFixtures.load("dora")
        let config = try VariantFixtures.checkSavedFileIsPEFTs(c.adapter, "dora")
        XCTAssertEqual(config["use_dora"] as? Bool, true)
    }
}
