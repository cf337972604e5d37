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
    /// Keep the adapters of the last N saves in step-numbered folders beside the latest (`0000100_adapters/`); 0: none.
    public var keepCheckpoints = 0
    /// Also keep the adapter of the step with the best validation loss in `best_adapters/`.
    public var saveBest = false
    /// How the adapter trains (LoRA, LoRA+, LoRA-FA).
    public var method: TrainingMethod = .lora
    /// LoRA+'s ratio of B's learning rate to A's.
    public var loraPlusRatio: Float = 16

    public init() {}

    /// The largest LoRA+ ratio accepted (the paper's and PEFT's examples use 16 to 20).
    public static let maximumLoRAPlusRatio: Float = 1e6

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
        try count("keep-checkpoints", keepCheckpoints, 0...Self.maximumSteps)
        if let validationBatches { try count("val-batches", validationBatches, 1...Int.max) }
        guard learningRate.isFinite && learningRate > 0 else {
            throw LoRAError("--learning-rate must be a finite number above 0 (got \(learningRate))")
        }
        if let maxGradNorm, !(maxGradNorm.isFinite && maxGradNorm > 0) {
            throw LoRAError("--max-grad-norm must be a finite number above 0, or off (got \(maxGradNorm))")
        }
        guard loraPlusRatio.isFinite && loraPlusRatio > 0 && loraPlusRatio <= Self.maximumLoRAPlusRatio else {
            throw LoRAError("--lora-plus-ratio must be a number above 0 and at most 1000000 (got \(loraPlusRatio))")
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
            ("method", method.rawValue, resumed.method.rawValue),
            ("LoRA+ ratio", method == .loraPlus ? "\(loraPlusRatio)" : "-", resumed.method == .loraPlus ? "\(resumed.loraPlusRatio)" : "-"),
        ]
        return pairs.first { $0.1 != $0.2 }.map { "\($0.0) \($0.1) in the checkpoint, \($0.2) requested" }
    }
}

extension TrainingSettings {
    /// Decodes a checkpoint's settings; a setting the checkpoint predates keeps its default (runs
    /// saved before `method` existed were plain LoRA).
    public init(from decoder: any Swift.Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func read<T: Decodable>(_ value: inout T, _ key: CodingKeys) throws {
            if let decoded = try c.decodeIfPresent(T.self, forKey: key) { value = decoded }
        }
        try read(&iterations, .iterations)
        try read(&batchSize, .batchSize)
        try read(&gradAccumulationSteps, .gradAccumulationSteps)
        try read(&learningRate, .learningRate)
        try read(&schedule, .schedule)
        try read(&warmup, .warmup)
        maxGradNorm = try c.decodeIfPresent(Float.self, forKey: .maxGradNorm)
        try read(&weightDecay, .weightDecay)
        try read(&seed, .seed)
        try read(&stepsPerReport, .stepsPerReport)
        try read(&stepsPerEval, .stepsPerEval)
        validationBatches = try c.decodeIfPresent(Int.self, forKey: .validationBatches)
        try read(&saveEvery, .saveEvery)
        try read(&keepCheckpoints, .keepCheckpoints)
        try read(&saveBest, .saveBest)
        try read(&method, .method)
        try read(&loraPlusRatio, .loraPlusRatio)
    }
}
