import Foundation

/// DoRA (Liu et al. 2024) as PEFT computes it: the adapted weight is m ⊙ (W + s·B·A) / ‖W + s·B·A‖,
/// the norm taken per output row, with a trainable magnitude m [out] that starts at those norms. In
/// the backward the norm is a constant (the paper's section 4.3; PEFT detaches it), so
/// y = k ⊙ (x·Wᵀ + s·B·A·x) with k = m / ‖W + s·B·A‖, and the base path's gradient is dy ⊙ k.
/// The low-rank part is a `LoRA` (its A, B, scaling, initialization and dropout). With dropout in
/// training PEFT takes the rescaled base output on the dropped input x̃ instead:
/// y = x·Wᵀ + (k − 1) ⊙ (x̃·Wᵀ) + k ⊙ s·B·A·x̃, so that path costs one more product with W.
public final class DoRA: LinearAdapter, @unchecked Sendable {
    public let lora: LoRA
    /// m, [out]: PEFT's `lora_magnitude_vector`.
    public let magnitude: Parameter
    /// The layer whose frozen W the norms read (the layer holds this adapter strongly).
    private unowned let layer: Linear
    /// The row norms for the A and B they were computed from (a hash of their bits): each training
    /// step changes A and B, while decoding calls the forward once per token with the same ones.
    private var normCache: (key: UInt64, norms: [Float])?
    /// k at the last merge, which unmerging divides by (PEFT caches the weight norm the same way).
    private var mergedScale: [Float]?

    public init(lora: LoRA, layer: Linear, name: String) {
        self.lora = lora
        self.layer = layer
        magnitude = Parameter(name: name + ".lora_magnitude_vector", value: Tensor(shape: [lora.outFeatures]))
        let norms = rowNorms()
        for j in 0..<norms.count { magnitude.value[j] = norms[j] }
    }

    public var parameters: [Parameter] { lora.parameters + [magnitude] }
    public var weights: [Parameter] { lora.weights + [magnitude] }
    public var generators: [SeededRandom] {
        get { lora.generators }
        set { lora.generators = newValue }
    }
    public var readsBaseOutput: Bool { true }

    /// Per row: LoRA's own buffers (A·x̃, and the dropout mask in training), then the output before
    /// the scaling, x̃·Wᵀ + s·B·A·x̃ (out floats), which the magnitude's gradient reads.
    public func savedFloatsPerRow(training: Bool) -> Int { lora.savedFloatsPerRow(training: training) + lora.outFeatures }

    /// Whether the forward ran with dropout (a backward always follows a training forward).
    private var dropsInput: Bool { lora.dropout > 0 }

    /// ‖W + s·B·A‖ per output row, W expanded a panel at a time when it is quantized.
    func rowNorms() -> [Float] {
        let key = fingerprint()
        if let cache = normCache, cache.key == key { return cache.norms }
        let out = lora.outFeatures, inF = lora.inFeatures, r = lora.rank
        var norms = [Float](repeating: 0, count: out)
        layer.matrix.forEachPanel { r0, n, w in
            // A dense W comes as one panel of every row, a packed one in panels of `panelRows`.
            let panel = UnsafeMutablePointer<Float>.allocate(capacity: n * inF)
            defer { panel.deallocate() }
            panel.update(from: w, count: n * inF)
            Gemm.sgemm(transA: false, transB: false, m: n, n: inF, k: r, alpha: lora.scaling,
                       a: lora.b.value.data + r0 * r, lda: r, b: lora.a.value.data, ldb: inF, beta: 1, c: panel, ldc: inF)
            for i in 0..<n {
                var sum = 0.0
                let row = panel + i * inF
                for c in 0..<inF { sum += Double(row[c]) * Double(row[c]) }
                norms[r0 + i] = Float(sum.squareRoot())
            }
        }
        normCache = (key, norms)
        return norms
    }

