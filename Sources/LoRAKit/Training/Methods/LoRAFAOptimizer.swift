import Foundation

/// LoRA-FA (Zhang et al. 2023) as PEFT's `LoraFAOptimizer` computes it: A stays frozen at its random
/// initialization and only B trains, with B's gradient projected before an Adam step,
/// g̃ = (1/s²) · g · (A·Aᵀ + 1e-8·I)⁻¹, which makes the B-only update approximate full LoRA's.
///
/// The update is the "adamw-hf" variant PEFT's optimizer implements, not torch's AdamW: ε is added to
/// the uncorrected √v, the bias correction goes into the step size, lr·√(1 − β2ᵗ)/(1 − β1ᵗ), and weight
/// decay comes after the update, B ← B − lr·wd·B. PEFT runs the projection under bf16 autocast (which
/// accelerate reports available on CPUs too), so g and the inverse are rounded to bfloat16, multiplied
/// with Float32 sums, and the product and its 1/s² scaling rounded to bfloat16 again; this does the same,
/// so the steps match PEFT's.
public final class LoRAFAOptimizer: Optimizer, @unchecked Sendable {
    public var learningRate: Float
    public let beta1: Float = 0.9
    public let beta2: Float = 0.999
    public var eps: Float
    public var weightDecay: Float
    /// The LoRAs whose B this trains, in site order.
    public let loras: [LoRA]
    public let parameters: [Parameter]
    public let m: [Tensor]
    public let v: [Tensor]
    public private(set) var step = 0
    /// (A·Aᵀ + 1e-8·I)⁻¹ per LoRA, [r × r], rounded to bfloat16 as the projection reads it; A never changes.
    private let projections: [Tensor]

    /// Freezes every LoRA's A (`trainsA = false`), as PEFT's `create_lorafa_optimizer` does.
    public init(loras: [LoRA], learningRate: Float = 1e-3, weightDecay: Float = 0, eps: Float = 1e-6) throws {
        self.loras = loras
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.eps = eps
        for lora in loras { lora.trainsA = false }
        parameters = loras.map(\.b)
        m = parameters.map { Tensor(shape: $0.value.shape) }
        v = parameters.map { Tensor(shape: $0.value.shape) }
        projections = try loras.map { lora in
            guard let inverse = Self.regularizedGramInverse(lora.a.value) else {
                throw LoRAError("LoRA-FA cannot project \(lora.b.name): A·Aᵀ of its A is not invertible (A holds a non-finite value or is all zero)")
            }
            for i in 0..<inverse.count { inverse[i] = bfloat16Rounded(inverse[i]) }
            return inverse
        }
    }

    public func update() {
        step += 1
        let t = Double(step)
        let stepSize = Float(Double(learningRate) * (1 - pow(Double(beta2), t)).squareRoot() / (1 - pow(Double(beta1), t)))
        let decay = learningRate * weightDecay
        for (i, lora) in loras.enumerated() {
            let b = lora.b, r = lora.rank, out = lora.outFeatures, count = b.value.count
            let g = Tensor(shape: [out, r]), projected = Tensor(shape: [out, r])
            for j in 0..<count { g[j] = bfloat16Rounded(b.grad[j]) }
            Gemm.sgemm(transA: false, transB: false, m: out, n: r, k: r, alpha: 1, a: g.data, lda: r,
                       b: projections[i].data, ldb: r, beta: 0, c: projected.data, ldc: r)
            let inverseSquare = Float(1 / (Double(lora.scaling) * Double(lora.scaling)))
            let w = b.value.data, m = self.m[i].data, v = self.v[i].data
            for j in 0..<count {
                let gj = bfloat16Rounded(bfloat16Rounded(projected[j]) * inverseSquare)
                m[j] = m[j] * beta1 + (1 - beta1) * gj
                v[j] = v[j] * beta2 + (1 - beta2) * gj * gj
                w[j] -= stepSize * (m[j] / (v[j].squareRoot() + eps))
                w[j] -= decay * w[j]
            }
        }
    }

    public func restore(step: Int) { self.step = step }

    /// (A·Aᵀ + 1e-8·I)⁻¹ for A [r × in]: the Gram matrix in Float32 as PEFT forms it, inverted by
    /// Cholesky in Double (it is symmetric positive definite); nil when it is not.
    static func regularizedGramInverse(_ a: Tensor) -> Tensor? {
        let r = a.shape[0], n = a.shape[1]
        let gram = Tensor(shape: [r, r])
        Gemm.sgemm(transA: false, transB: true, m: r, n: r, k: n, alpha: 1, a: a.data, lda: n, b: a.data, ldb: n,
                   beta: 0, c: gram.data, ldc: r)
        for i in 0..<r { gram[i * r + i] += 1e-8 }
        // G = L·Lᵀ, then G⁻¹ column by column from L·y = e, Lᵀ·x = y.
        var l = [Double](repeating: 0, count: r * r)
        for i in 0..<r {
            for j in 0...i {
                var sum = Double(gram[i * r + j])
                for k in 0..<j { sum -= l[i * r + k] * l[j * r + k] }
                if i == j {
                    guard sum > 0, sum.isFinite else { return nil }
                    l[i * r + i] = sum.squareRoot()
                } else {
                    l[i * r + j] = sum / l[j * r + j]
                }
            }
        }
        let inverse = Tensor(shape: [r, r])
        var y = [Double](repeating: 0, count: r)
        for column in 0..<r {
            for i in 0..<r {
                var sum = i == column ? 1.0 : 0.0
                for k in 0..<i { sum -= l[i * r + k] * y[k] }
                y[i] = sum / l[i * r + i]
            }
            for i in stride(from: r - 1, through: 0, by: -1) {
                var sum = y[i]
                for k in (i + 1)..<r { sum -= l[k * r + i] * y[k] }
                y[i] = sum / l[i * r + i]
            }
            for i in 0..<r { inverse[i * r + column] = Float(y[i]) }
        }
        return inverse
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), as a Float.
@inline(__always)
func bfloat16Rounded(_ x: Float) -> Float { bfloat16BitsToFloat(floatToBFloat16Bits(x)) }
