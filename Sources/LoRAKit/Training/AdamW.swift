import Foundation

/// AdamW exactly as torch.optim.AdamW computes it: decoupled weight decay, then Adam with bias
/// correction, p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε).
public final class AdamW: @unchecked Sendable {
    public var learningRate: Float
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    public var weightDecay: Float
    public let parameters: [Parameter]
    /// First and second moments, one pair per parameter (optimizer state only for what is trained).
    public let m: [Tensor]
    public let v: [Tensor]
    public private(set) var step = 0

    public init(parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                eps: Float = 1e-8, weightDecay: Float = 0) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        m = parameters.map { Tensor(shape: $0.value.shape) }
        v = parameters.map { Tensor(shape: $0.value.shape) }
    }

    /// Applies one update from the parameters' current gradients.
    public func update() {
        step += 1
        let bc1 = 1 - pow(beta1, Float(step)), bc2 = 1 - pow(beta2, Float(step))
        let stepSize = learningRate / bc1, bc2Root = bc2.squareRoot()
        let decay = 1 - learningRate * weightDecay
        for (i, p) in parameters.enumerated() {
            let w = p.value.data, g = p.grad.data, m = self.m[i].data, v = self.v[i].data
            for j in 0..<p.value.count {
                w[j] *= decay
                m[j] = beta1 * m[j] + (1 - beta1) * g[j]
                v[j] = beta2 * v[j] + (1 - beta2) * g[j] * g[j]
                w[j] -= stepSize * m[j] / (v[j].squareRoot() / bc2Root + eps)
            }
        }
    }

    /// Restores the step counter (when resuming from a checkpoint; m and v are restored by the caller).
    public func restore(step: Int) { self.step = step }

    public func zeroGrad() { for p in parameters { p.grad.zero() } }
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
