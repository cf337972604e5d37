import Foundation

/// The gated MLP activation of Llama: a = silu(g) ∘ u, silu(g) = g·σ(g).
public enum SwiGLU {
    public static func forward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int,
                               out: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(count, minChunk: 4096) { range in
            var i = range.lowerBound
            while i + 8 <= range.upperBound {
                let g = UnsafeRawPointer(gate + i).loadUnaligned(as: SIMD8<Float>.self)
                let u = UnsafeRawPointer(up + i).loadUnaligned(as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(out + i).storeBytes(of: g / (1 + fastExp(-g)) * u, as: SIMD8<Float>.self)
                i += 8
            }
            while i < range.upperBound {
                let g = gate[i]
                out[i] = g / (1 + fastExp(-g)) * up[i]
                i += 1
            }
        }
    }

    /// From da, writes dg and du. Element-wise, so `dGate` may be the `gate` buffer and `dUp` the `up` buffer.
    /// σ' = σ(1−σ), so d silu/dg = σ(1 + g(1−σ)).
    public static func backward(da: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                                count: Int, dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(count, minChunk: 4096) { range in
            var i = range.lowerBound
            while i + 8 <= range.upperBound {
                let g = UnsafeRawPointer(gate + i).loadUnaligned(as: SIMD8<Float>.self)
                let u = UnsafeRawPointer(up + i).loadUnaligned(as: SIMD8<Float>.self)
                let d = UnsafeRawPointer(da + i).loadUnaligned(as: SIMD8<Float>.self)
                let sig = 1 / (1 + fastExp(-g))
                UnsafeMutableRawPointer(dUp + i).storeBytes(of: d * g * sig, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(dGate + i).storeBytes(of: d * u * sig * (1 + g * (1 - sig)), as: SIMD8<Float>.self)
                i += 8
            }
            while i < range.upperBound {
                let g = gate[i], u = up[i], sig = 1 / (1 + fastExp(-g)), d = da[i]
                dUp[i] = d * g * sig
                dGate[i] = d * u * sig * (1 + g * (1 - sig))
                i += 1
            }
        }
    }
}
