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

    /// Bounds on the counts: far beyond any real run, and small enough that step, batch and token
    /// arithmetic can never overflow.
    public static let maximumSteps = 100_000_000
    public static let maximumBatchSize = 65_536
    public static let maximumAccumulationSteps = 65_536

    /// Checks every setting against its meaning, naming it by its `lora train` option; one sentence.
    public func validate() throws {
        func count(_ flag: String, _ value: Int, _ range: ClosedRange<Int>) throws {
            guard range.contains(value) else {
                let bounds = range.upperBound == .max ? "at least \(range.lowerBound)" : "between \(range.lowerBound) and \(range.upperBound)"
                throw LoRAError("--\(flag) must be \(bounds) (got \(value))")
            }
        }
        try count("iters", iterations, 1...Self.maximumSteps)
        try count("batch-size", batchSize, 1...Self.maximumBatchSize)
        try count("grad-accumulation-steps", gradAccumulationSteps, 1...Self.maximumAccumulationSteps)
        try count("warmup", warmup, 0...Self.maximumSteps)
        try count("steps-per-report", stepsPerReport, 1...Self.maximumSteps)
        try count("steps-per-eval", stepsPerEval, 0...Self.maximumSteps)
        try count("save-every", saveEvery, 0...Self.maximumSteps)
        if let validationBatches { try count("val-batches", validationBatches, 1...Int.max) }
        guard learningRate.isFinite && learningRate > 0 else {
            throw LoRAError("--learning-rate must be a finite number above 0 (got \(learningRate))")
        }
        if let maxGradNorm, !(maxGradNorm.isFinite && maxGradNorm > 0) {
            throw LoRAError("--max-grad-norm must be a finite number above 0, or off (got \(maxGradNorm))")
        }
        guard weightDecay.isFinite && weightDecay >= 0 else {
            throw LoRAError("--weight-decay must be a finite number of at least 0 (got \(weightDecay))")
        }
    }

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
