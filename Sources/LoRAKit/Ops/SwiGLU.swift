import Foundation

/// The gated MLP activation of Llama: a = silu(g) ∘ u, silu(g) = g·σ(g).
public enum SwiGLU {
    public static func forward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int,
                               out: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(count, minChunk: 4096) { range in
            for i in range {
                let g = gate[i]
                out[i] = g / (1 + exp(-g)) * up[i]
            }
        }
    }

    /// From da, writes dg and du. Element-wise, so `dGate` may be the `gate` buffer and `dUp` the `up` buffer.
    /// σ' = σ(1−σ), so d silu/dg = σ(1 + g(1−σ)).
    public static func backward(da: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                                count: Int, dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(count, minChunk: 4096) { range in
            for i in range {
                let g = gate[i], u = up[i], sig = 1 / (1 + exp(-g)), d = da[i]
                dUp[i] = d * g * sig
                dGate[i] = d * u * sig * (1 + g * (1 - sig))
            }
        }
    }
}
