import Foundation
import XCTest
@testable import LoRAKit

/// LoRA+ and LoRA-FA against PEFT's optimizers (`create_loraplus_optimizer`, `LoraFAOptimizer`) on the
/// llama_tied fixture: fixtures from scripts/make_variant_fixtures.py, which reuses llama_tied's model,
/// initial adapter and batch.
final class TrainingMethodTests: XCTestCase {
    /// llama_tied with its own adapter, the variant's reference and its info.json's optimizer entry.
    func load(_ variant: String) throws -> (PyTorchParityTests.Case, SafetensorsFile, [String: Any]) {
        let c = try PyTorchParityTests.load("llama_tied")
        let data = try Data(contentsOf: URL(fileURLWithPath: VariantFixtures.folder(variant) + "/info.json"))
        let info = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        return (c, try VariantFixtures.reference(variant), info["optimizer"] as! [String: Any])
    }

    func testLoRAPlusGroupsAndThreeStepsMatchPEFT() throws {
        let (c, reference, optimizer) = try load("lora_plus")
        var settings = TrainingSettings()
        settings.method = .loraPlus
        settings.learningRate = 1e-2
        settings.weightDecay = (optimizer["loraplus_weight_decay"] as? NSNumber)?.floatValue ?? 0.01
        settings.loraPlusRatio = 16
        let adamW = try XCTUnwrap(try settings.method.makeOptimizer(adapter: c.adapter, settings: settings) as? AdamW)
        adamW.eps = (optimizer["eps"] as! NSNumber).floatValue
        // PEFT's groups: every lora_A at lr, every lora_B at 16·lr (its empty embedding and no-decay groups are not made).
        XCTAssertEqual(adamW.groups.map(\.learningRateScale), [1, 16])
        XCTAssertEqual(adamW.groups.map(\.weightDecay), [0.01, 0.01])
        XCTAssertTrue(adamW.groups[0].parameters.allSatisfy { $0.name.hasSuffix("lora_A.weight") })
        XCTAssertTrue(adamW.groups[1].parameters.allSatisfy { $0.name.hasSuffix("lora_B.weight") })
        XCTAssertEqual(adamW.parameters.count, 28)
        try VariantFixtures.checkThreeSteps(c, adamW, reference, "LoRA+")
    }

    func testLoRAFAFreezesAAndMatchesPEFTsOptimizer() throws {
        let (c, reference, info) = try load("lora_fa")
        let initialA = c.adapter.sites(of: LoRA.self).map { $0.adapter.a.value.array }
        var settings = TrainingSettings()
        settings.method = .loraFA
        settings.learningRate = 1e-2
        settings.weightDecay = (info["weight_decay"] as! NSNumber).floatValue
        let optimizer = try XCTUnwrap(try settings.method.makeOptimizer(adapter: c.adapter, settings: settings) as? LoRAFAOptimizer)
        XCTAssertEqual(optimizer.eps, 1e-6, "PEFT's default")
        optimizer.eps = (info["eps"] as! NSNumber).floatValue  // the fixture's, see its info.json
        XCTAssertEqual(c.adapter.parameters.count, 14, "only B trains")
        XCTAssertTrue(c.adapter.parameters.allSatisfy { $0.name.hasSuffix("lora_B.weight") })

        // One backward: B's gradients equal PEFT's, and A gets none.
        for p in c.adapter.weights { p.grad.zero() }
        _ = try c.model.forwardBackward(c.batch)
        for p in c.adapter.parameters {
            XCTAssertLessThan(relativeError(p.grad.array, try reference.floats("grad." + p.name)), 1e-4, p.name)
        }
        XCTAssertTrue(c.adapter.sites(of: LoRA.self).allSatisfy { $0.adapter.a.grad.array.allSatisfy { $0 == 0 } })

        try VariantFixtures.checkThreeSteps(c, optimizer, reference, "LoRA-FA")
        XCTAssertEqual(c.adapter.sites(of: LoRA.self).map { $0.adapter.a.value.array }, initialA, "A is bitwise unchanged")
    }

    /// The projection PEFT's optimizer applies at step 1, from the clipped gradient, with bfloat16
    /// rounding where PEFT's autocast rounds: bit for bit. (Without the rounding, B after 3 steps is
    /// 4.7e-4 away from PEFT's instead of 6.5e-5.)
    func testLoRAFAProjectionMatchesPEFT() throws {
        let (c, reference, info) = try load("lora_fa")
        let coefficient = ((info["clip_coefs"] as! [NSNumber])[0]).floatValue
        for (_, lora) in c.adapter.sites(of: LoRA.self) {
            let inverse = try XCTUnwrap(LoRAFAOptimizer.regularizedGramInverse(lora.a.value))
            let g = try reference.floats("grad." + lora.b.name).map { bfloat16Rounded($0 * coefficient) }
            let r = lora.rank, out = lora.outFeatures
            var projected = [Float](repeating: 0, count: out * r)
            for i in 0..<out {
                for j in 0..<r {
                    let sum = (0..<r).reduce(Float(0)) { $0 + g[i * r + $1] * bfloat16Rounded(inverse[$1 * r + j]) }
                    projected[i * r + j] = bfloat16Rounded(bfloat16Rounded(sum) * Float(1 / Double(lora.scaling * lora.scaling)))
                }
            }
            XCTAssertEqual(projected, try reference.floats("projected_grad." + lora.b.name), "\(lora.b.name): bit for bit")
        }
    }

    func testMethodIsPartOfTheResumeCheck() {
        var a = TrainingSettings(), b = a
        b.method = .loraFA
        XCTAssertEqual(a.resumeMismatch(b), "method lora in the checkpoint, lora-fa requested")
        a.method = .loraPlus; b.method = .loraPlus; b.loraPlusRatio = 20
        XCTAssertEqual(a.resumeMismatch(b), "LoRA+ ratio 16.0 in the checkpoint, 20.0 requested")
    }
}
