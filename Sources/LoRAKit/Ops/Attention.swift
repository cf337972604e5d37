import Foundation

/// Causal multi-head attention with grouped key/value heads over a batch of right-padded sequences.
///
/// Layouts (row-major, one row per token, row n = b·T + t):
///   q, out, dq: [N × heads·headDim];  k, v, dk, dv: [N × kvHeads·headDim];  lse: [B × heads × T].
/// Right padding needs no extra mask: a real token never attends to later (pad) positions, and
/// pad positions' outputs are excluded from the loss by the caller.
///
/// Only the causal (lower) half is computed: query rows go in blocks (`rowBlock`), and block i
/// multiplies against keys 0..<(i+1)·block only. The forward keeps the softmax's log-sum-exp per
/// row, not the T×T probabilities; the backward recomputes them (FlashAttention's trade).
///
/// Where the CPU has the kernels (`packedKernel`: AVX-512, AVX-512 BF16, AVX2) both passes run the
/// packed path of `CausalAttention+Packed.swift`; elsewhere, and with a BLAS as the backend, the
/// products go through `Gemm`, as below.
///
/// In bf16 precision the seven products (QKᵀ, P·V; in the backward QKᵀ again, dO·Vᵀ, dS·K, dSᵀ·Q,
/// Pᵀ·dO) take bfloat16-rounded operands with fp32 sums, as PyTorch's bf16 autocast runs `matmul`;
/// their results, the softmax, its log-sum-exp and dS = P∘(dP − D) stay fp32.
public struct CausalAttention: Sendable {
    public let heads: Int
    public let kvHeads: Int
    public let headDim: Int
    public var block = 64
    /// The number format of the attention products (see above): the model's `precision`.
    public var precision: Precision = .fp32
    /// Query rows per block on the packed path (`CausalAttention+Packed.swift`), or nil for its kernel's
    /// choice (`PackedKernel.rowBlock`).
    public var packedBlock: Int? = nil
    /// Whether the AVX-512 path runs where it can (`runsPacked`); tests turn it off to compare the two.
    var packedKernels = true

    public init(heads: Int, kvHeads: Int, headDim: Int) {
        precondition(heads % kvHeads == 0, "heads must be a multiple of kvHeads")
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
    }

    var scale: Float { 1 / Float(headDim).squareRoot() }

    /// `Gemm.sgemm` or `Gemm.sgemmBF16`, by `precision`.
    private func multiply(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                          a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                          beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let product = precision == .bf16 ? Gemm.sgemmBF16 : Gemm.sgemm
        product(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }

    /// Query rows per block for sequences of T tokens on the `Gemm` path: `block`, or 128 from 2048
    /// tokens on. Each row block re-packs the keys and values it multiplies, so long sequences gain from taller blocks
    /// (1 × 4096 trained 8–9% faster at 128 than at 64), while short ones lose more to the wasted
    /// upper half of the diagonal block (1 × 256 ran 7–18% slower at 128).
    /// On the packed path it is `packedBlock` or its kernel's choice, made even for bf16: a block's
    /// keys then pair up without the last pair reaching a key the block must not see.
    public func rowBlock(seqLen T: Int) -> Int {
        if let kernel = packedKernel {
            let rows = max(1, packedBlock ?? kernel.rowBlock)
            return kernel.isBF16 ? (rows + 1) / 2 * 2 : rows
        }
        return T >= 2048 ? max(block, 128) : block
    }

    /// The memory `backward` (the larger of the two passes) allocates for `batch` sequences of T tokens:
    /// each thread's scratch, and the per-head shares of dk and dv it sums. A Double, so that absurd
    /// shapes give a huge estimate, not an overflow.
    public func scratchBytes(batch: Int, seqLen T: Int) -> Double {
        let rows = Double(min(rowBlock(seqLen: T), T)), threads = Double(Parallel.threadCount)
        let share = 2 * Double(T) * Double(headDim) * 4, tasks = Double(batch) * Double(heads)
        if runsPacked {
            let perThread = PackedScratch.regions(rows: Int(rows), seqLen: T, headDim: headDim).reduce(0.0) { $0 + Double($1) }
            return threads * perThread + (tasks + threads - 1) * share
        }
        return threads * (2 * rows * Double(T) + rows) * 4 + tasks * share
    }

    public func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                        batch: Int, seqLen T: Int, out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        var attention = self
        attention.block = rowBlock(seqLen: T)
        let block = attention.block
        if runsPacked { return attention.packedForward(q: q, k: k, v: v, batch: batch, seqLen: T, out: out, lse: lse) }
        Gemm.singleThreaded {
            Parallel.forRanges(batch * heads) { tasks in
                let scores = UnsafeMutablePointer<Float>.allocate(capacity: min(block, T) * T)
                defer { scores.deallocate() }
                for task in tasks {
                    attention.forwardHead(b: task / heads, h: task % heads, q: q, k: k, v: v, T: T, out: out, lse: lse, scores: scores)
                }
            }
        }
    }

