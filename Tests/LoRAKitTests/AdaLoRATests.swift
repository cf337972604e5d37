import Foundation
import XCTest
@testable import LoRAKit

/// AdaLoRA against PEFT (AdaLoraConfig init_r 6 → target_r 3, tinit 1, tfinal 1, total_step 6, on
/// llama_tied with random Λ so that every tensor has a gradient; scripts/make_adalora_fixtures.py).
final class AdaLoRATests: XCTestCase {
    static let steps = 6

    func load() throws -> (PyTorchParityTests.Case, SafetensorsFile, AdaLoRAAllocator) {
        let (c, reference) = try VariantFixtures.load("adalora")
        let config = try XCTUnwrap(c.adapter.config as? AdaLoRAConfig)
        return (c, reference, try AdaLoRAAllocator(adapter: c.adapter, config: config, totalStep: Self.steps))
    }

    func testPEFTsAdapterLoadsWithItsLogitsAndGradientsIncludingTheOrthogonalRegularisation() throws {
        let (c, reference, allocator) = try load()
        XCTAssertEqual(c.adapter.sites(of: AdaLoRA.self).count, 14)
        XCTAssertEqual(c.adapter.parameters.count, 42)
        XCTAssertEqual(c.adapter.sites(of: AdaLoRA.self)[0].adapter.scaling, 8 / (6 + 1e-5), "lora_alpha / (init_r + 1e-5)")
        let reals = PyTorchParityTests.realLogits
        XCTAssertLessThan(relativeError(reals(try c.model.logits(c.batch).array, c), reals(try reference.floats("logits"), c)), 1e-5)

        // The regulariser's own gradient first, then the whole step's.
        for p in c.adapter.parameters { p.grad.zero() }
        let term = allocator.addLossTerm(step: 1)
        XCTAssertEqual(term, 0.5 * Double(try reference.floats("orth_reg")[0]), accuracy: 1e-6)
        for p in c.adapter.parameters where !p.name.hasSuffix("lora_E") {
            XCTAssertLessThan(relativeError(p.grad.array, try reference.floats("orth_grad." + p.name)), 1e-5, p.name)
        }
        for p in c.adapter.parameters { p.grad.zero() }
        let ce = try c.model.forwardBackward(c.batch)
        XCTAssertEqual(ce, Double(try reference.floats("ce_loss")[0]), accuracy: 1e-5 * ce)
        let loss = ce + allocator.addLossTerm(step: 1)
        XCTAssertEqual(loss, Double(try reference.floats("loss")[0]), accuracy: 1e-5 * loss)
        for p in c.adapter.parameters {
            XCTAssertLessThan(relativeError(p.grad.array, try reference.floats("grad." + p.name)), 1e-4, p.name)
        }
    }

