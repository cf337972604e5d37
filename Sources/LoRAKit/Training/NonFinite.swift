import Foundation

/// A step whose loss, gradients or updated parameters are not finite (NaN or ±Inf). `Trainer`
/// throws it before anything of that step is kept; `TrainingLoop` adds what is left on disk.
public struct NonFiniteTrainingError: Error, CustomStringConvertible, Sendable {
    /// The step (counted from 1) that went wrong.
    public let step: Int
    /// Where it appeared, e.g. "the loss is nan".
    public let problem: String

    public static let usualCauses = "usual causes: a learning rate too high, --max-grad-norm 0 (no gradient clipping), "
        + "or values in the data or model that overflow Float32"

    public var description: String { "training stopped at step \(step): \(problem) (\(Self.usualCauses))" }
}

/// "NaN", "inf" or "-inf" (Swift prints a NaN with its sign bit set as "-nan").
func nonFiniteText<F: BinaryFloatingPoint & CustomStringConvertible>(_ x: F) -> String { x.isNaN ? "NaN" : x.description }

/// The index of the first NaN or ±Inf among `values`, or nil when all are finite.
public func firstNonFinite(_ values: UnsafeBufferPointer<Float>) -> Int? {
    // Summing first keeps the common, all-finite case to one vectorizable pass: a sum of finite
    // floats in Double cannot overflow, so a non-finite sum means a non-finite value.
    var sum = 0.0
    for v in values { sum += Double(v) }
    guard !sum.isFinite else { return nil }
    return values.firstIndex { !$0.isFinite }
}

/// The first parameter holding a NaN or ±Inf, with the index of the value, or nil.
func firstNonFinite(_ parameters: [Parameter], gradients: Bool = false) -> (name: String, index: Int)? {
    for p in parameters {
        let t = gradients ? p.grad : p.value
        if let i = firstNonFinite(UnsafeBufferPointer(t.buffer)) { return (p.name, i) }
    }
    return nil
}
