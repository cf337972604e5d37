import Foundation

/// RMSNorm as Llama defines it: y = w ∘ x / sqrt(mean(x²) + eps), per row of `dim` values.
public enum RMSNorm {
    /// Writes y and the per-row reciprocal RMS (`rstd`, kept for the backward pass).
    public static func forward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
                               rows: Int, dim: Int, y: UnsafeMutablePointer<Float>,
                               rstd: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(rows, minChunk: 16) { range in
            for r in range {
                let xr = x + r * dim, yr = y + r * dim
                var ss: Float = 0
                for i in 0..<dim { ss += xr[i] * xr[i] }
                let s = 1 / (ss / Float(dim) + eps).squareRoot()
                rstd[r] = s
                for i in 0..<dim { yr[i] = weight[i] * (xr[i] * s) }
            }
        }
    }

    /// Recomputes y from x and the saved `rstd` (cheaper to recompute than to keep per layer).
    public static func recompute(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                 rows: Int, dim: Int, y: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(rows, minChunk: 16) { range in
            for r in range {
                let xr = x + r * dim, yr = y + r * dim, s = rstd[r]
                for i in 0..<dim { yr[i] = weight[i] * (xr[i] * s) }
            }
        }
    }

    /// dx += ∂L/∂x given dy. With g = w ∘ dy: dx = s·g − s³/D · x · Σ(g ∘ x).
    public static func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                rstd: UnsafePointer<Float>, rows: Int, dim: Int, dx: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(rows, minChunk: 16) { range in
            for r in range {
                let xr = x + r * dim, dyr = dy + r * dim, dxr = dx + r * dim, s = rstd[r]
                var dot: Float = 0
                for i in 0..<dim { dot += weight[i] * dyr[i] * xr[i] }
                let c = s * s * s * dot / Float(dim)
                for i in 0..<dim { dxr[i] += s * weight[i] * dyr[i] - c * xr[i] }
            }
        }
    }
}