    /// Six AdamW steps with PEFT's update_and_allocate after each: the losses, the budgets of the
    /// cubic schedule, the smoothed importances, which triplets each allocation keeps, and the weights.
    func testSixStepsAllocateTheRanksPEFTAllocates() throws {
        let (c, reference, allocator) = try load()
        let optimizer = AdamW(parameters: c.adapter.parameters, learningRate: 1e-2, eps: 1e-4, weightDecay: 0.01)
        let trainer = Trainer(model: c.model, optimizer: optimizer, totalSteps: Self.steps, maxGradNorm: 0.5)
        trainer.hooks = [allocator]
        let losses = try reference.floats("losses"), norms = try reference.floats("grad_norms"), budgets = try reference.floats("budgets")
        let sites = c.adapter.sites(of: AdaLoRA.self).map(\.adapter)
        for s in 1...Self.steps {
            let r = try trainer.step([c.batch])
            XCTAssertEqual(r.loss, Double(losses[s - 1]), accuracy: 1e-5 * r.loss, "loss at step \(s)")
            XCTAssertEqual(r.gradNorm, norms[s - 1], accuracy: 1e-4 * norms[s - 1], "grad norm at step \(s)")
            XCTAssertEqual(allocator.budget, Int(budgets[s - 1]), "budget at step \(s)")
            if s == 4 {
                for (name, value) in allocator.checkpointTensors {
                    let key = name.replacingOccurrences(of: "adalora.sensitivity.", with: "exp_avg_ipt.")
                        .replacingOccurrences(of: "adalora.uncertainty.", with: "exp_avg_unc.")
                    XCTAssertLessThan(relativeError(value.array, try reference.floats(key)), 1e-3, key)
                }
            }
            if (2...5).contains(s) {
                let expected = try reference.floats("rank_after_step_\(s)").map { $0 == 1 }
                XCTAssertEqual(sites.flatMap { $0.keptTriplets ?? [] }, expected, "kept triplets after step \(s)")
            }
        }
        XCTAssertEqual(allocator.ranks.map(\.rank).reduce(0, +), 14 * 3, "the budget ends at target_r per layer")
        XCTAssertEqual(allocator.ranks.map(\.rank), [0, 0, 5, 5, 5, 4, 4, 0, 0, 4, 4, 5, 3, 3])
        for p in c.adapter.parameters {
            XCTAssertLessThan(relativeError(p.value.array, try reference.floats("final." + p.name)), 1e-4, p.name)
        }
        XCTAssertLessThan(relativeError(PyTorchParityTests.realLogits(try c.model.logits(c.batch).array, c),
                                        PyTorchParityTests.realLogits(try reference.floats("trained_logits"), c)), 1e-4)

        // Saved as PEFT saves it: the kept rows only, and the rank pattern in the config.
        let out = try temporaryDirectory()
        try c.adapter.save(to: out)
        let ours = try SafetensorsFile(path: out + "/adapter_model.safetensors")
        let peft = try SafetensorsFile(path: VariantFixtures.folder("adalora") + "/trained_adapter/adapter_model.safetensors")
        XCTAssertEqual(Set(ours.names), Set(peft.names))
        for name in peft.names {
            XCTAssertEqual(ours.tensors[name]?.shape, peft.tensors[name]?.shape, name)
            XCTAssertLessThan(relativeError(try ours.floats(name), try peft.floats(name)), 1e-4, name)
        }
        let config = try AdapterMethods.loadConfig(path: out + "/adapter_config.json") as? AdaLoRAConfig
        let peftConfig = try AdapterMethods.loadConfig(path: VariantFixtures.folder("adalora") + "/trained_adapter/adapter_config.json") as? AdaLoRAConfig
        XCTAssertEqual(config?.rankPattern, peftConfig?.rankPattern)
        func keys(_ path: String) throws -> Set<String> {
            Set((try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]).keys)
        }
        XCTAssertEqual(try keys(out + "/adapter_config.json"), try keys(VariantFixtures.folder("adalora") + "/adapter/adapter_config.json"))
    }

    /// PEFT's pruned adapter (zero-size tensors for the layers that kept no triplet) loads here with its logits.
    func testPEFTsTrainedAdapterLoadsWithItsRanks() throws {
        let (c, reference) = try VariantFixtures.load("adalora")
        try c.adapter.detach()
        let adapter = try Adapter.load(from: VariantFixtures.folder("adalora") + "/trained_adapter", into: c.model)
        XCTAssertEqual(adapter.sites(of: AdaLoRA.self).map(\.adapter.rank), [0, 0, 5, 5, 5, 4, 4, 0, 0, 4, 4, 5, 3, 3])
        let reals = PyTorchParityTests.realLogits
        XCTAssertLessThan(relativeError(reals(try c.model.logits(c.batch).array, c), reals(try reference.floats("trained_logits"), c)), 1e-5)
        // Merged, the model gives the same logits; unmerged, every base weight is back.
        let original = adapter.modules.map { $0.site.linear.weight.array }
        try adapter.merge()
        XCTAssertLessThan(relativeError(reals(try c.model.logits(c.batch).array, c), reals(try reference.floats("trained_logits"), c)), 1e-5)
        try adapter.unmerge()
        for (m, w0) in zip(adapter.modules, original) { XCTAssertLessThan(relativeError(m.site.linear.weight.array, w0), 1e-6, m.site.path) }
    }

    /// The budget on a longer run, by hand: Σ init_r through tinit, then
    /// ⌊(init − target)·(1 − (t − tinit)/(T − tfinal − tinit))³ + target⌋, then the target.
    func testBudgetFollowsTheCubicScheduleAndEndsAtTheTarget() throws {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        let config = AdaLoRAConfig(initR: 12, targetR: 4, targetModules: .allLinear, tinit: 10, tfinal: 20, deltaT: 5, totalStep: 100)
        let adapter = try Adapter.attach(to: model, config: config)
        let allocator = try AdaLoRAAllocator(adapter: adapter, config: config, totalStep: 100)
        XCTAssertEqual(allocator.initialBudget, 14 * 12)
        XCTAssertEqual(allocator.targetBudget, 14 * 4)
        XCTAssertTrue(allocator.schedule(step: 10) == (168, false))
        // t = 30: 112 · (1 − 20/70)³ + 56 = 112 · 0.364431… + 56 = 96.816… → 96, and 30 is a multiple of deltaT.
        XCTAssertTrue(allocator.schedule(step: 30) == (96, true))
        XCTAssertTrue(allocator.schedule(step: 31) == (94, false))  // 112 · (49/70)³ + 56 = 94.416
        XCTAssertTrue(allocator.schedule(step: 80) == (56, true))
        XCTAssertTrue(allocator.schedule(step: 81) == (56, true))
        let budgets = (11...80).map { allocator.schedule(step: $0).budget }
        XCTAssertEqual(budgets, budgets.sorted(by: >), "the budget never grows")
    }

    func testConfigsThatCannotScheduleAreRefusedInOneSentence() {
        let bad: [(AdaLoRAConfig, String)] = [
            (AdaLoRAConfig(initR: 4, targetR: 8), "target_r must be between 1 and init_r"),
            (AdaLoRAConfig(tinit: 10, tfinal: 5, totalStep: 12), "tinit (10) must be below total_step − tfinal"),
            (AdaLoRAConfig(deltaT: 0), "deltaT must be between"),
            (AdaLoRAConfig(totalStep: 0), "total_step must be between"),
        ]
        for (config, message) in bad {
            XCTAssertThrowsError(try config.validate(source: "adapter_config.json")) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
    }
}
