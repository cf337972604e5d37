import Foundation

/// AdamW exactly as torch.optim.AdamW computes it: decoupled weight decay, then Adam with bias
/// correction, p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε). Parameters come in groups, each
/// with its own learning-rate factor and weight decay, as torch's param_groups (LoRA+ trains B faster).
public final class AdamW: Optimizer, @unchecked Sendable {
    public struct Group: Sendable {
        public var parameters: [Parameter]
        /// The group's learning rate as a multiple of the optimizer's.
        public var learningRateScale: Float
        public var weightDecay: Float

        public init(parameters: [Parameter], learningRateScale: Float = 1, weightDecay: Float = 0) {
            self.parameters = parameters
            self.learningRateScale = learningRateScale
            self.weightDecay = weightDecay
        }
    }

    public var learningRate: Float
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    public let groups: [Group]
    public let parameters: [Parameter]
    /// First and second moments, one pair per parameter (optimizer state only for what is trained).
    public let m: [Tensor]
    public let v: [Tensor]
    public private(set) var step = 0

    public init(groups: [Group], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8) {
        self.groups = groups
        self.parameters = groups.flatMap(\.parameters)
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        m = parameters.map { Tensor(shape: $0.value.shape) }
        v = parameters.map { Tensor(shape: $0.value.shape) }
    }

    /// One group of every parameter.
    public convenience init(parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                            eps: Float = 1e-8, weightDecay: Float = 0) {
        self.init(groups: [Group(parameters: parameters, weightDecay: weightDecay)], learningRate: learningRate,
                  beta1: beta1, beta2: beta2, eps: eps)
    }

    public func update() {
        step += 1
        let bc1 = 1 - pow(beta1, Float(step)), bc2 = 1 - pow(beta2, Float(step))
        let bc2Root = bc2.squareRoot()
        var i = 0
        for group in groups {
            let lr = learningRate * group.learningRateScale
            let stepSize = lr / bc1, decay = 1 - lr * group.weightDecay
            for p in group.parameters {
                let w = p.value.data, g = p.grad.data, m = self.m[i].data, v = self.v[i].data
                for j in 0..<p.value.count {
                    w[j] *= decay
                    m[j] = beta1 * m[j] + (1 - beta1) * g[j]
                    v[j] = beta2 * v[j] + (1 - beta2) * g[j] * g[j]
                    w[j] -= stepSize * m[j] / (v[j].squareRoot() / bc2Root + eps)
                }
                i += 1
            }
        }
    }

    public func restore(step: Int) { self.step = step }
}

/// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_: returns the norm before clipping
/// and scales every gradient by min(1, maxNorm / (norm + 1e-6)).
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    var sum: Double = 0
    for p in parameters { for j in 0..<p.grad.count { sum += Double(p.grad[j]) * Double(p.grad[j]) } }
    let norm = Float(sum.squareRoot())
    let coef = min(1, maxNorm / (norm + 1e-6))
    if coef < 1 { for p in parameters { for j in 0..<p.grad.count { p.grad[j] *= coef } } }
    return norm
}
