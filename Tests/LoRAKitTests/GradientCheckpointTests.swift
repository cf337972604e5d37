import XCTest
@testable import LoRAKit

final class GradientCheckpointTests: XCTestCase {
    static let config = ModelConfig(hiddenSize: 32, intermediateSize: 64, numLayers: 4, numHeads: 4, numKVHeads: 2,
                                    vocabSize: 50, tieWordEmbeddings: true)
    static let rank = 4, rows = 2, seqLen = 9

    /// A random 4-block model with LoRA (dropout 0.1) on every linear layer of blocks 1–3; block 0
    /// is left out so that the backward stops above it.
    func model(checkpointing: Bool) throws -> (LlamaModel, Adapter) {
        let model = LlamaModel.random(config: Self.config, seed: 7)
        model.gradientCheckpointing = checkpointing
        let config = LoRAConfig(r: Self.rank, loraAlpha: 8, loraDropout: 0.1, targetModules: .allLinear,
                                layersToTransform: [1, 2, 3])
        let adapter = try Adapter.attach(to: model, config: config, seed: 3)
        // B starts at zero, which would leave every A gradient zero.
        for (_, lora) in adapter.sites(of: LoRA.self) { for i in 0..<lora.b.value.count { lora.b.value[i] = 0.01 * Float(i % 7 - 3) } }
        return (model, adapter)
    }

    func batch(seed: UInt64) -> Batch {
        var r = SeededRandom(seed: seed)
        let ids = (0..<(Self.rows * Self.seqLen)).map { _ in Int32(r.next() % 50) }
        return Batch(batchSize: Self.rows, seqLen: Self.seqLen, inputIds: ids, labels: ids)
    }

    func testCheckpointingGivesBitwiseTheSameLossGradientsAndDropoutState() throws {
        let (plain, plainAdapter) = try model(checkpointing: false)
        let (checkpointed, checkpointedAdapter) = try model(checkpointing: true)
        XCTAssertEqual(plain.lowestAdaptedBlock, 1)
        let initial = plainAdapter.sites(of: LoRA.self).map(\.adapter.random)

        let loss = try plain.forwardBackward(batch(seed: 1))
        XCTAssertEqual(try checkpointed.forwardBackward(batch(seed: 1)), loss)
        for (p, q) in zip(plainAdapter.parameters, checkpointedAdapter.parameters) {
            XCTAssertTrue(p.grad.array.contains { $0 != 0 }, p.name)
            XCTAssertEqual(q.grad.array, p.grad.array, p.name)
        }
        let after = plainAdapter.sites(of: LoRA.self).map(\.adapter.random)
        XCTAssertNotEqual(after, initial, "dropout drew no masks")
        XCTAssertEqual(checkpointedAdapter.sites(of: LoRA.self).map(\.adapter.random), after)
    }

    /// Under bf16, each block keeps gate and up in bfloat16 and computes in shared Float32 scratch;
    /// with checkpointing the one shared Block rounds them the same way, so both agree bit for bit,
    /// and the rounding is real (fp32 gives other gradients).
    func testCheckpointingGivesBitwiseTheSameGradientsInBF16() throws {
        guard Precision.bf16.isAvailable else { throw XCTSkip("this CPU has no AVX-512 BF16") }
        func gradients(checkpointing: Bool, precision: Precision) throws -> (Double, [[Float]]) {
            let (model, adapter) = try self.model(checkpointing: checkpointing)
            model.precision = precision
            let loss = try model.forwardBackward(batch(seed: 1))
            return (loss, adapter.parameters.map(\.grad.array))
        }
        let plain = try gradients(checkpointing: false, precision: .bf16)
        let checkpointed = try gradients(checkpointing: true, precision: .bf16)
        XCTAssertEqual(checkpointed.0, plain.0)
        XCTAssertEqual(checkpointed.1, plain.1)
        XCTAssertNotEqual(try gradients(checkpointing: false, precision: .fp32).1, plain.1)
    }

