import Foundation

/// VeRA (Kopiczko et al. 2024) at one layer, as PEFT computes it: y += λ_b ⊙ (B_l·(λ_d ⊙ (A_l·x))),
/// where A_l = vera_A[:, :in] and B_l = vera_B[:out, :] are slices of one frozen random pair that
/// every adapted layer shares, and only the vectors λ_d [r] and λ_b [out] train (no alpha/r scaling).
/// Dropout, when set, applies to the adapter's input only, as in PEFT.
public final class VeRA: AdditiveAdapter, @unchecked Sendable {
    /// The shared projections: vera_A [r × maxIn], vera_B [maxOut × r].
    public let projectionA: Parameter
    public let projectionB: Parameter
    public let lambdaD: Parameter
    public let lambdaB: Parameter
    public let inFeatures: Int
    public let outFeatures: Int
    public var rank: Int { lambdaD.value.count }
    public let dropout: Float
    /// Draws the dropout masks; seeded so that training is repeatable.
    public var random: SeededRandom

    init(inFeatures: Int, outFeatures: Int, projectionA: Parameter, projectionB: Parameter, dInitial: Float, dropout: Float,
         name: String, random: inout SeededRandom) {
        precondition(projectionA.value.shape[1] >= inFeatures && projectionB.value.shape[0] >= outFeatures, "VeRA projections too small")
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.projectionA = projectionA
        self.projectionB = projectionB
        self.dropout = dropout
        self.random = SeededRandom(seed: random.next())
        let r = projectionA.value.shape[0]
        lambdaD = Parameter(name: name + ".vera_lambda_d", value: Tensor(shape: [r]))
        lambdaB = Parameter(name: name + ".vera_lambda_b", value: Tensor(shape: [outFeatures]))
        for i in 0..<r { lambdaD.value[i] = dInitial }
    }

    public var parameters: [Parameter] { [lambdaB, lambdaD] }
    /// u = A_l·x̃ per row, which both gradients read, and with dropout in training the mask; x itself
    /// is never needed again.
    public func savedFloatsPerRow(training: Bool) -> Int { rank + (training && dropout > 0 ? inFeatures : 0) }
    public var readsInputInBackward: Bool { false }
    public var generators: [SeededRandom] {
        get { [random] }
        set { if let first = newValue.first { random = first } }
    }

    private var maxIn: Int { projectionA.value.shape[1] }

    /// w = B_l·(λ_d ⊙ u), [rows × out].
    private func lifted(_ u: UnsafePointer<Float>, rows: Int, into w: UnsafeMutablePointer<Float>) {
        let r = rank, d = lambdaD.value.data
        let v = UnsafeMutablePointer<Float>.allocate(capacity: rows * r)
        defer { v.deallocate() }
        for row in 0..<rows { for i in 0..<r { v[row * r + i] = u[row * r + i] * d[i] } }
        Gemm.sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: r, alpha: 1, a: v, lda: r,
                   b: projectionB.value.data, ldb: r, beta: 0, c: w, ldc: outFeatures)
    }

    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>,
                        saved: UnsafeMutablePointer<Float>, training: Bool) {
        let u = saved, out = outFeatures
        let dropped = training && dropout > 0
            ? droppedInput(x, rows: rows, columns: inFeatures, rate: dropout, mask: saved + rows * rank, random: &random) : nil
        defer { dropped?.deallocate() }
        let input = dropped.map { UnsafePointer($0) } ?? x
        Gemm.sgemm(transA: false, transB: true, m: rows, n: rank, k: inFeatures, alpha: 1, a: input, lda: inFeatures,
                   b: projectionA.value.data, ldb: maxIn, beta: 0, c: u, ldc: rank)
        let w = UnsafeMutablePointer<Float>.allocate(capacity: rows * out)
        defer { w.deallocate() }
        lifted(u, rows: rows, into: w)
        let b = lambdaB.value.data
        for row in 0..<rows { for j in 0..<out { y[row * out + j] += b[j] * w[row * out + j] } }
    }

    public func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int,
                         saved: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?) {
        let u = saved, out = outFeatures, r = rank
        let w = UnsafeMutablePointer<Float>.allocate(capacity: rows * out)
        defer { w.deallocate() }
        lifted(u, rows: rows, into: w)
        // dλ_b = Σ_rows dy ⊙ w; then dw = dy ⊙ λ_b, reusing w.
        let b = lambdaB.value.data, db = lambdaB.grad.data
        for j in 0..<out {
            var sum = 0.0
            for row in 0..<rows { sum += Double(dy[row * out + j]) * Double(w[row * out + j]) }
            db[j] += Float(sum)
        }
        for row in 0..<rows { for j in 0..<out { w[row * out + j] = dy[row * out + j] * b[j] } }
        // dv = dw·B_l; dλ_d = Σ_rows dv ⊙ u; du = dv ⊙ λ_d.
        let dv = UnsafeMutablePointer<Float>.allocate(capacity: rows * r)
        defer { dv.deallocate() }
        Gemm.sgemm(transA: false, transB: false, m: rows, n: r, k: out, alpha: 1, a: w, lda: out,
                   b: projectionB.value.data, ldb: r, beta: 0, c: dv, ldc: r)
        let d = lambdaD.value.data, dd = lambdaD.grad.data
        for i in 0..<r {
            var sum = 0.0
            for row in 0..<rows { sum += Double(dv[row * r + i]) * Double(u[row * r + i]) }
            dd[i] += Float(sum)
        }
        guard let dx else { return }
        for row in 0..<rows { for i in 0..<r { dv[row * r + i] *= d[i] } }
        guard dropout > 0 else {
            Gemm.sgemm(transA: false, transB: false, m: rows, n: inFeatures, k: r, alpha: 1, a: dv, lda: r,
                       b: projectionA.value.data, ldb: maxIn, beta: 1, c: dx, ldc: inFeatures)
            return
        }
        // The dropout's backward: dx += mask ∘ (du·A_l).
        let mask = saved + rows * r, n = rows * inFeatures
        let through = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { through.deallocate() }
        Gemm.sgemm(transA: false, transB: false, m: rows, n: inFeatures, k: r, alpha: 1, a: dv, lda: r,
                   b: projectionA.value.data, ldb: maxIn, beta: 0, c: through, ldc: inFeatures)
        for i in 0..<n { dx[i] += mask[i] * through[i] }
    }

    /// ΔW = diag(λ_b)·B_l·diag(λ_d)·A_l, [out × in].
    public func deltaWeight() -> Tensor {
        let r = rank, scaledB = Tensor(shape: [outFeatures, r])
        let pb = projectionB.value, b = lambdaB.value, d = lambdaD.value
        for j in 0..<outFeatures { for i in 0..<r { scaledB[j * r + i] = b[j] * pb[j * r + i] * d[i] } }
        let delta = Tensor(shape: [outFeatures, inFeatures])
        Gemm.sgemm(transA: false, transB: false, m: outFeatures, n: inFeatures, k: r, alpha: 1, a: scaledB.data, lda: r,
                   b: projectionA.value.data, ldb: maxIn, beta: 0, c: delta.data, ldc: inFeatures)
        return delta
    }
}
