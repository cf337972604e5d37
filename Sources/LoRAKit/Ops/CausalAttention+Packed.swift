import LoRAFormats
import LoRAKernels

/// CausalAttention's packed path (Attention.c), on AVX-512 (fp32 and bf16) and AVX2 (fp32): the same
/// seven products as the `Gemm` path over causal row blocks, but each head's keys and values are
/// packed once into the kernels' panels (the `Gemm` path packed them again for every row block), and
/// the softmax kernels write the probabilities, and in the backward dS, straight into the layouts the
/// next products read in place (the `Gemm` path packed every P and dS block, a sixth of a 1 × 4096
/// step in bf16, and its softmax's exp ran on SSE, Swift's baseline, another sixth). The forward
/// leaves P unnormalized and scales each output row by 1/Σ (FlashAttention's order; in bf16 the
/// rounding of P thus differs from the `Gemm` path's, within bf16's bound).
///
/// Scratch per thread, ld = T rounded up to 32: S (and dP) as fp32 rows of ld; in bf16, P (dS) as
/// bfloat16 rows of ld, and for the products that read Pᵀ and dSᵀ, pairs of rows interleaved into
/// bfloat16 pairs (word j of pair i holds rows 2i and 2i + 1 at key j: the pairs along the query
/// axis that those products sum over).
extension CausalAttention {
    /// The kernels of this path: their tile's rows, and the width of the packed panels.
    enum PackedKernel {
        /// fp32 products on the AVX-512 14×32 tile.
        case avx512
        /// bf16 products (vdpbf16ps) on the same tile, from bfloat16 pairs.
        case avx512bf16
        /// fp32 products on the AVX2+FMA 6×16 tile.
        case avx2

        /// Query rows per block: whole tiles (14 or 6 rows). On the Zen 5 1 × 4096 in bf16 trained at
        /// 496, 499 and 479 tokens/s with 56 rows against 470 and 442 with 128; 28 and 42 were slower.
        var rowBlock: Int { self == .avx2 ? 48 : 56 }
        var panel: Int { self == .avx2 ? 16 : 32 }
        var isBF16: Bool { self == .avx512bf16 }
    }

    /// The kernels `forward` and `backward` run this path with, or nil for the `Gemm` path: bf16 with
    /// AVX-512 BF16; fp32 while the AVX-512 or AVX2 kernel is the `Gemm` backend (so forcing another
    /// backend, or a BLAS, covers the `Gemm` path); head sizes in whole panels.
    var packedKernel: PackedKernel? {
        guard packedKernels else { return nil }
        let kernel: PackedKernel
        switch (precision, Gemm.backend) {
        case (.bf16, _) where CPUFeatures.current.contains(.avx512BF16): kernel = .avx512bf16
        case (.fp32, .avx512): kernel = .avx512
        case (.fp32, .avx2): kernel = .avx2
        default: return nil
        }
        return headDim % kernel.panel == 0 ? kernel : nil
    }

    var runsPacked: Bool { packedKernel != nil }

    /// A run of one (sequence, head) task's row blocks, done by one thread.
    struct Segment {
        let task: Int
        let blocks: Range<Int>
    }

    /// The tasks' row blocks in order (task by task, block by block), cut into at most `parts`
    /// contiguous runs of about equal work, a block's work being its keys (r0 + rows): with SmolLM2's 9 heads, one task
    /// per head left one of two threads idle for a ninth of each pass. Each run is a list of segments.
    static func schedule(tasks: Int, seqLen T: Int, block: Int, parts: Int) -> [[Segment]] {
        let blocks = (T + block - 1) / block
        let perTask = (0..<blocks).reduce(0) { $0 + min(($1 + 1) * block, T) }
        let total = tasks * perTask
        var runs: [[Segment]] = [], run: [Segment] = [], done = 0
        for task in 0..<tasks {
            var start = 0
            for i in 0..<blocks {
                done += min((i + 1) * block, T)
                // Cut after this block once the run holds its share (the last run takes the rest).
                if runs.count < parts - 1 && done * parts >= total * (runs.count + 1) {
                    run.append(Segment(task: task, blocks: start..<i + 1))
                    runs.append(run)
                    run = []
                    start = i + 1
                }
            }
            if start < blocks { run.append(Segment(task: task, blocks: start..<blocks)) }
        }
        runs.append(run)
        return runs.filter { !$0.isEmpty }
    }