    /// One (sequence, head): softmax(scale·QKᵀ) row block by row block, then times V.
    private func forwardHead(b: Int, h: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                             T: Int, out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
                             scores s: UnsafeMutablePointer<Float>) {
        let qd = heads * headDim, kvd = kvHeads * headDim, kvh = h / (heads / kvHeads)
        let qb = q + b * T * qd + h * headDim, ob = out + b * T * qd + h * headDim
        let kb = k + b * T * kvd + kvh * headDim, vb = v + b * T * kvd + kvh * headDim
        let lseb = lse + (b * heads + h) * T
        for r0 in stride(from: 0, to: T, by: block) {
            let rows = min(block, T - r0), keys = r0 + rows
            multiply(transA: false, transB: true, m: rows, n: keys, k: headDim, alpha: scale,
                     a: qb + r0 * qd, lda: qd, b: kb, ldb: kvd, beta: 0, c: s, ldc: keys)
            for i in 0..<rows {
                lseb[r0 + i] = causalSoftmaxRow(s + i * keys, valid: r0 + i + 1, count: keys)
            }
            multiply(transA: false, transB: false, m: rows, n: headDim, k: keys, alpha: 1,
                     a: s, lda: keys, b: vb, ldb: kvd, beta: 0, c: ob + r0 * qd, ldc: qd)
        }
    }

