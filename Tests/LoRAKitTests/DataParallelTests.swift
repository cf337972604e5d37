import Foundation
import XCTest
@testable import LoRAKit

/// Ranks as threads of this process, summing through shared memory: the data-parallel trainer
/// without MPI (scripts/mpi_checks.sh runs it under mpirun).
final class ThreadRanks: @unchecked Sendable {
    let size: Int
    private let condition = NSCondition()
    private var contributions: [[Double]]
    private var result: [Double] = []
    private var arrived = 0, round = 0

    init(size: Int) {
        self.size = size
        contributions = Array(repeating: [], count: size)
    }

    /// Every rank's values in, their sum (added in rank order, as a fixed reduction would) out.
    func reduce(rank: Int, _ values: [Double]) -> [Double] {
        condition.lock()
        defer { condition.unlock() }
        contributions[rank] = values
        arrived += 1
        if arrived == size {
            result = contributions.dropFirst().reduce(contributions[0]) { zip($0, $1).map { $0 + $1 } }
            arrived = 0
            round += 1
            condition.broadcast()
        } else {
            let mine = round
            while round == mine { condition.wait() }
        }
        return result
    }

    final class Rank: DataParallelGroup, @unchecked Sendable {
        let ranks: ThreadRanks, rank: Int
        var size: Int { ranks.size }
        init(_ ranks: ThreadRanks, rank: Int) { self.ranks = ranks; self.rank = rank }
        func sum(_ values: UnsafeMutableBufferPointer<Float>) throws {
            let total = ranks.reduce(rank: rank, values.map(Double.init))
            for i in values.indices { values[i] = Float(total[i]) }
        }
        func sum(_ values: UnsafeMutableBufferPointer<Double>) throws {
            let total = ranks.reduce(rank: rank, Array(values))
            for i in values.indices { values[i] = total[i] }
        }
    }
}

final class DataParallelTests: XCTestCase {
    func makeLoop(method: TrainingMethod = .lora, adalora: Bool = false, dropout: Float = 0) throws -> TrainingLoop {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        var ada = AdaLoRAConfig(initR: 6, targetR: 3, loraAlpha: 8, loraDropout: 0, targetModules: .allLinear, tinit: 2, tfinal: 2, deltaT: 1)
        ada.totalStep = 10
        let config: any AdapterConfiguration = adalora ? ada : LoRAConfig(r: 4, loraAlpha: 8, loraDropout: dropout, targetModules: .allLinear)
        let adapter = try Adapter.attach(to: model, config: config, seed: 9)
        var settings = TrainingSettings()
        settings.iterations = 10; settings.batchSize = 4; settings.gradAccumulationSteps = 2; settings.learningRate = 1e-3
        settings.seed = 3; settings.method = method; settings.maxGradNorm = 1; settings.loraPlusRatio = 4
        return try TrainingLoop(model: model, adapter: adapter, trainingSet: TrainingLoopTests.examples, validationSet: TrainingLoopTests.examples,
                                settings: settings, padId: 0)
    }

    /// Two ranks, each with half of every batch (by sequences, weighted by their targets), end where
    /// one process does, up to the order of the sums: after 10 steps with accumulation and clipping
    /// the adapter is within 1e-5 and the validation loss within 1e-6 (relative), for LoRA, LoRA+,
    /// AdaLoRA (whose allocator prunes to the same triplets) and LoRA with dropout (each rank draws
    /// the masks of the other ranks' rows and drops them, so every row gets one process's mask).
    /// (At a learning rate of 1e-2 with LoRA+'s ratio 16, Adam's first steps turn rounding-sized
    /// gradients into full-size updates of either sign, and the runs drift apart by 7e-2: the bound
    /// holds where the steps are of ordinary size.)
    func testTwoRanksEqualOneProcess() throws {
        for (method, adalora, dropout) in [(TrainingMethod.lora, false, Float(0)), (.loraPlus, false, 0), (.lora, true, 0), (.lora, false, 0.2)] {
            let one = try makeLoop(method: method, adalora: adalora, dropout: dropout)
            let oneSummary = try one.run(folder: nil)
            let ranks = ThreadRanks(size: 2)
            let loops = try (0..<2).map { _ in try makeLoop(method: method, adalora: adalora, dropout: dropout) }
            for (r, loop) in loops.enumerated() { loop.group = ThreadRanks.Rank(ranks, rank: r) }
            // Threads of their own: each blocks in its sums until the other arrives.
            final class Results: @unchecked Sendable { var summaries = [TrainingSummary?](repeating: nil, count: 2) }
            let results = Results(), done = DispatchSemaphore(value: 0)
            for r in 0..<2 {
                Thread { results.summaries[r] = try? loops[r].run(folder: nil); done.signal() }.start()
            }
            done.wait(); done.wait()
            for r in 0..<2 {
                let summary = try XCTUnwrap(results.summaries[r], "rank \(r) failed")
                XCTAssertEqual(summary.trainedTokens, oneSummary.trainedTokens, "every rank counts the whole batches")
                let a = loops[r].adapter.parameters.flatMap(\.value.array), b = one.adapter.parameters.flatMap(\.value.array)
                XCTAssertLessThan(relativeError(a, b), 1e-5, "\(method)\(adalora ? " adalora" : "") dropout \(dropout) rank \(r)")
                XCTAssertEqual(loops[r].adapter.generators, one.adapter.generators,
                               "each rank's dropout generators move as one process's")
                if adalora {  // the allocator, run on the summed gradients, keeps the same triplets
                    XCTAssertEqual(loops[r].adapter.sites(of: AdaLoRA.self).map(\.adapter.keptTriplets),
                                   one.adapter.sites(of: AdaLoRA.self).map(\.adapter.keptTriplets))
                }
                let v = try XCTUnwrap(summary.history.validation.last?.loss), w = try XCTUnwrap(oneSummary.history.validation.last?.loss)
                XCTAssertEqual(v, w, accuracy: 1e-6 * w)
            }
            XCTAssertEqual(loops[0].adapter.parameters.flatMap(\.value.array), loops[1].adapter.parameters.flatMap(\.value.array),
                           "the ranks update identically")
        }
    }

    func testAShareIsARunOfWholeSequences() {
        let batch = Batch(batchSize: 4, seqLen: 2, tokens: [1, 2, 3, 4, 5, 6, 7, 8], targets: [2, -100, 4, -100, 6, -100, 8, -100])
        let second = batch.share(rank: 1, of: 2)
        XCTAssertEqual(second.batchSize, 2)
        XCTAssertEqual(second.tokens, [5, 6, 7, 8])
        XCTAssertEqual(second.targets, [6, -100, 8, -100])
        // An epoch's short last batch: 3 sequences over 2 ranks, 1 and 2.
        let short = Batch(batchSize: 3, seqLen: 2, tokens: [1, 2, 3, 4, 5, 6], targets: [2, -100, 4, -100, 6, -100])
        XCTAssertEqual(short.share(rank: 0, of: 2).tokens, [1, 2])
        XCTAssertEqual(short.share(rank: 1, of: 2).tokens, [3, 4, 5, 6])
    }
}
