import Foundation

/// Learning-rate schedules with linear warmup, as transformers' `get_*_schedule_with_warmup` define them.
public enum LRSchedule: String, Sendable, CaseIterable, Codable {
    case constant, linear, cosine

    /// The multiplier of the base learning rate at `step` (0-based) of `totalSteps`.
    public func factor(step: Int, warmup: Int, totalSteps: Int) -> Float {
        if step < warmup { return Float(step) / Float(max(1, warmup)) }
        switch self {
        case .constant:
            return 1
        case .linear:
            return max(0, Float(totalSteps - step) / Float(max(1, totalSteps - warmup)))
        case .cosine:
            let progress = Double(step - warmup) / Double(max(1, totalSteps - warmup))
            return Float(max(0, 0.5 * (1 + cos(Double.pi * progress))))
        }
    }
}