    func testCheckpointedTrainingStepsGiveBitwiseTheSameAdapter() throws {
        func train(checkpointing: Bool) throws -> (losses: [Double], parameters: [[Float]], randoms: [SeededRandom]) {
            let (model, adapter) = try self.model(checkpointing: checkpointing)
            let trainer = Trainer(model: model, optimizer: AdamW(parameters: adapter.parameters, learningRate: 1e-2),
                                  totalSteps: 3, maxGradNorm: 1)
            var losses: [Double] = []
            for s: UInt64 in 0..<3 { losses.append(try trainer.step([batch(seed: 2 * s), batch(seed: 2 * s + 1)]).loss) }
            return (losses, adapter.parameters.map(\.value.array), adapter.sites(of: LoRA.self).map(\.adapter.random))
        }
        let plain = try train(checkpointing: false), checkpointed = try train(checkpointing: true)
        XCTAssertEqual(checkpointed.losses, plain.losses)
        XCTAssertEqual(checkpointed.parameters, plain.parameters)
        XCTAssertEqual(checkpointed.randoms, plain.randoms)
    }

    /// DoRA (which reads the base output and rescales its gradient) and VeRA (whose layers share
    /// projections) recompute to the same gradients too.
    func testCheckpointingGivesTheSameGradientsForDoRAAndVeRA() throws {
        let configs: [any AdapterConfiguration] = [
            LoRAConfig(r: Self.rank, loraAlpha: 8, targetModules: .allLinear, useDoRA: true, layersToTransform: [1, 2, 3]),
            VeRAConfig(r: 8, targetModules: .allLinear, layersToTransform: [1, 2, 3]),
        ]
        for config in configs {
            func gradients(checkpointing: Bool) throws -> (Double, [[Float]]) {
                let model = LlamaModel.random(config: Self.config, seed: 7)
                model.gradientCheckpointing = checkpointing
                let adapter = try Adapter.attach(to: model, config: config, seed: 3)
                for p in adapter.parameters where p.name.hasSuffix("lora_B.weight") || p.name.hasSuffix("vera_lambda_b") {
                    for i in 0..<p.value.count { p.value[i] = 0.01 * Float(i % 7 - 3) }
                }
                let loss = try model.forwardBackward(batch(seed: 1))
                return (loss, adapter.parameters.map(\.grad.array))
            }
            let plain = try gradients(checkpointing: false), checkpointed = try gradients(checkpointing: true)
            XCTAssertEqual(checkpointed.0, plain.0, config.methodName)
            XCTAssertEqual(checkpointed.1, plain.1, config.methodName)
            XCTAssertTrue(plain.1.allSatisfy { $0.contains { $0 != 0 } }, "\(config.methodName): a parameter got no gradient")
        }
    }

    func testCheckpointingKeepsOneBlockOfActivations() throws {
        let (model, _) = try model(checkpointing: false)
        let b = batch(seed: 1)
        func arenaFloats() throws -> Int {
            try model.forwardBackward(b)
            return try XCTUnwrap(model.arena.value).floatCount
        }
        let plain = try arenaFloats()
        model.gradientCheckpointing = true
        let checkpointed = try arenaFloats()
        model.gradientCheckpointing = false
        XCTAssertEqual(try arenaFloats(), plain)

        // Without checkpointing each of the 4 blocks keeps rstd1, q, k, v, attention output, lse, x2,
        // rstd2, gate and up, and blocks 1–3 their adapters' u (rank floats per row) and dropout
        // mask (one float per input feature). With it, one such set serves all blocks.
        let c = Self.config, n = Self.rows * Self.seqLen, r = Self.rank
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim, d = c.hiddenSize, f = c.intermediateSize
        let block = n * (1 + q + kv + kv + q + d + 1 + f + f) + Self.rows * c.numHeads * Self.seqLen
        let adapters = n * (7 * r + 5 * d + q + f)  // inputs: q, k, v, gate, up read d; o reads q; down reads f
        XCTAssertEqual(plain - checkpointed, 3 * block + 2 * adapters)
    }
}