    /// Writes dq, dk and dv (overwriting) from dOut, the saved inputs, output and log-sum-exp.
    public func backward(dOut: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                         v: UnsafePointer<Float>, out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
                         batch: Int, seqLen T: Int,
                         dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
        var attention = self
        attention.block = rowBlock(seqLen: T)
        if runsPacked {
            return attention.packedBackward(dOut: dOut, q: q, k: k, v: v, out: out, lse: lse, batch: batch, seqLen: T, dq: dq, dk: dk, dv: dv)
        }
        let rowsMax = min(attention.block, T)
        // One task per (sequence, query head), each with its own dk and dv partials ([T × headDim]
        // each), summed per kv head afterwards: tasks per kv head alone were too few to share out
        // (batch 1 with SmolLM2's 3 kv heads kept one of two threads idle a third of the time).
        let partials = UnsafeMutablePointer<Float>.allocate(capacity: batch * heads * 2 * T * headDim)
        defer { partials.deallocate() }
        Gemm.singleThreaded {
            Parallel.forRanges(batch * heads) { tasks in
                // P and dP/dS blocks, and the row dots D_i = dO_i · O_i.
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * rowsMax * T + rowsMax)
                defer { scratch.deallocate() }
                for task in tasks {
                    let dkPart = partials + task * 2 * T * headDim
                    attention.backwardHead(b: task / heads, h: task % heads, dOut: dOut, q: q, k: k, v: v, out: out, lse: lse, T: T,
                                 dq: dq, dk: dkPart, dv: dkPart + T * headDim, scratch: scratch)
                }
            }
            sumShares(partials, owners: Array(0..<batch * heads), batch: batch, seqLen: T, dk: dk, dv: dv)
        }
    }

    /// dk and dv (overwritten) as the sums of the query heads' shares: share i, [T × headDim] of dk then
    /// of dv at partials + i·2·T·headDim, belongs to task owners[i] (b·heads + query head), and each
    /// kv head sums its group's shares in their order.
    func sumShares(_ partials: UnsafePointer<Float>, owners: [Int], batch: Int, seqLen T: Int,
                   dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
        let group = heads / kvHeads, kvd = kvHeads * headDim, hd = headDim
        Parallel.forRanges(batch * kvHeads) { tasks in
            for task in tasks {
                let b = task / kvHeads, kvh = task % kvHeads
                let mine = owners.indices.filter { owners[$0] / heads == b && owners[$0] % heads / group == kvh }
                for t in 0..<T {
                    let dkRow = dk + (b * T + t) * kvd + kvh * hd, dvRow = dv + (b * T + t) * kvd + kvh * hd
                    for (n, i) in mine.enumerated() {
                        let part = partials + i * 2 * T * hd + t * hd
                        for j in 0..<hd {
                            dkRow[j] = n == 0 ? part[j] : dkRow[j] + part[j]
                            dvRow[j] = n == 0 ? part[T * hd + j] : dvRow[j] + part[T * hd + j]
                        }
                    }
                }
            }
        }
    }

    /// One (sequence, query head): its dq, and its share of dk and dv ([T × headDim], contiguous).
    private func backwardHead(b: Int, h: Int, dOut: UnsafePointer<Float>, q: UnsafePointer<Float>,
                              k: UnsafePointer<Float>, v: UnsafePointer<Float>, out: UnsafePointer<Float>,
                              lse: UnsafePointer<Float>, T: Int, dq: UnsafeMutablePointer<Float>,
                              dk dkb: UnsafeMutablePointer<Float>, dv dvb: UnsafeMutablePointer<Float>,
                              scratch: UnsafeMutablePointer<Float>) {
        let qd = heads * headDim, kvd = kvHeads * headDim, kvh = h / (heads / kvHeads), rowsMax = min(block, T)
        let p = scratch, ds = scratch + rowsMax * T, dots = scratch + 2 * rowsMax * T
        let kb = k + b * T * kvd + kvh * headDim, vb = v + b * T * kvd + kvh * headDim
        dkb.update(repeating: 0, count: T * headDim)
        dvb.update(repeating: 0, count: T * headDim)
        let qb = q + b * T * qd + h * headDim, ob = out + b * T * qd + h * headDim
        let dob = dOut + b * T * qd + h * headDim, dqb = dq + b * T * qd + h * headDim
        let lseb = lse + (b * heads + h) * T
        for r0 in stride(from: 0, to: T, by: block) {
            let rows = min(block, T - r0), keys = r0 + rows
            multiply(transA: false, transB: true, m: rows, n: keys, k: headDim, alpha: scale,
                     a: qb + r0 * qd, lda: qd, b: kb, ldb: kvd, beta: 0, c: p, ldc: keys)
            multiply(transA: false, transB: true, m: rows, n: keys, k: headDim, alpha: 1,
                     a: dob + r0 * qd, lda: qd, b: vb, ldb: kvd, beta: 0, c: ds, ldc: keys)
            for i in 0..<rows {
                let o = ob + (r0 + i) * qd, d = dob + (r0 + i) * qd
                var dot: Float = 0
                for j in 0..<headDim { dot += o[j] * d[j] }
                dots[i] = dot
            }
            for i in 0..<rows {
                let prow = p + i * keys, dsrow = ds + i * keys, valid = r0 + i + 1
                _ = expShiftedSum(prow, count: valid, shift: lseb[r0 + i])  // P = exp(S − lse)
                let dot = dots[i]
                for j in 0..<valid { dsrow[j] = prow[j] * (dsrow[j] - dot) }
                (prow + valid).update(repeating: 0, count: keys - valid)
                (dsrow + valid).update(repeating: 0, count: keys - valid)
            }
            // dQ = scale·dS·K;  dK += scale·dSᵀ·Q;  dV += Pᵀ·dO
            multiply(transA: false, transB: false, m: rows, n: headDim, k: keys, alpha: scale,
                     a: ds, lda: keys, b: kb, ldb: kvd, beta: 0, c: dqb + r0 * qd, ldc: qd)
            multiply(transA: true, transB: false, m: keys, n: headDim, k: rows, alpha: scale,
                     a: ds, lda: keys, b: qb + r0 * qd, ldb: qd, beta: 1, c: dkb, ldc: headDim)
            multiply(transA: true, transB: false, m: keys, n: headDim, k: rows, alpha: 1,
                     a: p, lda: keys, b: dob + r0 * qd, ldb: qd, beta: 1, c: dvb, ldc: headDim)
        }
    }
}
