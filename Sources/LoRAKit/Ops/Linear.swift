/// A trainable change attached to a frozen linear layer (LoRA and its variants implement this).
///
/// The adapter keeps no per-batch state: what its backward needs from the forward is written to
/// `saved`, a caller-owned buffer of `savedFloatsPerRow · rows` floats, so the model lays out all
/// activations once per (batch, sequence) shape. The layer's bias is added after the adapter, so
/// the adapter sees the base output x·Wᵀ without it (DoRA rescales that output).
public protocol LinearAdapter: AnyObject {
    /// What the optimizer trains, named as in the adapter file.
    var parameters: [Parameter] { get }
    /// Every tensor the adapter file holds for this layer: the trained ones and any frozen ones
    /// (LoRA-FA's A), in a fixed order.
    var weights: [Parameter] { get }
    func savedFloatsPerRow(training: Bool) -> Int
    /// Whether `forward` reads the base output. When true, y holds x·Wᵀ alone on entry; when false
    /// it may also hold a residual the layer adds onto, and the adapter may only add to it.
    var readsBaseOutput: Bool { get }
    /// On entry y holds x·Wᵀ (see `readsBaseOutput`); on exit the adapted output, still without bias.
    func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>,
                 saved: UnsafeMutablePointer<Float>, training: Bool)
    /// The gradient the base path x·Wᵀ receives, when it is not dy itself: writes it into `into`
    /// ([rows × out]) and returns true (DoRA scales dy per output); returns false to use dy. Asked
    /// only of adapters that read the base output.
    func baseOutputGradient(dy: UnsafePointer<Float>, rows: Int, saved: UnsafeMutablePointer<Float>,
                            into: UnsafeMutablePointer<Float>) -> Bool
    /// Whether `backward` reads x. When no adapter of a block does (LoRA-FA: A frozen), the model
    /// skips recomputing the normalized inputs and the SwiGLU product in the backward pass.
    var readsInputInBackward: Bool { get }
    /// Accumulates parameter gradients from dy; adds the adapter path's input gradient into dx when dx is non-nil.
    func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int,
                  saved: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?)
    /// The weight that merging puts in place of the dense base weight W ([out × in]).
    func mergedWeight(_ weight: Tensor) -> Tensor
    /// W back from the weight `mergedWeight` returned.
    func unmergedWeight(_ merged: Tensor) -> Tensor
    /// The generators the forward draws random numbers from (dropout masks), in a fixed order:
    /// checkpoints save them and gradient checkpointing rewinds them, so every method resumes and
    /// recomputes bit for bit.
    var generators: [SeededRandom] { get set }
}

extension LinearAdapter {
    public var weights: [Parameter] { parameters }
    public var readsInputInBackward: Bool { true }
    public var readsBaseOutput: Bool { false }
    public func baseOutputGradient(dy: UnsafePointer<Float>, rows: Int, saved: UnsafeMutablePointer<Float>,
                                   into: UnsafeMutablePointer<Float>) -> Bool { false }
    public var generators: [SeededRandom] {
        get { [] }
        set {}
    }
}

/// A frozen linear layer y = x·Wᵀ + b (W is [out × in], Hugging Face's layout) with an optional adapter.
/// Only input gradients flow through W; no gradient for W or b is ever allocated. W may be packed
/// (quantized); products then expand it one panel of rows at a time.
public final class Linear: @unchecked Sendable {
    public let inFeatures: Int
    public let outFeatures: Int
    public private(set) var matrix: FrozenMatrix
    public let bias: Tensor?
    public var adapter: (any LinearAdapter)?
    /// True while the adapter's delta is folded into `weight`; the adapter branch is then skipped.
    public private(set) var isMerged = false
    /// The number format of the base products x·Wᵀ and dy·W (see `Precision`); the adapter's own
    /// products stay fp32. Products of fewer than `bf16MinimumRows` rows stay fp32 too.
    public var precision: Precision = .fp32

    public init(matrix: FrozenMatrix, bias: Tensor? = nil) {
        self.matrix = matrix
        self.bias = bias
        self.outFeatures = matrix.rows
        self.inFeatures = matrix.columns
    }

    public convenience init(weight: Tensor, bias: Tensor? = nil) {
        self.init(matrix: FrozenMatrix(weight), bias: bias)
    }

    /// W as a dense tensor: the stored one, or an expansion of packed rows.
    public var weight: Tensor { matrix.expanded() }

    /// Gives this layer its own Float32 copy of the weight (for a tied head that gets its own adapter).
    public func untie() { matrix = FrozenMatrix(weight.copy()) }

