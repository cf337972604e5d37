#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// Thin SVD and QR of a row-major matrix, for the data-driven LoRA initializations (PiSSA, OLoRA).
/// LAPACK's sgesdd and sgeqrf + sorgqr from the BLAS library when it has them (torch calls the same
/// routines, so the factors match PEFT's up to the signs of singular-vector pairs), else a built-in
/// Double-precision version: one-sided Jacobi SVD and Householder QR with LAPACK's sign convention.
package enum Factorization {
    /// W [m × n] = U·diag(S)·Vᵀ with U [m × k], S [k] descending, Vᵀ [k × n], k = min(m, n).
    package static func svd(_ w: [Float], rows m: Int, columns n: Int) -> (u: [Float], s: [Float], vt: [Float]) {
        if let lapack = LAPACK.shared, let result = lapack.svd(w, rows: m, columns: n) { return result }
        return jacobiSVD(w, rows: m, columns: n)
    }

    /// The top-q singular triplets of W [m × n] by randomized subspace iteration, as torch.svd_lowrank
    /// computes them (Halko et al. 2009, algorithm 5; a wide W is handled through its transpose): a
    /// Gaussian sketch (here from `random`, so the result is this engine's own, not torch's) refined by
    /// `iterations` rounds of W·Wᵀ, then the SVD of the small projection. U [m × q], S [q], Vᵀ [q × n].
    package static func randomizedSVD(_ w: [Float], rows m: Int, columns n: Int, rank q: Int, iterations: Int,
                                      random: inout SeededRandom) -> (u: [Float], s: [Float], vt: [Float]) {
        // A = W, or Wᵀ when W is wide; A is [p × t] with p ≥ t.
        let wide = m < n, p = wide ? n : m, t = wide ? m : n
        var a = w
        if wide { a = [Float](repeating: 0, count: m * n); for i in 0..<m { for j in 0..<n { a[j * m + i] = w[i * n + j] } } }
        func product(_ x: [Float], _ xr: Int, _ xc: Int, _ y: [Float], _ yc: Int, transposeX: Bool = false) -> [Float] {
            // (transposeX ? xᵀ : x)·y, x stored [xr × xc], y [rows of the product's inner dim × yc]
            let rows = transposeX ? xc : xr, inner = transposeX ? xr : xc
            var out = [Float](repeating: 0, count: rows * yc)
            for i in 0..<rows { for k in 0..<inner {
                let xv = transposeX ? x[k * xc + i] : x[i * xc + k]
                if xv == 0 { continue }
                for j in 0..<yc { out[i * yc + j] += xv * y[k * yc + j] }
            } }
            return out
        }
        let cols = min(q, t)
        var sketch = [Float](repeating: 0, count: t * cols)
        for i in 0..<sketch.count { sketch[i] = random.normal() }
        var basis = qr(product(a, p, t, sketch, cols), rows: p, columns: cols).q           // [p × cols]
        for _ in 0..<iterations {
            let back = qr(product(a, p, t, basis, cols, transposeX: true), rows: t, columns: cols).q  // [t × cols]
            basis = qr(product(a, p, t, back, cols), rows: p, columns: cols).q
        }
        let small = product(basis, p, cols, a, t, transposeX: true)                          // Qᵀ·A, [cols × t]
        let (us, sv, vts) = svd(small, rows: cols, columns: t)
        let u = product(basis, p, cols, us, cols)                                           // [p × cols]
        if !wide { return (u, sv, vts) }
        // A = Wᵀ = u·S·vts, so W = vtsᵀ·S·uᵀ.
        var uw = [Float](repeating: 0, count: m * cols), vtw = [Float](repeating: 0, count: cols * n)
        for i in 0..<m { for j in 0..<cols { uw[i * cols + j] = vts[j * t + i] } }
        for j in 0..<cols { for i in 0..<n { vtw[j * n + i] = u[i * cols + j] } }
        return (uw, sv, vtw)
    }

    /// W [m × n] = Q·R with Q [m × k] (orthonormal columns) and R [k × n] upper triangular, k = min(m, n).
    package static func qr(_ w: [Float], rows m: Int, columns n: Int) -> (q: [Float], r: [Float]) {
        if let lapack = LAPACK.shared, let result = lapack.qr(w, rows: m, columns: n) { return result }
        return householderQR(w, rows: m, columns: n)
    }

    // MARK: built-in

    /// Householder QR in Double; R's diagonal takes LAPACK's signs (−sign of the column's leading entry).
    package static func householderQR(_ w: [Float], rows m: Int, columns n: Int) -> (q: [Float], r: [Float]) {
        let k = min(m, n)
        var a = w.map(Double.init)  // row-major m × n, becomes R above the diagonal
        var vs: [[Double]] = []
        for j in 0..<k {
            // As LAPACK's slarfg: no reflection (and no sign change) when nothing below the diagonal is left.
            var below = 0.0
            for i in (j + 1)..<max(j + 1, m) { below += a[i * n + j] * a[i * n + j] }
            var v = [Double](repeating: 0, count: m - j)
            guard below > 0 else { vs.append(v); continue }
            let alpha = a[j * n + j], norm = (alpha * alpha + below).squareRoot(), beta = alpha >= 0 ? -norm : norm
            v[0] = alpha - beta
            for i in (j + 1)..<m { v[i - j] = a[i * n + j] }
            let vv = v.reduce(0) { $0 + $1 * $1 }
            if vv > 0 {
                for c in j..<n {
                    var dotValue = 0.0
                    for i in j..<m { dotValue += v[i - j] * a[i * n + c] }
                    let f = 2 * dotValue / vv
                    for i in j..<m { a[i * n + c] -= f * v[i - j] }
                }
            }
            vs.append(vv > 0 ? v : [Double](repeating: 0, count: m - j))
        }
        // Q = H_0·H_1·…·H_{k-1} applied to the first k columns of the identity.
        var q = [Double](repeating: 0, count: m * k)
        for i in 0..<k { q[i * k + i] = 1 }
        for j in stride(from: k - 1, through: 0, by: -1) {
            let v = vs[j], vv = v.reduce(0) { $0 + $1 * $1 }
            guard vv > 0 else { continue }
            for c in 0..<k {
                var dotValue = 0.0
                for i in j..<m { dotValue += v[i - j] * q[i * k + c] }
                let f = 2 * dotValue / vv
                for i in j..<m { q[i * k + c] -= f * v[i - j] }
            }
        }
        var r = [Float](repeating: 0, count: k * n)
        for i in 0..<k { for c in i..<n { r[i * n + c] = Float(a[i * n + c]) } }
        return (q.map(Float.init), r)
    }

    /// One-sided Jacobi (Hestenes) SVD in Double: rotates pairs of columns of W (or Wᵀ when W is wide)
    /// until they are orthogonal; the column norms are then the singular values.
    package static func jacobiSVD(_ w: [Float], rows m: Int, columns n: Int) -> (u: [Float], s: [Float], vt: [Float]) {
        let tall = m >= n
        // Work on G [p × q], p ≥ q: W itself when tall, else Wᵀ; columns of G are rotated.
        let p = tall ? m : n, q = tall ? n : m
        var g = [Double](repeating: 0, count: p * q)
        for i in 0..<m { for j in 0..<n { if tall { g[i * q + j] = Double(w[i * n + j]) } else { g[j * q + i] = Double(w[i * n + j]) } } }
        var v = [Double](repeating: 0, count: q * q)
        for i in 0..<q { v[i * q + i] = 1 }
        for _ in 0..<60 {
            var rotated = false
            for a in 0..<q {
                for b in (a + 1)..<q {
                    var alpha = 0.0, beta = 0.0, gamma = 0.0
                    for i in 0..<p {
                        let x = g[i * q + a], y = g[i * q + b]
                        alpha += x * x; beta += y * y; gamma += x * y
                    }
                    guard abs(gamma) > 1e-15 * (alpha * beta).squareRoot(), gamma != 0 else { continue }
                    rotated = true
                    let zeta = (beta - alpha) / (2 * gamma)
                    let t = (zeta >= 0 ? 1.0 : -1.0) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
                    let c = 1 / (1 + t * t).squareRoot(), s = c * t
                    for i in 0..<p {
                        let x = g[i * q + a], y = g[i * q + b]
                        g[i * q + a] = c * x - s * y; g[i * q + b] = s * x + c * y
                    }
                    for i in 0..<q {
                        let x = v[i * q + a], y = v[i * q + b]
                        v[i * q + a] = c * x - s * y; v[i * q + b] = s * x + c * y
                    }
                }
            }
            if !rotated { break }
        }
        // Singular values: the column norms of G, largest first; G's columns divided by them are U's (or V's).
        let norms = (0..<q).map { c in (0..<p).reduce(0.0) { $0 + g[$1 * q + c] * g[$1 * q + c] }.squareRoot() }
        let order = (0..<q).sorted { norms[$0] > norms[$1] }
        let k = q
        var left = [Float](repeating: 0, count: p * k), right = [Float](repeating: 0, count: k * q)
        for (slot, c) in order.enumerated() {
            let sigma = norms[c]
            for i in 0..<p { left[i * k + slot] = sigma > 0 ? Float(g[i * q + c] / sigma) : 0 }
            for i in 0..<q { right[slot * q + i] = Float(v[i * q + c]) }
        }
        let s = order.map { Float(norms[$0]) }
        if tall { return (left, s, right) }  // W = G·… : U = left [m × k], Vᵀ = right [k × n]
        // Wᵀ = left·S·right, so W = rightᵀ·S·leftᵀ: U = rightᵀ [m × k], Vᵀ = leftᵀ [k × n].
        var u = [Float](repeating: 0, count: m * k), vt = [Float](repeating: 0, count: k * n)
        for i in 0..<m { for j in 0..<k { u[i * k + j] = right[j * q + i] } }
        for j in 0..<k { for i in 0..<n { vt[j * n + i] = left[i * k + j] } }
        return (u, s, vt)
    }
}

