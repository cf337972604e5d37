/// An adapter whose change is a weight delta added to W (LoRA, VeRA, AdaLoRA): merging adds the
/// delta and unmerging subtracts it.
public protocol AdditiveAdapter: LinearAdapter {
    /// ΔW, [out × in].
    func deltaWeight() -> Tensor
}

extension AdditiveAdapter {
    /// W + ΔW.
    public func mergedWeight(_ weight: Tensor) -> Tensor { adding(sign: 1, to: weight) }
    /// W' − ΔW.
    public func unmergedWeight(_ merged: Tensor) -> Tensor { adding(sign: -1, to: merged) }

    private func adding(sign: Float, to weight: Tensor) -> Tensor {
        let delta = deltaWeight(), w = weight.data, d = delta.data
        for i in 0..<delta.count { d[i] = w[i] + sign * d[i] }
        return delta
    }
}

/// u = A·x̃ into `saved` ([rows × rank]), with x̃ = x, or in training with dropout x ∘ mask, the mask
/// drawn into `saved` after u: the forward LoRA and AdaLoRA share.
func lowRankInput(x: UnsafePointer<Float>, rows: Int, a: Parameter, dropout: Float, training: Bool,
                  saved: UnsafeMutablePointer<Float>, random: inout SeededRandom) {
    let rank = a.value.shape[0], inFeatures = a.value.shape[1]
    let dropped = training && dropout > 0
        ? droppedInput(x, rows: rows, columns: inFeatures, rate: dropout, mask: saved + rows * rank, random: &random) : nil
    defer { dropped?.deallocate() }
    Gemm.sgemm(transA: false, transB: true, m: rows, n: rank, k: inFeatures, alpha: 1,
               a: dropped.map { UnsafePointer($0) } ?? x, lda: inFeatures, b: a.value.data, ldb: inFeatures, beta: 0, c: saved, ldc: rank)
}

/// The backward of u = A·x̃ (x̃ = x, or x ∘ mask under dropout) that LoRA and AdaLoRA share, given
/// du ([rows × rank]): A's gradient += duᵀ·x̃ when A trains, and dx += mask ∘ (du·A) when dx is non-nil.
func lowRankInputBackward(du: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, a: Parameter, trainsA: Bool,
                          mask: UnsafePointer<Float>?, dx: UnsafeMutablePointer<Float>?) {
    let rank = a.value.shape[0], inFeatures = a.value.shape[1], n = rows * inFeatures
    guard let mask else {
        if trainsA {
            Gemm.sgemm(transA: true, transB: false, m: rank, n: inFeatures, k: rows, alpha: 1,
                       a: du, lda: rank, b: x, ldb: inFeatures, beta: 1, c: a.grad.data, ldc: inFeatures)
        }
        if let dx {
            Gemm.sgemm(transA: false, transB: false, m: rows, n: inFeatures, k: rank, alpha: 1,
                       a: du, lda: rank, b: a.value.data, ldb: inFeatures, beta: 1, c: dx, ldc: inFeatures)
        }
        return
    }
    let xd = UnsafeMutablePointer<Float>.allocate(capacity: n)
    defer { xd.deallocate() }
    if trainsA {
        for i in 0..<n { xd[i] = x[i] * mask[i] }
        Gemm.sgemm(transA: true, transB: false, m: rank, n: inFeatures, k: rows, alpha: 1,
                   a: du, lda: rank, b: xd, ldb: inFeatures, beta: 1, c: a.grad.data, ldc: inFeatures)
    }
    if let dx {
        // The dropout's backward, reusing xd as the scratch.
        Gemm.sgemm(transA: false, transB: false, m: rows, n: inFeatures, k: rank, alpha: 1,
                   a: du, lda: rank, b: a.value.data, ldb: inFeatures, beta: 0, c: xd, ldc: inFeatures)
        for i in 0..<n { dx[i] += xd[i] * mask[i] }
    }
}