    /// Keeps a dense W in bfloat16 from now on (`BF16Matrix`): half the memory, and the bf16 products
    /// read it in place. Their results do not change (the kernel rounds W so anyway); products in
    /// fp32 (decoding, or after setting fp32 again) then see W rounded.
    func storeWeightInBF16() {
        if case .dense(let t) = matrix.storage, !isMerged { matrix = FrozenMatrix(packed: BF16Matrix(rounding: t)) }
    }

    /// W ← `weight` (a data-driven LoRA init leaves the residual of W here).
    func replaceWeight(_ weight: Tensor) {
        precondition(weight.shape == [outFeatures, inFeatures] && !isMerged, "replacing W with another shape or while merged")
        matrix = FrozenMatrix(weight)
    }

    var activeAdapter: (any LinearAdapter)? { isMerged ? nil : adapter }

    /// Whether `backward` reads its x argument (only an adapter ever does).
    var readsInputInBackward: Bool { activeAdapter?.readsInputInBackward ?? false }

    public func savedFloatsPerRow(training: Bool) -> Int {
        activeAdapter?.savedFloatsPerRow(training: training) ?? 0
    }

    /// y = x·Wᵀ + b + delta(x), overwriting y ([rows × out]).
    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>,
                        saved: UnsafeMutablePointer<Float>?, training: Bool) {
        forward(x: x, rows: rows, y: y, beta: 0, saved: saved, training: training)
    }

    /// y = beta·y + adapted(x·Wᵀ) + b; beta 1 adds onto a residual already in y.
    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, beta: Float,
                        saved: UnsafeMutablePointer<Float>?, training: Bool) {
        let adapter = activeAdapter
        if let adapter, adapter.readsBaseOutput, beta != 0 {
            // The adapter rescales x·Wᵀ, so it gets it without the residual, which is added after.
            let base = UnsafeMutablePointer<Float>.allocate(capacity: rows * outFeatures)
            defer { base.deallocate() }
            forward(x: x, rows: rows, y: base, beta: 0, saved: saved, training: training)
            let n = rows * outFeatures
            Parallel.forRanges(n, minChunk: 4096) { range in for i in range { y[i] = beta * y[i] + base[i] } }
            return
        }
        baseProduct(x: x, rows: rows, y: y, beta: beta)
        adapter?.forward(x: x, rows: rows, y: y, saved: saved!, training: training)
        if let bias {
            let b = bias.data, n = outFeatures
            Parallel.forRanges(rows, minChunk: 64) { range in
                for r in range { let yr = y + r * n; for j in 0..<n { yr[j] += b[j] } }
            }
        }
    }

    /// y = beta·y + x·Wᵀ.
    private func baseProduct(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, beta: Float) {
        if matrix.isPacked && rows <= Self.decodeRows {
            packedDecodeProduct(x: x, rows: rows, y: y, beta: beta)
        } else if basePrecision(rows: rows) == .bf16, let w = matrix.bf16Rows {
            Gemm.sgemmBF16(transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures, alpha: 1, a: x, lda: inFeatures,
                           b16: w, ldb: inFeatures, beta: beta, c: y, ldc: outFeatures)
        } else {
            let product = basePrecision(rows: rows) == .bf16 ? Gemm.sgemmBF16 : Gemm.sgemm
            matrix.forEachPanel { r0, n, w in
                product(false, true, rows, n, inFeatures, 1, x, inFeatures, w, inFeatures, beta, y + r0, outFeatures)
            }
        }
    }

    /// Below this many rows (token-by-token decoding) the bf16 kernel would spend more on rounding W
    /// into its packed pairs than it saves: each value of W serves only these few rows.
    static let bf16MinimumRows = 16

    private func basePrecision(rows: Int) -> Precision {
        precision == .bf16 && rows >= Self.bf16MinimumRows ? .bf16 : .fp32
    }

    /// Whether token-by-token products with quantized weights round the activations to 8 bits per
    /// block of 32 first, as llama.cpp does (`Q8Vectors`): faster, at the cost of exactness.
    public var quantizesDecodeActivations = false

    /// Whether `quantizesDecodeActivations` changes anything here: W is quantized rows of a type
    /// with an 8-bit dot kernel on this CPU.
    public var hasQ8DecodeProducts: Bool {
        if case .packed(let packed) = matrix.storage { return packed.hasQ8DotProducts }
        return false
    }

    /// Up to this many input rows (token-by-token decoding), a packed W is not expanded into panels:
    /// each thread expands a few of its rows into a small cache-resident buffer and takes dot products.
    static let decodeRows = 4

    private func packedDecodeProduct(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, beta: Float) {
        let n = inFeatures, out = outFeatures, chunk = 16
        if rows == 0 { return }
        if quantizesDecodeActivations, case .packed(let packed) = matrix.storage, packed.hasQ8DotProducts,
           let q8 = Q8Vectors(x: x, ldx: n, count: rows, length: n) {
            // The vectors rounded to 8 bits once, then integer products per block (QuantizedDot's Q8 kernels).
            Parallel.forRanges(out, minChunk: 64) { range in
                packed.dotProducts(first: range.lowerBound, step: 1, count: range.count, x: q8, beta: beta,
                                   y: y + range.lowerBound, ldy: out)
            }
            return
        }
        if case .packed(let packed) = matrix.storage, packed.hasDotProducts {
            // Straight from the quantized blocks (QuantizedDot): no Float32 rows at all.
            Parallel.forRanges(out, minChunk: 64) { range in
                packed.dotProducts(first: range.lowerBound, step: 1, count: range.count, x: x, ldx: n, nx: rows, beta: beta,
                                   y: y + range.lowerBound, ldy: out)
            }
            return
        }
        Parallel.forRanges(out, minChunk: 64) { range in
            let w = UnsafeMutablePointer<Float>.allocate(capacity: chunk * n)
            defer { w.deallocate() }
            for o0 in stride(from: range.lowerBound, to: range.upperBound, by: chunk) {
                let count = min(chunk, range.upperBound - o0)
                matrix.unpackOnThisThread(rows: o0..<(o0 + count), into: w)
                for i in 0..<count {
                    for r in 0..<rows {
                        let d = dot(x + r * n, w + i * n, n)
                        let dst = y + r * out + o0 + i
                        dst.pointee = beta == 0 ? d : beta * dst.pointee + d
                    }
                }
            }
        }
    }

    /// From dy ([rows × out]): accumulates the adapter's gradients and, when dx is non-nil, writes
    /// (accumulate false) or adds (accumulate true) the input gradient: the base path's, dy·W or
    /// the adapter's rescaled dy times W, plus the adapter path's share.
    public func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int,
                         saved: UnsafeMutablePointer<Float>?, dx: UnsafeMutablePointer<Float>?, accumulate: Bool) {
        let adapter = activeAdapter
        if let dx {
            var baseDy = dy
            // Only an adapter that reads the base output can rescale its gradient.
            let scaled = adapter?.readsBaseOutput == true ? UnsafeMutablePointer<Float>.allocate(capacity: rows * outFeatures) : nil
            defer { scaled?.deallocate() }
            if let adapter, let scaled, adapter.baseOutputGradient(dy: dy, rows: rows, saved: saved!, into: scaled) {
                baseDy = UnsafePointer(scaled)
            }
            if basePrecision(rows: rows) == .bf16, let w = matrix.bf16Rows {
                Gemm.sgemmBF16(transA: false, transB: false, m: rows, n: inFeatures, k: outFeatures, alpha: 1, a: baseDy,
                               lda: outFeatures, b16: w, ldb: inFeatures, beta: accumulate ? 1 : 0, c: dx, ldc: inFeatures)
            } else {
                // dx = Σ over panels of dy[:, panel] · W[panel, :]
                let product = basePrecision(rows: rows) == .bf16 ? Gemm.sgemmBF16 : Gemm.sgemm
                matrix.forEachPanel { r0, n, w in
                    product(false, false, rows, inFeatures, n, 1, baseDy + r0, outFeatures, w, inFeatures,
                            accumulate || r0 > 0 ? 1 : 0, dx, inFeatures)
                }
            }
        }
        adapter?.backward(dy: dy, x: x, rows: rows, saved: saved!, dx: dx)
    }

    /// The weight merging would put in place: W dense, then the adapter's merged weight.
    public func mergedWeight() throws -> Tensor {
        guard let adapter, !isMerged else {
            throw LoRAError(isMerged ? "this layer's adapter is already merged" : "this layer has no adapter to merge")
        }
        return adapter.mergedWeight(weight)
    }

    /// W ← the adapter's merged weight. Merging twice is refused, so W can always be restored by unmerge.
    /// A packed (quantized) W is expanded to Float32 first: re-quantizing would change W0.
    public func merge() throws {
        let merged = try mergedWeight()
        matrix = FrozenMatrix(merged)
        isMerged = true
    }

    /// W ← W0, undoing merge.
    public func unmerge() throws {
        guard let adapter, isMerged else { throw LoRAError("this layer has no merged adapter to unmerge") }
        matrix = FrozenMatrix(adapter.unmergedWeight(weight))
        isMerged = false
    }
}

/// Σ a[i]·b[i] over n values, eight lanes at a time.
@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    while i + 8 <= n {
        acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
        i += 8
    }
    var sum = acc.sum()
    while i < n { sum += a[i] * b[i]; i += 1 }
    return sum
}
