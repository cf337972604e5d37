import Foundation

/// The settings of a fine-tuning run. The ones that shape its arithmetic must be the same when a run
/// is resumed; the length and the reporting may change.
public struct TrainingSettings: Codable, Sendable, Equatable {
    /// Optimizer steps in all.
    public var iterations = 100
    /// Sequences per micro-batch.
    public var batchSize = 4
    /// Micro-batches per optimizer step.
    public var gradAccumulationSteps = 1
    public var learningRate: Float = 1e-4
    public var schedule: LRSchedule = .constant
    public var warmup = 0
    /// Clip the global gradient norm to this; nil: no clipping.
    public var maxGradNorm: Float? = 1
    public var weightDecay: Float = 0
    /// Seeds the data order (the adapter's initialization and dropout are seeded when it is attached).
    public var seed: UInt64 = 0
    /// Report (and record the training loss) every N steps.
    public var stepsPerReport = 10
    /// Evaluate on the validation set every N steps and at the end; 0: only at the end.
    public var stepsPerEval = 0
    /// Validation batches per evaluation; nil: all.
    public var validationBatches: Int? = nil
    /// Write a checkpoint every N steps (and always at the end); 0: only at the end.
    public var saveEvery = 0

    public init() {}

    /// The first setting that must match for `resumed` to continue a run made with `self`, as
    /// "name: old → new", or nil.
    func resumeMismatch(_ resumed: TrainingSettings) -> String? {
        let pairs: [(String, String, String)] = [
            ("batch size", "\(batchSize)", "\(resumed.batchSize)"),
            ("gradient accumulation steps", "\(gradAccumulationSteps)", "\(resumed.gradAccumulationSteps)"),
            ("learning rate", "\(learningRate)", "\(resumed.learningRate)"),
            ("learning-rate schedule", schedule.rawValue, resumed.schedule.rawValue),
            ("warmup", "\(warmup)", "\(resumed.warmup)"),
            ("max gradient norm", "\(maxGradNorm.map { "\($0)" } ?? "off")", "\(resumed.maxGradNorm.map { "\($0)" } ?? "off")"),
            ("weight decay", "\(weightDecay)", "\(resumed.weightDecay)"),
            ("seed", "\(seed)", "\(resumed.seed)"),
        ]
        return pairs.first { $0.1 != $0.2 }.map { "\($0.0): \($0.1) → \($0.2)" }
    }
}