    /// FNV-1a over the bits of A and B.
    private func fingerprint() -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for t in [lora.a.value, lora.b.value] {
            for v in t.buffer { h = (h ^ UInt64(v.bitPattern)) &* 0x100_0000_01b3 }
        }
        return h
    }

    /// k = m / ‖W + s·B·A‖ per output.
    private func scale() -> [Float] {
        let norms = rowNorms()
        return (0..<norms.count).map { magnitude.value[$0] / norms[$0] }
    }

    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>,
                        saved: UnsafeMutablePointer<Float>, training: Bool) {
        let out = lora.outFeatures, n = rows * out
        let pre = saved + rows * lora.savedFloatsPerRow(training: training)
        // pre = s·B·A·x̃ (LoRA's forward, which also draws and saves the mask), then + x̃·Wᵀ.
        pre.update(repeating: 0, count: n)
        lora.forward(x: x, rows: rows, y: pre, saved: saved, training: training)
        let k = scale()
        if training && dropsInput {
            let dropped = droppedBaseOutput(x: x, rows: rows, saved: saved)
            defer { dropped.deallocate() }
            // y = x·Wᵀ − x̃·Wᵀ + k ⊙ (x̃·Wᵀ + s·B·A·x̃)
            Parallel.forRanges(rows, minChunk: 16) { range in
                for row in range {
                    for j in 0..<out {
                        let i = row * out + j
                        pre[i] += dropped[i]
                        y[i] += k[j] * pre[i] - dropped[i]
                    }
                }
            }
        } else {
            Parallel.forRanges(rows, minChunk: 16) { range in
                for row in range { for j in 0..<out { let i = row * out + j; pre[i] += y[i]; y[i] = k[j] * pre[i] } }
            }
        }
    }

    /// The mask LoRA's forward saved, [rows × in], right after its r floats per row.
    private func mask(_ saved: UnsafeMutablePointer<Float>, rows: Int) -> UnsafeMutablePointer<Float> { saved + rows * lora.rank }

    /// x̃·Wᵀ for x̃ = x ⊙ mask (a new buffer of rows × out for the caller to free).
    private func droppedBaseOutput(x: UnsafePointer<Float>, rows: Int, saved: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        let inF = lora.inFeatures, out = lora.outFeatures, m = mask(saved, rows: rows)
        let xd = UnsafeMutablePointer<Float>.allocate(capacity: rows * inF)
        defer { xd.deallocate() }
        for i in 0..<(rows * inF) { xd[i] = x[i] * m[i] }
        let result = UnsafeMutablePointer<Float>.allocate(capacity: rows * out)
        layer.matrix.forEachPanel { r0, n, w in
            Gemm.sgemm(transA: false, transB: true, m: rows, n: n, k: inF, alpha: 1, a: xd, lda: inF,
                       b: w, ldb: inF, beta: 0, c: result + r0, ldc: out)
        }
        return result
    }

    /// dy ⊙ k; with dropout the undropped base output x·Wᵀ is kept as it is, so it gets dy itself.
    public func baseOutputGradient(dy: UnsafePointer<Float>, rows: Int, saved: UnsafeMutablePointer<Float>,
                                   into: UnsafeMutablePointer<Float>) -> Bool {
        guard !dropsInput else { return false }
        scaled(dy, rows: rows, k: scale(), into: into)
        return true
    }

    private func scaled(_ dy: UnsafePointer<Float>, rows: Int, k: [Float], into: UnsafeMutablePointer<Float>) {
        let out = lora.outFeatures
        Parallel.forRanges(rows, minChunk: 16) { range in
            for row in range { for j in 0..<out { into[row * out + j] = k[j] * dy[row * out + j] } }
        }
    }

    public func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int,
                         saved: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?) {
        let out = lora.outFeatures, inF = lora.inFeatures
        let pre = saved + rows * lora.savedFloatsPerRow(training: true)
        let norms = rowNorms(), k = scale()
        // dm = Σ_rows dy ∘ pre / ‖W + s·B·A‖
        let dm = magnitude.grad.data
        for j in 0..<out {
            var sum = 0.0
            for row in 0..<rows { sum += Double(dy[row * out + j]) * Double(pre[row * out + j]) }
            dm[j] += Float(sum) / norms[j]
        }
        // The low-rank path sees dy ∘ k (LoRA's backward applies the mask).
        let dyk = UnsafeMutablePointer<Float>.allocate(capacity: rows * out)
        defer { dyk.deallocate() }
        scaled(dy, rows: rows, k: k, into: dyk)
        lora.backward(dy: dyk, x: x, rows: rows, saved: saved, dx: dx)
        guard let dx, dropsInput else { return }
        // The dropped base path: dx += mask ∘ (((k − 1) ∘ dy)·W).
        for row in 0..<rows { for j in 0..<out { dyk[row * out + j] = (k[j] - 1) * dy[row * out + j] } }
        let through = UnsafeMutablePointer<Float>.allocate(capacity: rows * inF)
        defer { through.deallocate() }
        layer.matrix.forEachPanel { r0, n, w in
            Gemm.sgemm(transA: false, transB: false, m: rows, n: inF, k: n, alpha: 1, a: dyk + r0, lda: out,
                       b: w, ldb: inF, beta: r0 > 0 ? 1 : 0, c: through, ldc: inF)
        }
        let m = mask(saved, rows: rows)
        for i in 0..<(rows * inF) { dx[i] += m[i] * through[i] }
    }

    /// k ⊙ (W + s·B·A), keeping k for unmerge.
    public func mergedWeight(_ weight: Tensor) -> Tensor {
        let k = scale()
        mergedScale = k
        let merged = lora.mergedWeight(weight), n = lora.inFeatures
        for j in 0..<k.count { for i in 0..<n { merged[j * n + i] *= k[j] } }
        return merged
    }

    /// W'/k − s·B·A with the k of the merge.
    public func unmergedWeight(_ merged: Tensor) -> Tensor {
        let k = mergedScale ?? scale(), n = lora.inFeatures
        let divided = merged.copy()
        for j in 0..<k.count { for i in 0..<n { divided[j * n + i] /= k[j] } }
        mergedScale = nil
        return lora.unmergedWeight(divided)
    }
}
