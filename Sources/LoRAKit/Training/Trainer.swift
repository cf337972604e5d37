import Foundation

/// One optimizer step at a time: gradient accumulation over micro-batches, global-norm clipping,
/// the learning-rate schedule and the optimizer (AdamW or a method's own). Same seed, data and thread count give the same bits.
public final class Trainer: @unchecked Sendable {
    public let model: LlamaModel
    public let optimizer: any Optimizer
    public var schedule: LRSchedule
    public var baseLearningRate: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    /// Clip the global gradient norm to this value; nil disables clipping.
    public var maxGradNorm: Float?
    /// The method's own work in each step, in order.
    public var hooks: [any TrainingHook] = []
    public private(set) var step = 0

    public struct StepResult: Sendable {
        public let loss: Double
        public let gradNorm: Float
        public let learningRate: Float
        /// Target tokens (where the loss is taken), and all tokens the model ran, padding excluded.
        public let tokens: Int
        public let processedTokens: Int
    }

    /// The ranks of a data-parallel run (nil: this process alone): each computes its share of every batch.
    public var group: (any DataParallelGroup)?

    public init(model: LlamaModel, optimizer: any Optimizer, schedule: LRSchedule = .constant, warmupSteps: Int = 0,
                totalSteps: Int, maxGradNorm: Float? = nil) {
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.baseLearningRate = optimizer.learningRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.maxGradNorm = maxGradNorm
    }

    /// Continues a run from a checkpoint taken after `step` steps (the optimizer's moments are restored by the caller).
    public func restore(step: Int) {
        self.step = step
        optimizer.restore(step: step)
    }

    /// Accumulates the mean of the micro-batches' gradients (each micro-batch's loss is its own mean
    /// over targets, as in PyTorch loops that divide by the accumulation count), then updates.
    /// Throws `NonFiniteTrainingError` when the loss or the gradient norm is not finite (before the
    /// update, which then never happens) or when the update makes a parameter non-finite (the step
    /// counter then stays put, and the parameters must not be kept).
    public func step(_ microBatches: [Batch]) throws -> StepResult {
        precondition(!microBatches.isEmpty, "a step needs at least one batch")
        optimizer.zeroGrad()
        let scale = 1 / Float(microBatches.count)
        var loss = 0.0
        if let group {
            // This rank's sequences of each batch, weighted by their share of the batch's targets; the
            // sums over the ranks are then the batch means one process takes. Every share runs, even
            // one without targets, so that dropout draws stay in step with one process's.
            for batch in microBatches {
                let part = batch.share(rank: group.rank, of: group.size)
                guard part.batchSize > 0 else { continue }
                let share = batch.targetCount == 0 ? 0 : Float(part.targetCount) / Float(batch.targetCount)
                let first = batch.batchSize * group.rank / group.size
                DropoutShare.rowsElsewhere = (first * batch.seqLen, (batch.batchSize - first - part.batchSize) * batch.seqLen)
                defer { DropoutShare.rowsElsewhere = (0, 0) }
                loss += Double(share) * (try model.forwardBackward(part, gradScale: scale * share))
            }
            try sumOverRanks(group, loss: &loss)
        } else {
            for batch in microBatches { loss += try model.forwardBackward(batch, gradScale: scale) }
        }
        loss /= Double(microBatches.count)
        for hook in hooks { loss += hook.addLossTerm(step: step + 1) }
        guard loss.isFinite else { throw NonFiniteTrainingError(step: step + 1, problem: "the loss is \(nonFiniteText(loss))") }
        // Measured first and clipped after, so that a non-finite norm is reported on unclipped gradients.
        let norm = clipGradientNorm(optimizer.parameters, maxNorm: .infinity)
        guard norm.isFinite else { throw NonFiniteTrainingError(step: step + 1, problem: "the gradient norm is \(nonFiniteText(norm)) (\(worstGradient()))") }
        if let maxGradNorm { clipGradientNorm(optimizer.parameters, maxNorm: maxGradNorm) }
        let lr = baseLearningRate * schedule.factor(step: step, warmup: warmupSteps, totalSteps: totalSteps)
        optimizer.learningRate = lr
        optimizer.update()
        if let bad = firstNonFinite(optimizer.parameters) {
            throw NonFiniteTrainingError(step: step + 1, problem: "the update made \(bad.name) non-finite at index \(bad.index)")
        }
        step += 1
        for hook in hooks { hook.afterUpdate(step: step) }
        return StepResult(loss: loss, gradNorm: norm, learningRate: lr,
                          tokens: microBatches.reduce(0) { $0 + $1.targetCount },
                          processedTokens: microBatches.reduce(0) { $0 + $1.tokenCount })
    }

    /// Replaces the gradients and the loss by their sums over the ranks, in one message each.
    private func sumOverRanks(_ group: any DataParallelGroup, loss: inout Double) throws {
        let parameters = optimizer.parameters
        var flat = [Float](repeating: 0, count: parameters.reduce(0) { $0 + $1.grad.count })
        flat.withUnsafeMutableBufferPointer { flat in
            var at = 0
            for p in parameters { (flat.baseAddress! + at).update(from: p.grad.data, count: p.grad.count); at += p.grad.count }
        }
        try flat.withUnsafeMutableBufferPointer { try group.sum($0) }
        flat.withUnsafeBufferPointer { flat in
            var at = 0
            for p in parameters { p.grad.data.update(from: flat.baseAddress! + at, count: p.grad.count); at += p.grad.count }
        }
        var total = [loss]
        try total.withUnsafeMutableBufferPointer { try group.sum($0) }
        loss = total[0]
    }

    /// The parameter whose gradient made the norm non-finite: the first with a NaN or ±Inf, else the
    /// largest (finite values whose squares overflow Float32 together).
    private func worstGradient() -> String {
        if let bad = firstNonFinite(optimizer.parameters, gradients: true) { return "the first non-finite gradient is in \(bad.name)" }
        let norms = optimizer.parameters.map { p in (p.name, p.grad.buffer.reduce(0.0) { $0 + Double($1) * Double($1) }) }
        return "the largest gradient is in \(norms.max { $0.1 < $1.1 }?.0 ?? "?")"
    }
}