/// LAPACK from the BLAS library (OpenBLAS ships it), opened once.
private final class LAPACK: @unchecked Sendable {
    static let shared: LAPACK? = {
        if ProcessInfo.processInfo.environment["LORA_BLAS"] == "builtin" { return nil }
        return BLASLibrary.candidates.lazy.compactMap { LAPACK(name: $0) }.first
    }()

    // sgesdd_(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info, len(jobz))
    private typealias Sgesdd = @convention(c) (
        UnsafePointer<CChar>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?, UnsafeMutablePointer<Float>?,
        UnsafePointer<Int32>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafePointer<Int32>?,
        UnsafeMutablePointer<Float>?, UnsafePointer<Int32>?, UnsafeMutablePointer<Float>?, UnsafePointer<Int32>?,
        UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?, Int
    ) -> Void
    // sgeqrf_(m, n, a, lda, tau, work, lwork, info); sorgqr_(m, n, k, a, lda, tau, work, lwork, info)
    private typealias Sgeqrf = @convention(c) (
        UnsafePointer<Int32>?, UnsafePointer<Int32>?, UnsafeMutablePointer<Float>?, UnsafePointer<Int32>?,
        UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafePointer<Int32>?, UnsafeMutablePointer<Int32>?
    ) -> Void
    private typealias Sorgqr = @convention(c) (
        UnsafePointer<Int32>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?, UnsafeMutablePointer<Float>?,
        UnsafePointer<Int32>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafePointer<Int32>?,
        UnsafeMutablePointer<Int32>?
    ) -> Void

