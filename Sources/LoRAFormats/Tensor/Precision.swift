import Foundation

/// The number format of the frozen base's matrix products (each linear layer's forward x·Wᵀ and
/// input gradient dy·W, the head included) and of attention's products (QKᵀ, P·V and their
/// gradients; `CausalAttention`), as bf16 autocast runs `linear` and `matmul`. Everything else stays
/// fp32 in either mode: the adapters' products, their gradients and optimizer state, the softmax,
/// norms, the loss and the residual stream (PEFT's practice of keeping adapters in fp32 under bf16
/// autocast).
public enum Precision: String, Sendable, CaseIterable, CustomStringConvertible {
    /// fp32 products: PyTorch's fp32 results to rounding order.
    case fp32
    /// Inputs rounded to bfloat16, products summed in fp32 (`Gemm.sgemmBF16`), as PyTorch's
    /// `torch.autocast("cpu", dtype=torch.bfloat16)` does for linear layers. bfloat16 keeps 8 significant
    /// bits: each rounding has relative error at most 2⁻⁸, so a product's error is at most about
    /// 2⁻⁷ ≈ 7.8e-3 of Σ|x|·|w| (typically far less: the roundings are unbiased and average out).
    case bf16

    public var description: String { rawValue }

    /// Whether this CPU runs the format's kernels (bf16: AVX-512 BF16's vdpbf16ps, or ARM64's BFDOT).
    public var isAvailable: Bool {
        switch self {
        case .fp32: true
        case .bf16: !CPUFeatures.current.isDisjoint(with: [.avx512BF16, .neonBF16])
        }
    }

    /// The instruction set the bf16 products run on here, for reports.
    public static var bf16Instructions: String { CPUFeatures.current.contains(.avx512BF16) ? "AVX-512 BF16" : "ARM BF16" }
}

extension Precision {
    /// `--precision auto`: bf16 where this CPU has it and its kernel is faster than the fp32 products
    /// of the backend in use, else fp32. Measured once per process on a 512×576×576 product, each
    /// route three times, alternating (about 20 ms): on AMD Zen 5 vdpbf16ps runs at 1.84× fp32's rate
    /// and a bf16 training step at 1.5× the fp32 one, but on the Xeon (Sapphire Rapids family) this
    /// project ran on it issued at half the rate of fp32 FMAs, and the bf16 products were 0.69× the fp32 ones.
    public static let fastest: Precision = {
        guard Precision.bf16.isAvailable else { return .fp32 }
        let m = 512, n = 576, k = 576
        let a = UnsafeMutablePointer<Float>.allocate(capacity: m * k), b = UnsafeMutablePointer<Float>.allocate(capacity: n * k)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        for i in 0..<(m * k) { a[i] = Float(i % 7) * 0.01 }
        for i in 0..<(n * k) { b[i] = Float(i % 5) * 0.01 }
        var fp32: [UInt64] = [], bf16: [UInt64] = []
        for _ in 0..<3 {
            for isBF16 in [false, true] {
                let product = isBF16 ? Gemm.sgemmBF16 : Gemm.sgemm
                let t0 = DispatchTime.now().uptimeNanoseconds
                product(false, true, m, n, k, 1, a, k, b, k, 0, c, n)
                let t = DispatchTime.now().uptimeNanoseconds - t0
                if isBF16 { bf16.append(t) } else { fp32.append(t) }
            }
        }
        return bf16.sorted()[1] < fp32.sorted()[1] ? .bf16 : .fp32
    }()
}
