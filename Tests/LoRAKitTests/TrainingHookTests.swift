import XCTest
@testable import LoRAKit

/// A method's hooks in the trainer: its loss term is in the step's loss and its gradient in the update;
/// its after-update call sees each step's updated parameters.
final class TrainingHookTests: XCTestCase {
    /// λ·Σ B² over every B, with its gradient 2λ·B (a stand-in for AdaLoRA's orthogonality penalty).
    final class PenaltyOnB: TrainingHook {
        let bs: [Parameter], lambda: Float
        var updates: [(step: Int, firstB: Float)] = []
        init(_ bs: [Parameter], lambda: Float) { self.bs = bs; self.lambda = lambda }
        func addLossTerm(step: Int) -> Double {
            var term = 0.0
            for b in bs { for i in 0..<b.value.count { term += Double(lambda * b.value[i] * b.value[i]); b.grad[i] += 2 * lambda * b.value[i] } }
            return term
        }
        func afterUpdate(step: Int) { updates.append((step, bs[0].value[0])) }
    }

    func model() throws -> (LlamaModel, Adapter) {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 2, targetModules: .allLinear), seed: 4)
        for (_, lora) in adapter.sites(of: LoRA.self) { for i in 0..<lora.b.value.count { lora.b.value[i] = 0.05 * Float(i % 3) - 0.05 } }
        return (model, adapter)
    }

    func testLossTermAndAfterUpdateHooks() throws {
        let batch = Batch(batchSize: 1, seqLen: 6, inputIds: [1, 4, 9, 16, 25, 36], labels: [1, 4, 9, 16, 25, 36])
        let bs = { (a: Adapter) in a.sites(of: LoRA.self).map(\.adapter.b) }

        // By hand: the model's gradients plus 2λ·B, clipped, one AdamW update.
        let (m1, a1) = try model()
        let optimizer1 = AdamW(parameters: a1.parameters, learningRate: 1e-2)
        optimizer1.zeroGrad()
        let modelLoss = try m1.forwardBackward(batch)
        var term = 0.0
        for b in bs(a1) { for i in 0..<b.value.count { term += Double(0.1 * b.value[i] * b.value[i]); b.grad[i] += 0.2 * b.value[i] } }
        clipGradientNorm(a1.parameters, maxNorm: 1)
        optimizer1.update()

        let (m2, a2) = try model()
        let hook = PenaltyOnB(bs(a2), lambda: 0.1)
        let trainer = Trainer(model: m2, optimizer: AdamW(parameters: a2.parameters, learningRate: 1e-2), totalSteps: 2, maxGradNorm: 1)
        trainer.hooks = [hook]
        let result = try trainer.step([batch])
        XCTAssertGreaterThan(term, 0)
        XCTAssertEqual(result.loss, modelLoss + term, "the step's loss includes the hook's term")
        XCTAssertEqual(a2.parameters.map(\.value.array), a1.parameters.map(\.value.array), "the update used the term's gradient")
        _ = try trainer.step([batch])
        XCTAssertEqual(hook.updates.map(\.step), [1, 2])
        XCTAssertEqual(hook.updates[0].firstB, a1.sites(of: LoRA.self)[0].adapter.b.value[0], "called after the update")
    }
}