    func packedForward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, batch: Int, seqLen T: Int,
                       out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        let runs = Self.schedule(tasks: batch * heads, seqLen: T, block: block, parts: Parallel.threadCount)
        Parallel.forRanges(runs.count) { parts in
            let scratch = PackedScratch(rows: min(block, T), seqLen: T, headDim: headDim)
            defer { scratch.deallocate() }
            for segment in parts.flatMap({ runs[$0] }) {
                packedForwardHead(b: segment.task / heads, h: segment.task % heads, blocks: segment.blocks, q: q, k: k, v: v,
                                  T: T, out: out, lse: lse, scratch: scratch)
            }
        }
    }

    func packedBackward(dOut: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                        out: UnsafePointer<Float>, lse: UnsafePointer<Float>, batch: Int, seqLen T: Int,
                        dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
        let runs = Self.schedule(tasks: batch * heads, seqLen: T, block: block, parts: Parallel.threadCount)
        let segments = runs.flatMap { $0 }, hd = headDim
        // Each segment's share of dk and dv ([T × headDim] each), summed per kv head afterwards.
        let partials = UnsafeMutablePointer<Float>.allocate(capacity: segments.count * 2 * T * hd)
        defer { partials.deallocate() }
        let firstSegment = runs.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        Parallel.forRanges(runs.count) { parts in
            let scratch = PackedScratch(rows: min(block, T), seqLen: T, headDim: hd)
            defer { scratch.deallocate() }
            for part in parts {
                for (i, segment) in runs[part].enumerated() {
                    let dkPart = partials + (firstSegment[part] + i) * 2 * T * hd
                    packedBackwardHead(b: segment.task / heads, h: segment.task % heads, blocks: segment.blocks, dOut: dOut,
                                       q: q, k: k, v: v, out: out, lse: lse, T: T, dq: dq, dk: dkPart, dv: dkPart + T * hd,
                                       scratch: scratch)
                }
            }
        }
        sumShares(partials, owners: segments.map(\.task), batch: batch, seqLen: T, dk: dk, dv: dv)
    }

    /// One thread's buffers, carved from one 64-byte-aligned allocation.
    struct PackedScratch {
        let memory: UnsafeMutableRawPointer
        /// Scores S, or in the backward S and dP: rows × ld floats each.
        let s: UnsafeMutablePointer<Float>, dp: UnsafeMutablePointer<Float>
        /// bf16: P rows (forward) or dS rows (backward), rows × ld.
        let rows16: UnsafeMutablePointer<UInt16>
        /// bf16 backward: dS and P as pairs of rows, ⌈rows/2⌉ × ld words each.
        let dsPairs: UnsafeMutablePointer<UInt32>, pPairs: UnsafeMutablePointer<UInt32>
        /// K packed for S = Q·Kᵀ, V for P·V (forward) or dP = dO·Vᵀ (backward), K for dQ = dS·K.
        let kPanels: UnsafeMutableRawPointer, vPanels: UnsafeMutableRawPointer, kByKeys: UnsafeMutableRawPointer
        /// A block's Q and dO rows packed for dK and dV (the pairs along the query axis).
        let qBlock: UnsafeMutableRawPointer, dOutBlock: UnsafeMutableRawPointer
        /// bf16: the head's Q and dO rows rounded to bfloat16, T × headDim.
        let q16: UnsafeMutablePointer<UInt16>, dOut16: UnsafeMutablePointer<UInt16>
        /// The row dots D_i = dO_i · O_i of a block; in the forward, the rows' 1 / Σ exp.
        let dots: UnsafeMutablePointer<Float>

        /// The bytes of each buffer, in the order of the properties above, each rounded up to 64.
        static func regions(rows: Int, seqLen T: Int, headDim hd: Int) -> [Int] {
            let ld = (T + 31) / 32 * 32, pairRows = (rows + 1) / 2
            // fp32 panels are the larger: ld × headDim floats for every packing of K or V.
            let bytes = [rows * ld * 4, rows * ld * 4, rows * ld * 2, pairRows * ld * 4, pairRows * ld * 4,
                         ld * hd * 4, ld * hd * 4, ld * hd * 4, (rows + 1) * hd * 4, (rows + 1) * hd * 4,
                         T * hd * 2, T * hd * 2, rows * 4]
            return bytes.map { ($0 + 63) / 64 * 64 }
        }

        init(rows: Int, seqLen T: Int, headDim hd: Int) {
            let sizes = Self.regions(rows: rows, seqLen: T, headDim: hd)
            memory = UnsafeMutableRawPointer.allocate(byteCount: sizes.reduce(0, +), alignment: 64)
            var starts: [UnsafeMutableRawPointer] = [], at = memory
            for size in sizes { starts.append(at); at += size }
            s = starts[0].assumingMemoryBound(to: Float.self)
            dp = starts[1].assumingMemoryBound(to: Float.self)
            rows16 = starts[2].assumingMemoryBound(to: UInt16.self)
            dsPairs = starts[3].assumingMemoryBound(to: UInt32.self)
            pPairs = starts[4].assumingMemoryBound(to: UInt32.self)
            (kPanels, vPanels, kByKeys) = (starts[5], starts[6], starts[7])
            (qBlock, dOutBlock) = (starts[8], starts[9])
            q16 = starts[10].assumingMemoryBound(to: UInt16.self)
            dOut16 = starts[11].assumingMemoryBound(to: UInt16.self)
            dots = starts[12].assumingMemoryBound(to: Float.self)
        }

        func deallocate() { memory.deallocate() }
    }

    /// The layouts of one head's packed operands.
    struct PackedHead {
        let hd: Int, T: Int, kernel: PackedKernel
        var bf16: Bool { kernel.isBF16 }
        var panel: Int { kernel.panel }
        /// Words (bf16 pairs) or floats between a panel of keys packed along headDim (K for QKᵀ, V for dO·Vᵀ).
        var byDimStride: Int { bf16 ? hd / 2 * panel : hd * panel }
        /// The same between panels of headDim packed along the keys (V for P·V, K for dS·K).
        var byKeysStride: Int { bf16 ? (T + 1) / 2 * panel : T * panel }

        /// One panel: X(t, p) = x[t·ts + p·ps] for t < count, p < kc, stored as lora_pack_f32_avx512 and
        /// lora_pack_bf16_pairs store it (zero for count ≤ t < panel).
        func pack(_ x: UnsafePointer<Float>, ts: Int, ps: Int, count: Int, kc: Int, into dst: UnsafeMutableRawPointer) {
            switch kernel {
            case .avx512bf16:
                lora_pack_bf16_pairs(x, Int64(ts), Int64(ps), Int64(count), Int64(kc), Int64(panel), dst.assumingMemoryBound(to: UInt32.self))
            case .avx512:
                lora_pack_f32_avx512(x, Int64(ts), Int64(ps), Int64(count), Int64(kc), Int64(panel), dst.assumingMemoryBound(to: Float.self))
            case .avx2:
                // O(T · headDim) per head, against attention's O(T² · headDim): plain loops do.
                let out = dst.assumingMemoryBound(to: Float.self)
                for p in 0..<kc {
                    for t in 0..<panel { out[p * panel + t] = t < count ? x[t * ts + p * ps] : 0 }
                }
            }
        }

        /// x's rows t < T (row stride ld) packed as B(p = dimension, j = key): panels of keys.
        func packAlongDim(_ x: UnsafePointer<Float>, ld: Int, into dst: UnsafeMutableRawPointer) {
            for p in 0..<(T + panel - 1) / panel {
                pack(x + p * panel * ld, ts: ld, ps: 1, count: min(panel, T - p * panel), kc: hd,
                     into: dst + p * byDimStride * 4)
            }
        }

        /// x's first `count` rows (row stride ld) packed as B(p = row, j = dimension): panels of
        /// dimensions, `stride` words or floats apart.
        func packAlongRows(_ x: UnsafePointer<Float>, ld: Int, count: Int, stride: Int, into dst: UnsafeMutableRawPointer) {
            for p in 0..<hd / panel {
                pack(x + p * panel, ts: 1, ps: ld, count: panel, kc: count, into: dst + p * stride * 4)
            }
        }

        /// Rows t < T of x (row stride ld) rounded to bfloat16, headDim each, into dst.
        func round(_ x: UnsafePointer<Float>, ld: Int, into dst: UnsafeMutablePointer<UInt16>) {
            for t in 0..<T { lora_round_bf16(x + t * ld, Int64(hd), dst + t * hd) }
        }

        /// C[m × n] = alpha·A·B + beta·C with B packed: fp32 A(r, p) at a[r·ars + p·acs] over kc columns,
        /// or bf16 A pair (r, q) at a's word r·ars + q·acs over ⌈kc/2⌉ pairs.
        func product(m: Int, n: Int, kc: Int, a: UnsafeRawPointer, ars: Int, acs: Int, b: UnsafeRawPointer, bps: Int,
                     c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float) {
            let (m, n, ars, acs, bps, ldc) = (Int64(m), Int64(n), Int64(ars), Int64(acs), Int64(bps), Int64(ldc))
            switch kernel {
            case .avx512bf16:
                lora_attention_sbgemm_avx512bf16(m, n, Int64((kc + 1) / 2), a.assumingMemoryBound(to: UInt32.self), ars, acs,
                                                 b.assumingMemoryBound(to: UInt32.self), bps, c, ldc, alpha, beta)
            case .avx512:
                lora_attention_sgemm_avx512(m, n, Int64(kc), a.assumingMemoryBound(to: Float.self), ars, acs,
                                            b.assumingMemoryBound(to: Float.self), bps, c, ldc, alpha, beta)
            case .avx2:
                lora_attention_sgemm_avx2(m, n, Int64(kc), a.assumingMemoryBound(to: Float.self), ars, acs,
                                          b.assumingMemoryBound(to: Float.self), bps, c, ldc, alpha, beta)
            }
        }

        /// The softmax rows (`lora_attention_softmax_avx512`'s contract): P in place, or in bf16 into p16.
        func softmax(_ s: UnsafeMutablePointer<Float>, ld: Int, rows: Int, firstValid: Int, width: Int,
                     lse: UnsafeMutablePointer<Float>, inverseSum: UnsafeMutablePointer<Float>, p16: UnsafeMutablePointer<UInt16>) {
            let (ld, rows, first, width) = (Int64(ld), Int64(rows), Int64(firstValid), Int64(width))
            switch kernel {
            case .avx512bf16: lora_attention_softmax_avx512bf16(s, ld, rows, first, width, lse, inverseSum, p16)
            case .avx512: lora_attention_softmax_avx512(s, ld, rows, first, width, lse, inverseSum)
            case .avx2: lora_attention_softmax_avx2(s, ld, rows, first, width, lse, inverseSum)
            }
        }

        /// The softmax backward rows (`lora_attention_softmax_grad_avx512`'s contract): P and dS in place,
        /// or in bf16 into the scratch's dS rows and row pairs.
        func softmaxGrad(_ s: UnsafeMutablePointer<Float>, _ dp: UnsafeMutablePointer<Float>, ld: Int, rows: Int, firstValid: Int,
                         width: Int, lse: UnsafePointer<Float>, dots: UnsafePointer<Float>, scratch w: PackedScratch) {
            let (ld, rows, first, width) = (Int64(ld), Int64(rows), Int64(firstValid), Int64(width))
            switch kernel {
            case .avx512bf16:
                lora_attention_softmax_grad_avx512bf16(s, dp, ld, rows, first, width, lse, dots, w.rows16, w.dsPairs, w.pPairs)
            case .avx512: lora_attention_softmax_grad_avx512(s, dp, ld, rows, first, width, lse, dots)
            case .avx2: lora_attention_softmax_grad_avx2(s, dp, ld, rows, first, width, lse, dots)
            }
        }
    }

    /// Row blocks `blocks` of one (sequence, head).
    func packedForwardHead(b: Int, h: Int, blocks: Range<Int>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                           T: Int, out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>, scratch w: PackedScratch) {
        let qd = heads * headDim, kvd = kvHeads * headDim, kvh = h / (heads / kvHeads), hd = headDim
        let qb = q + b * T * qd + h * hd, ob = out + b * T * qd + h * hd
        let kb = k + b * T * kvd + kvh * hd, vb = v + b * T * kvd + kvh * hd
        let lseb = lse + (b * heads + h) * T
        let head = PackedHead(hd: hd, T: T, kernel: packedKernel!), bf16 = head.bf16
        let ld = (T + 31) / 32 * 32
        head.packAlongDim(kb, ld: kvd, into: w.kPanels)
        head.packAlongRows(vb, ld: kvd, count: T, stride: head.byKeysStride, into: w.vPanels)
        if bf16 { head.round(qb, ld: qd, into: w.q16) }
        for r0 in blocks.map({ $0 * block }) {
            let rows = min(block, T - r0), keys = r0 + rows, width = (keys + head.panel - 1) / head.panel * head.panel
            // S = scale·Q·Kᵀ, then P, then O = P·V; in bf16 the products read Q and P as bfloat16 rows.
            let (qRows, qStride): (UnsafeRawPointer, Int) = bf16 ? (UnsafeRawPointer(w.q16 + r0 * hd), hd / 2) : (UnsafeRawPointer(qb + r0 * qd), qd)
            let (p, pStride): (UnsafeRawPointer, Int) = bf16 ? (UnsafeRawPointer(w.rows16), ld / 2) : (UnsafeRawPointer(w.s), ld)
            head.product(m: rows, n: width, kc: hd, a: qRows, ars: qStride, acs: 1,
                         b: w.kPanels, bps: head.byDimStride, c: w.s, ldc: ld, alpha: scale, beta: 0)
            head.softmax(w.s, ld: ld, rows: rows, firstValid: r0 + 1, width: width, lse: lseb + r0, inverseSum: w.dots, p16: w.rows16)
            head.product(m: rows, n: hd, kc: keys, a: p, ars: pStride, acs: 1,
                         b: w.vPanels, bps: head.byKeysStride, c: ob + r0 * qd, ldc: qd, alpha: 1, beta: 0)
            for i in 0..<rows { scaleRow(ob + (r0 + i) * qd, count: hd, by: w.dots[i]) }
        }
    }

    /// Row blocks `blocks` of one (sequence, query head) in the backward: their dq, and their share of
    /// dk and dv ([T × headDim], overwritten).
    func packedBackwardHead(b: Int, h: Int, blocks: Range<Int>, dOut: UnsafePointer<Float>, q: UnsafePointer<Float>,
                            k: UnsafePointer<Float>, v: UnsafePointer<Float>, out: UnsafePointer<Float>,
                            lse: UnsafePointer<Float>, T: Int, dq: UnsafeMutablePointer<Float>,
                            dk dkb: UnsafeMutablePointer<Float>, dv dvb: UnsafeMutablePointer<Float>, scratch w: PackedScratch) {
        let qd = heads * headDim, kvd = kvHeads * headDim, kvh = h / (heads / kvHeads), hd = headDim
        let kb = k + b * T * kvd + kvh * hd, vb = v + b * T * kvd + kvh * hd
        let qb = q + b * T * qd + h * hd, ob = out + b * T * qd + h * hd
        let dob = dOut + b * T * qd + h * hd, dqb = dq + b * T * qd + h * hd
        let lseb = lse + (b * heads + h) * T
        let head = PackedHead(hd: hd, T: T, kernel: packedKernel!), bf16 = head.bf16
        let ld = (T + 31) / 32 * 32
        dkb.update(repeating: 0, count: T * hd)
        dvb.update(repeating: 0, count: T * hd)
        head.packAlongDim(kb, ld: kvd, into: w.kPanels)
        head.packAlongDim(vb, ld: kvd, into: w.vPanels)
        head.packAlongRows(kb, ld: kvd, count: T, stride: head.byKeysStride, into: w.kByKeys)
        if bf16 {
            head.round(qb, ld: qd, into: w.q16)
            head.round(dob, ld: qd, into: w.dOut16)
        }
        for r0 in blocks.map({ $0 * block }) {
            let rows = min(block, T - r0), keys = r0 + rows, width = (keys + head.panel - 1) / head.panel * head.panel
            let blockStride = bf16 ? (rows + 1) / 2 * head.panel : rows * head.panel
            for i in 0..<rows {
                let o = ob + (r0 + i) * qd, d = dob + (r0 + i) * qd
                var dot: Float = 0
                for j in 0..<hd { dot += o[j] * d[j] }
                w.dots[i] = dot
            }
            head.packAlongRows(qb + r0 * qd, ld: qd, count: rows, stride: blockStride, into: w.qBlock)
            head.packAlongRows(dob + r0 * qd, ld: qd, count: rows, stride: blockStride, into: w.dOutBlock)
            // S = scale·Q·Kᵀ and dP = dO·Vᵀ; then P and dS; then dQ = scale·dS·K, dK += scale·dSᵀ·Q, dV += Pᵀ·dO.
            // In bf16 the products read Q, dO and dS as bfloat16 rows, dSᵀ and Pᵀ as pairs of rows; in
            // fp32 they read the inputs and the softmax's results in place (Pᵀ and dSᵀ by columns).
            func operand(_ x16: UnsafeRawPointer, _ stride16: Int, _ x: UnsafeRawPointer, _ stride: Int) -> (UnsafeRawPointer, Int) {
                bf16 ? (x16, stride16) : (x, stride)
            }
            let (qRows, qStride) = operand(w.q16 + r0 * hd, hd / 2, qb + r0 * qd, qd)
            let (dORows, dOStride) = operand(w.dOut16 + r0 * hd, hd / 2, dob + r0 * qd, qd)
            let (ds, dsStride) = operand(w.rows16, ld / 2, w.dp, ld)
            let dsT = bf16 ? UnsafeRawPointer(w.dsPairs) : UnsafeRawPointer(w.dp), pT = bf16 ? UnsafeRawPointer(w.pPairs) : UnsafeRawPointer(w.s)
            head.product(m: rows, n: width, kc: hd, a: qRows, ars: qStride, acs: 1,
                         b: w.kPanels, bps: head.byDimStride, c: w.s, ldc: ld, alpha: scale, beta: 0)
            head.product(m: rows, n: width, kc: hd, a: dORows, ars: dOStride, acs: 1,
                         b: w.vPanels, bps: head.byDimStride, c: w.dp, ldc: ld, alpha: 1, beta: 0)
            head.softmaxGrad(w.s, w.dp, ld: ld, rows: rows, firstValid: r0 + 1, width: width, lse: lseb + r0, dots: w.dots, scratch: w)
            head.product(m: rows, n: hd, kc: keys, a: ds, ars: dsStride, acs: 1,
                         b: w.kByKeys, bps: head.byKeysStride, c: dqb + r0 * qd, ldc: qd, alpha: scale, beta: 0)
            head.product(m: keys, n: hd, kc: rows, a: dsT, ars: 1, acs: ld,
                         b: w.qBlock, bps: blockStride, c: dkb, ldc: hd, alpha: scale, beta: 1)
            head.product(m: keys, n: hd, kc: rows, a: pT, ars: 1, acs: ld,
                         b: w.dOutBlock, bps: blockStride, c: dvb, ldc: hd, alpha: 1, beta: 1)
        }
    }
}