    private let sgesdd: Sgesdd, sgeqrf: Sgeqrf, sorgqr: Sorgqr

    private init?(name: String) {
        guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else { return nil }
        guard let a = dlsym(handle, "sgesdd_"), let b = dlsym(handle, "sgeqrf_"), let c = dlsym(handle, "sorgqr_") else {
            dlclose(handle)
            return nil
        }
        sgesdd = unsafeBitCast(a, to: Sgesdd.self)
        sgeqrf = unsafeBitCast(b, to: Sgeqrf.self)
        sorgqr = unsafeBitCast(c, to: Sorgqr.self)
    }

    /// Row-major W is column-major Wᵀ: the SVD of Wᵀ = U'·S·V'ᵀ gives W = V'·S·U'ᵀ, and LAPACK's
    /// column-major V'ᵀ [k × m] and U' [n × k] are, byte for byte, row-major U [m × k] and Vᵀ [k × n].
    func svd(_ w: [Float], rows m: Int, columns n: Int) -> (u: [Float], s: [Float], vt: [Float])? {
        let k = min(m, n)
        guard let mm = Int32(exactly: n), let nn = Int32(exactly: m), let kk = Int32(exactly: k) else { return nil }
        var a = w, s = [Float](repeating: 0, count: k)
        var uPrime = [Float](repeating: 0, count: n * k), vtPrime = [Float](repeating: 0, count: k * m)
        var iwork = [Int32](repeating: 0, count: 8 * k)
        var info: Int32 = 0, lwork: Int32 = -1, size: Float = 0
        var lda = mm, ldu = mm, ldvt = kk
        let job: [CChar] = [CChar(UInt8(ascii: "S")), 0]
        var mv = mm, nv = nn
        sgesdd(job, &mv, &nv, &a, &lda, &s, &uPrime, &ldu, &vtPrime, &ldvt, &size, &lwork, &iwork, &info, 1)
        guard info == 0 else { return nil }
        lwork = Int32(size)
        var work = [Float](repeating: 0, count: max(1, Int(lwork)))
        sgesdd(job, &mv, &nv, &a, &lda, &s, &uPrime, &ldu, &vtPrime, &ldvt, &work, &lwork, &iwork, &info, 1)
        guard info == 0 else { return nil }
        return (vtPrime, s, uPrime)
    }

