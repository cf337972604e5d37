import Foundation
import LoRAKit

/// Says once, on standard error, when matrix products run on the portable Swift kernel, the slow
/// path: how much faster the best route this machine has runs (timed here on a product of a
/// training step's shape), or, with none, how to get one.
enum SlowPathNotice {
    static func warnIfSlow() {
        guard Gemm.backend == .builtin else { return }
        let faster = GemmBackend.cpuKernels.filter { $0 != .builtin } + (Gemm.availableBLAS.map { [$0] } ?? [])
        let sentence: String
        if let best = faster.first {
            let factor = time(.builtin) / faster.map(time).min()!
            sentence = String(format: "matrix products run on the portable Swift kernel (LORA_BLAS=builtin), %.1f× slower here than %@; unset LORA_BLAS for the fast path",
                              factor, name(best))
        } else {
            sentence = "no BLAS library loaded and this CPU has no AVX2+FMA, so matrix products run on the portable Swift kernel, "
                + "about 2.6× slower than OpenBLAS (measured on an AMD EPYC); install it with: sudo apt-get install libopenblas0"
        }
        try? FileHandle.standardError.write(contentsOf: Data("note: \(sentence)\n".utf8))  // write(_:) traps when the write fails
    }

    private static func name(_ backend: GemmBackend) -> String {
        switch backend {
        case .avx512: "our AVX-512 kernel"
        case .avx2: "our AVX2 kernel"
        case .neon: "our NEON kernel"
        case .blas(let library): "the BLAS in \(library)"
        case .builtin: "the portable kernel"
        }
    }

    /// Seconds per product of 256 × 576 by 576 × 576 on `backend` (best of three, after a warm-up).
    private static func time(_ backend: GemmBackend) -> Double {
        let m = 256, n = 576, k = 576
        let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
        var c = [Float](repeating: 0, count: m * n)
        return Gemm.withBackend(backend) {
            var best = Double.infinity
            for _ in 0..<4 {
                let start = DispatchTime.now().uptimeNanoseconds
                Gemm.sgemm(transA: false, transB: true, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: k, beta: 0, c: &c, ldc: n)
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            return best
        }
    }
}