    /// QR of W itself, so W goes in column-major (transposed); Q and R come back row-major.
    func qr(_ w: [Float], rows m: Int, columns n: Int) -> (q: [Float], r: [Float])? {
        let k = min(m, n)
        guard let mm = Int32(exactly: m), let nn = Int32(exactly: n), let kk = Int32(exactly: k) else { return nil }
        var a = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { a[i + j * m] = w[i * n + j] } }
        var tau = [Float](repeating: 0, count: k)
        var info: Int32 = 0, lwork: Int32 = -1, size: Float = 0
        var mv = mm, nv = nn, kv = kk, lda = mm
        sgeqrf(&mv, &nv, &a, &lda, &tau, &size, &lwork, &info)
        guard info == 0 else { return nil }
        lwork = Int32(size)
        var work = [Float](repeating: 0, count: max(1, Int(lwork)))
        sgeqrf(&mv, &nv, &a, &lda, &tau, &work, &lwork, &info)
        guard info == 0 else { return nil }
        var r = [Float](repeating: 0, count: k * n)
        for i in 0..<k { for j in i..<n { r[i * n + j] = a[i + j * m] } }
        lwork = -1
        sorgqr(&mv, &kv, &kv, &a, &lda, &tau, &size, &lwork, &info)
        guard info == 0 else { return nil }
        lwork = Int32(size)
        work = [Float](repeating: 0, count: max(1, Int(lwork)))
        sorgqr(&mv, &kv, &kv, &a, &lda, &tau, &work, &lwork, &info)
        guard info == 0 else { return nil }
        var q = [Float](repeating: 0, count: m * k)
        for i in 0..<m { for j in 0..<k { q[i * k + j] = a[i + j * m] } }
        return (q, r)
    }
}
