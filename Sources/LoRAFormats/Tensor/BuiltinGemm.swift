import LoRAKernels

/// LoRAKit's own SGEMM: cache-blocked and multi-threaded in Swift around a micro-kernel, either the
/// portable Swift one described below (any CPU; `LORA_BLAS=builtin`) or a C one built for the CPU's
/// instruction set (LoRAKernels; A packed plain and broadcast from memory, C rows prefetched):
/// `MicroKernel.avx2`, a 6×16 tile with AVX2+FMA (`LORA_BLAS=avx2`); `.avx512`, a 14×32 tile with
/// AVX-512F (`LORA_BLAS=avx512`); and `.avx512bf16`, the same tile from bfloat16 pairs with fp32 sums,
/// which only `Gemm.sgemmBF16` runs.
///
/// Blocking (the GotoBLAS / BLIS scheme). C = alpha·op(A)·op(B) + beta·C is cut up as
///
///     for jc in columns of C, step NC            (B panel kc×nc: stays in L3)
///       for pc in the k dimension, step KC       (first pc applies beta, later ones accumulate)
///         pack op(B)[pc.., jc..] into NR-wide micro-panels, each kc×NR contiguous
///         for ic in rows of C, step MC           (A block mc×kc: stays in L2)
///           pack op(A)[ic.., pc..] into MR-tall micro-panels
///           for jr in the B panel, step NR       (one B micro-panel, kc×NR: stays in L1)
///             for ir in the A block, step MR
///               micro-kernel: an MR×NR tile of C += A micro-panel · B micro-panel
///
/// The portable micro-kernel keeps the whole MR×NR = 6×8 tile in registers: twelve SIMD4 accumulators, which is
/// twelve of the sixteen 128-bit registers of baseline x86-64 (SSE2, what Swift compiles for unless told
/// otherwise; no FMA, no broadcast loads). Each k step loads one 8-float row of the B micro-panel into two
/// registers and, per row of the tile, one A value, and does 2 multiplies and 2 adds. Because SSE2 cannot
/// broadcast a float from memory, packing stores every A value already splatted to a SIMD4 (6 × 16 bytes
/// per k): that takes six shuffles out of the loop body (now 41 instructions per 96 flops, bound by
/// instruction dispatch) and was worth about 20%. At kc = 256 the A micro-panel (kc·96 bytes) and the B
/// micro-panel (kc·32 bytes) just fill a 32 KiB L1; 256 measured slightly better than 128 or 192.
///
/// Transposes never reach the micro-kernel: packing reads op(A) and op(B) through (row stride, column
/// stride) views, so all four combinations produce the same packed layout. Packing also zero-pads the
/// ragged last micro-panels, so the micro-kernel always computes a full tile and only edge tiles are written
/// back through a scalar path.
///
/// Shape-dependent choices:
/// - op(A) is read in place (no packing, A values broadcast in the loop) when the thread's part of C has
///   only a few columns: each A value is then used for very few micro-kernel calls, and packing (which
///   writes 16 bytes per value) would cost more than it saves. Rows past the end of A repeat the last row.
/// - op(B) is read in place when it is not transposed and C has only a few rows.
/// - When C is short and wide with m a poor fit for MR (m = 8 uses 8 of 12 computed rows), the product is
///   computed transposed, Cᵀ = op(B)ᵀ·op(A)ᵀ, which only swaps the strides of the views; C tiles are then
///   written back column by column.
///
/// Threads: C is split into disjoint bands, by rows when m ≥ n and by columns otherwise (so the operand each
/// thread packs redundantly is the smaller one), one band per thread via `Parallel.forRanges`; each band is
/// then an independent serial GEMM with its own packing buffers. Products too small to amortize the
/// dispatch run on the calling thread.
enum BuiltinGemm {
    /// The innermost loop: the portable Swift micro-kernel (6×8, the reference, on every CPU) or a C
    /// one compiled for an instruction set (LoRAKernels), called only where the CPU has that set.
    /// The blocking, packing and threading around it are the same for all of them.
    enum MicroKernel: Sendable {
        case portable
        /// 6×16 with AVX2 and FMA (`lora_sgemm_avx2_6x16`): plain packed A, broadcast from memory.
        case avx2
        /// 6×16 with ARM64's NEON (`lora_sgemm_neon_6x16`): the AVX2 tile's contract and blocking.
        case neon
        /// 14×32 with AVX-512F (`lora_sgemm_avx512_14x32`), likewise.
        case avx512
        /// 14×32 from bfloat16 pairs with vdpbf16ps (`lora_sbgemm_avx512bf16_14x32`): both operands are
        /// rounded to bfloat16 as they are packed, the sums stay fp32.
        case avx512bf16
        /// 6×16 from bfloat16 pairs with ARM64's BFDOT (`lora_sbgemm_neonbf16_6x16`), likewise.
        case neonbf16

        /// The bf16 tile this CPU has (x86-64's where both could exist).
        static var bf16: MicroKernel { CPUFeatures.current.contains(.avx512BF16) ? .avx512bf16 : .neonbf16 }
        var isBF16: Bool { self == .avx512bf16 || self == .neonbf16 }

        var mr: Int {
            switch self {
            case .portable, .avx2, .neon, .neonbf16: 6
            case .avx512, .avx512bf16: 14
            }
        }
        var nr: Int {
            switch self {
            case .portable: 8
            case .avx2, .neon, .neonbf16: 16
            case .avx512, .avx512bf16: 32
            }
        }
        /// Rows of a packed A block, a multiple of MR: the portable kernel's splatted floats take four
        /// times the room, so its block is smaller (72 × 256 splats = 288 KiB; 168 × 256 plain = 168 KiB,
        /// BLIS's choice for the 6×16 tile on Haswell-class cores), all inside a 512 KiB L2.
        var mcMax: Int { self == .portable ? 72 : 168 }
        /// Columns of a packed B panel (a multiple of NR): kc×nc values per thread, meant to stay in the
        /// L2 beside the A block. 2048 × 256 floats is 2 MiB; the AVX-512 tile halves it to 1 MiB (measured
        /// on Sapphire Rapids' 2 MiB L2: the head's products ran faster at 1024), the bf16 pairs hold
        /// 2048 columns in 1 MiB.
        var ncMax: Int { self == .avx512 ? 1024 : 2048 }
        /// Depth of a packed block: the A and B micro-panels share the L1 (portable: 24 KiB of splatted
        /// A and 8 KiB of B at 256; AVX2: 6 KiB of A and 16 KiB of B). The AVX-512 tile's panels at 256
        /// (14 + 32 KiB) filled the 48 KiB L1; at 192 (10.5 + 24 KiB) a step's products ran 19% faster
        /// on one core, 128 no faster than 256 (Sapphire Rapids, CPU time, `lora bench --products`);
        /// the bf16 tile gained 5% at 192 too.
        var kcMax: Int {
            switch self {
            case .portable, .avx2, .neon, .neonbf16: 256
            case .avx512, .avx512bf16: 192
            }
        }
    }

    /// Micro-tile height of the portable kernel (rows of C per micro-kernel call).
    static let mr = MicroKernel.portable.mr
    /// Micro-tile width of the portable kernel (columns of C per micro-kernel call).
    static let nr = MicroKernel.portable.nr
    /// Products with fewer multiply-adds than this (about 180 µs of work on one core) run on the calling thread:
    /// measured here, waking a second worker costs tens of microseconds, so smaller products lose by splitting.
    static let parallelThreshold = 1 << 22
    /// Floats per k step in a packed A micro-panel of the portable kernel: MR values, each a SIMD4 splat.
    static let aPanelStride = 4 * mr

    /// A strided view of a matrix: element (i, j) is `base[i * rs + j * cs]`, a Float, or bfloat16 bits
    /// when `isBF16` (a frozen weight stored in bf16, which only the bf16 kernel reads: `half(_:_:)`).
    struct View {
        let base: UnsafeRawPointer
        let rs: Int
        let cs: Int
        var isBF16 = false
        init(base: UnsafePointer<Float>, rs: Int, cs: Int) { self.base = UnsafeRawPointer(base); self.rs = rs; self.cs = cs }
        init(bf16 base: UnsafePointer<UInt16>, rs: Int, cs: Int) {
            self.base = UnsafeRawPointer(base); self.rs = rs; self.cs = cs; isBF16 = true
        }
        private init(raw: UnsafeRawPointer, rs: Int, cs: Int, isBF16: Bool) { base = raw; self.rs = rs; self.cs = cs; self.isBF16 = isBF16 }
        @inline(__always) func at(_ i: Int, _ j: Int) -> UnsafePointer<Float> {
            base.assumingMemoryBound(to: Float.self) + i * rs + j * cs
        }
        @inline(__always) func half(_ i: Int, _ j: Int) -> UnsafePointer<UInt16> {
            base.assumingMemoryBound(to: UInt16.self) + i * rs + j * cs
        }
        /// The transposed view of the same memory.
        var transposed: View { View(raw: base, rs: cs, cs: rs, isBF16: isBF16) }
    }

    /// Same contract as `Gemm.sgemm`, with m, n, k ≥ 1 and alpha ≠ 0 (the caller handles the trivial cases).
    static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int,
                      kernel: MicroKernel = .portable) {
        sgemm(m: m, n: n, k: k, alpha: alpha,
              opA: transA ? View(base: a, rs: 1, cs: lda) : View(base: a, rs: lda, cs: 1),
              opB: transB ? View(base: b, rs: 1, cs: ldb) : View(base: b, rs: ldb, cs: 1),
              beta: beta, c: c, ldc: ldc, threads: threads, kernel: kernel)
    }

    /// The same over views (op(A) and op(B) as they are multiplied); a bf16 view only with the bf16 kernel.
    static func sgemm(m: Int, n: Int, k: Int, alpha: Float, opA: View, opB: View,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int, kernel: MicroKernel) {
        precondition(kernel.isBF16 || !(opA.isBF16 || opB.isBF16), "BuiltinGemm: bf16 operands need the bf16 kernel")
        let mr = kernel.mr, nr = kernel.nr

        // Fraction of computed tile area that is real output, for C as is and for Cᵀ.
        func fill(_ rows: Int, _ cols: Int) -> Double {
            Double(rows * cols) / Double((rows + mr - 1) / mr * mr * ((cols + nr - 1) / nr * nr))
        }
        let job: Job, rows: Int, cols: Int
        if fill(n, m) > 1.2 * fill(m, n) {
            job = Job(kernel: kernel, k: k, alpha: alpha, a: opB.transposed, b: opA.transposed, beta: beta,
                      c: c, crs: 1, ccs: ldc)
            (rows, cols) = (n, m)
        } else {
            job = Job(kernel: kernel, k: k, alpha: alpha, a: opA, b: opB, beta: beta, c: c, crs: ldc, ccs: 1)
            (rows, cols) = (m, n)
        }

        let threads = rows * cols * k < parallelThreshold ? 1 : threads
        let mPanels = (rows + mr - 1) / mr, nPanels = (cols + nr - 1) / nr
        if threads <= 1 || (mPanels < 2 && nPanels < 2) {
            job.run(rows: 0..<rows, cols: 0..<cols)
        } else if (rows >= cols && mPanels >= 2) || nPanels < 2 {
            // Row bands, in whole micro-panels.
            Parallel.forRanges(mPanels) { panels in
                job.run(rows: panels.lowerBound * mr..<min(rows, panels.upperBound * mr), cols: 0..<cols)
            }
        } else {
            // Column bands, in whole micro-panels.
            Parallel.forRanges(nPanels) { panels in
                job.run(rows: 0..<rows, cols: panels.lowerBound * nr..<min(cols, panels.upperBound * nr))
            }
        }
    }

    /// One product C = alpha·A·B + beta·C over views (A and B already include any transposition); each call
    /// to `run` computes one rectangle of C. Element (i, j) of C is `c[i * crs + j * ccs]`.
    struct Job {
        let kernel: MicroKernel
        let k: Int
        let alpha: Float
        let a: View
        let b: View
        let beta: Float
        let c: UnsafeMutablePointer<Float>
        let crs: Int
        let ccs: Int

        /// Computes C[rows, cols] on the calling thread.
        func run(rows: Range<Int>, cols: Range<Int>) {
            let m = rows.count, n = cols.count
            if m == 0 || n == 0 { return }
            if kernel.isBF16 { return runBF16(rows: rows, cols: cols) }
            let mr = kernel.mr, nr = kernel.nr, mcMax = kernel.mcMax, ncMax = kernel.ncMax, kcMax = kernel.kcMax
            let packA = n > 4 * nr
            let packB = b.cs != 1 || m > 4 * mr

            // k is cut into equal blocks of at most kcMax.
            let kBlocks = (k + kcMax - 1) / kcMax
            let kcStep = (k + kBlocks - 1) / kBlocks
            let ncCap = min(ncMax, (n + nr - 1) / nr * nr)
            let mcCap = min(mcMax, (m + mr - 1) / mr * mr)

            // One 64-byte-aligned buffer for this band's packing, kept between products (PackingBuffers).
            let bFloats = ((packB ? kcStep * ncCap : kcStep * nr) + 15) / 16 * 16  // B panel, or one edge micro-panel
            let aFloats = packA ? kcStep * mcCap * (kernel == .portable ? 4 : 1) : 0
            let tileFloats = mr * nr  // where a C kernel's ragged or strided tile lands first
            let buffer = PackingBuffers.take((bFloats + aFloats + tileFloats) * 4)
            defer { PackingBuffers.give(buffer) }
            let raw = buffer.pointer
            let bBuf = raw.bindMemory(to: Float.self, capacity: bFloats + aFloats + tileFloats)
            let aBuf = bBuf + bFloats, tileBuf = aBuf + aFloats

            var jc = cols.lowerBound
            while jc < cols.upperBound {
                let nc = min(ncMax, cols.upperBound - jc)
                var pc = 0
                while pc < k {
                    let kc = min(kcStep, k - pc)
                    let betaHere: Float = pc == 0 ? beta : 1
                    if packB { BuiltinGemm.packB(b, row: pc, kc: kc, col: jc, nc: nc, nr: nr, into: bBuf, kernel: kernel) }

                    var ic = rows.lowerBound
                    while ic < rows.upperBound {
                        let mc = min(mcMax, rows.upperBound - ic)
                        if packA {
                            if kernel == .portable {
                                BuiltinGemm.packA(a, row: ic, mc: mc, col: pc, kc: kc, into: aBuf)
                            } else {
                                BuiltinGemm.packPlainA(a, row: ic, mc: mc, col: pc, kc: kc, mr: mr, into: aBuf, kernel: kernel)
                            }
                        }

                        var jr = 0
                        while jr < nc {
                            let ncr = min(nr, nc - jr)
                            // This B micro-panel: packed, read in place, or (a ragged last panel read in
                            // place) packed on its own so the kernel's 8-wide loads stay inside B.
                            let bPanel: UnsafePointer<Float>, bStride: Int
                            if packB {
                                bPanel = UnsafePointer(bBuf + jr * kc); bStride = nr
                            } else if ncr == nr {
                                bPanel = b.at(pc, jc + jr); bStride = b.rs
                            } else {
                                BuiltinGemm.packB(b, row: pc, kc: kc, col: jc + jr, nc: ncr, nr: nr, into: bBuf, kernel: kernel)
                                bPanel = UnsafePointer(bBuf); bStride = nr
                            }
                            let cCol = c + (jc + jr) * ccs
                            var ir = 0
                            while ir < mc {
                                let tile = Tile(c: cCol + (ic + ir) * crs, rs: crs, cs: ccs,
                                                rows: min(mr, mc - ir), cols: ncr, alpha: alpha, beta: betaHere)
                                if kernel != .portable {
                                    if packA {
                                        BuiltinGemm.runC(kernel, kc: kc, packedA: UnsafePointer(aBuf + ir * kc), b: bPanel,
                                                         bStride: bStride, tile: tile, scratch: tileBuf)
                                    } else {
                                        BuiltinGemm.runC(kernel, kc: kc, a: a.at(ic + ir, pc), ars: a.rs, acs: a.cs, b: bPanel,
                                                         bStride: bStride, tile: tile, scratch: tileBuf)
                                    }
                                } else if packA {
                                    BuiltinGemm.kernelPackedA(kc: kc, a: UnsafePointer(aBuf + ir * kc * 4),
                                                              b: bPanel, bStride: bStride, tile: tile)
                                } else {
                                    BuiltinGemm.kernelStridedA(kc: kc, a: a.at(ic + ir, pc), aRS: a.rs, aCS: a.cs,
                                                               b: bPanel, bStride: bStride, tile: tile)
                                }
                                ir += mr
                            }
                            jr += nr
                        }
                        ic += mcMax
                    }
                    pc += kc
                }
                jc += ncMax
            }
        }

        /// The bf16 product of C[rows, cols]: the same blocking, with both operands packed as bfloat16
        /// pairs along k (`lora_pack_bf16_pairs`, which rounds them), so neither is read in place. k
        /// blocks hold an even count but for the last, so no pair straddles two blocks.
        func runBF16(rows: Range<Int>, cols: Range<Int>) {
            let m = rows.count, n = cols.count
            let mr = kernel.mr, nr = kernel.nr, mcMax = kernel.mcMax, ncMax = kernel.ncMax, kcMax = kernel.kcMax
            let kBlocks = (k + kcMax - 1) / kcMax
            let kcStep = ((k + kBlocks - 1) / kBlocks + 1) / 2 * 2
            let kqStep = kcStep / 2
            let ncCap = min(ncMax, (n + nr - 1) / nr * nr)
            let mcCap = min(mcMax, (m + mr - 1) / mr * mr)
            let bWords = (kqStep * ncCap + 15) / 16 * 16, aWords = kqStep * mcCap, tileFloats = mr * nr
            let buffer = PackingBuffers.take((bWords + aWords + tileFloats) * 4)
            defer { PackingBuffers.give(buffer) }
            let raw = buffer.pointer
            let bBuf = raw.bindMemory(to: UInt32.self, capacity: bWords + aWords)
            let aBuf = bBuf + bWords
            let tileBuf = (raw + (bWords + aWords) * 4).bindMemory(to: Float.self, capacity: tileFloats)

            var jc = cols.lowerBound
            while jc < cols.upperBound {
                let nc = min(ncMax, cols.upperBound - jc)
                var pc = 0
                while pc < k {
                    let kc = min(kcStep, k - pc), kq = (kc + 1) / 2
                    let betaHere: Float = pc == 0 ? beta : 1
                    // B's panels run along its columns: packed as Bᵀ's rows.
                    BuiltinGemm.packPairs(b.transposed, t0: jc, count: nc, p0: pc, kc: kc, width: nr, into: bBuf)
                    var ic = rows.lowerBound
                    while ic < rows.upperBound {
                        let mc = min(mcMax, rows.upperBound - ic)
                        BuiltinGemm.packPairs(a, t0: ic, count: mc, p0: pc, kc: kc, width: mr, into: aBuf)
                        var jr = 0
                        while jr < nc {
                            let cCol = c + (jc + jr) * ccs
                            var ir = 0
                            while ir < mc {
                                let t = Tile(c: cCol + (ic + ir) * crs, rs: crs, cs: ccs, rows: min(mr, mc - ir),
                                             cols: min(nr, nc - jr), alpha: alpha, beta: betaHere)
                                let aPanel = UnsafePointer(aBuf + ir * kq), bPanel = UnsafePointer(bBuf + jr * kq)
                                let tile = kernel == .avx512bf16 ? lora_sbgemm_avx512bf16_14x32 : lora_sbgemm_neonbf16_6x16
                                if t.rows == mr && t.cols == nr && t.cs == 1 {
                                    tile(Int64(kq), aPanel, bPanel, t.c, Int64(t.rs), t.alpha, t.beta)
                                } else {
                                    tile(Int64(kq), aPanel, bPanel, tileBuf, Int64(nr), 1, 0)
                                    BuiltinGemm.storeScalar(UnsafePointer(tileBuf), ld: nr, to: t)
                                }
                                ir += mr
                            }
                            jr += nr
                        }
                        ic += mcMax
                    }
                    pc += kc
                }
                jc += ncMax
            }
        }
    }

    // MARK: - Packing

    /// Packs B[row..<row+kc, col..<col+nc] as ceil(nc/nr) micro-panels, each kc rows of nr contiguous floats
    /// (panel q starts at dst + q·kc·nr); columns past nc are zero. nr is a multiple of 8.
    static func packB(_ b: View, row: Int, kc: Int, col: Int, nc: Int, nr: Int, into dst: UnsafeMutablePointer<Float>,
                      kernel: MicroKernel = .portable) {
        if kernel == .avx512 {
            // In C with AVX-512 (masked copies, register transposes, gathers): the Swift loops below cost a fifth of the
            // AVX-512 tile's time at 576-wide products. B's panels run along its columns: packed as Bᵀ's rows.
            forEachPanel(b.transposed, t0: col, count: nc, p0: row, kc: kc, width: nr) { x, ts, ps, count, panel in
                lora_pack_f32_avx512(x, ts, ps, count, Int64(kc), Int64(nr), dst + panel * kc * nr)
            }
            return
        }
        var q = 0
        while q * nr < nc {
            let j0 = col + q * nr, w = min(nr, nc - q * nr)
            let out = UnsafeMutableRawPointer(dst + q * kc * nr)
            let rowBytes = nr * 4
            if b.cs == 1 && w == nr {
                // Rows of B are contiguous: copy nr floats per k, 8 at a time.
                var src = UnsafeRawPointer(b.at(row, j0))
                let step = b.rs * 4
                for p in 0..<kc {
                    for g in stride(from: 0, to: rowBytes, by: 32) {
                        out.storeBytes(of: src.loadUnaligned(fromByteOffset: g, as: SIMD8<Float>.self),
                                       toByteOffset: p * rowBytes + g, as: SIMD8<Float>.self)
                    }
                    src += step
                }
            } else if b.rs == 1 && w == nr {
                // Columns of B are contiguous (B is a transposed matrix): for each group of 8 columns, read
                // 4 k values from each and transpose two 4×4 blocks, giving 4 rows of 8 floats.
                for g in stride(from: 0, to: nr, by: 8) {
                    let s = UnsafeRawPointer(b.at(row, j0 + g)), cs = b.cs * 4
                    var p = 0
                    while p + 4 <= kc {
                        let o = p * 4
                        let x0 = s.loadUnaligned(fromByteOffset: o, as: SIMD4<Float>.self)
                        let x1 = s.loadUnaligned(fromByteOffset: o + cs, as: SIMD4<Float>.self)
                        let x2 = s.loadUnaligned(fromByteOffset: o + 2 * cs, as: SIMD4<Float>.self)
                        let x3 = s.loadUnaligned(fromByteOffset: o + 3 * cs, as: SIMD4<Float>.self)
                        let x4 = s.loadUnaligned(fromByteOffset: o + 4 * cs, as: SIMD4<Float>.self)
                        let x5 = s.loadUnaligned(fromByteOffset: o + 5 * cs, as: SIMD4<Float>.self)
                        let x6 = s.loadUnaligned(fromByteOffset: o + 6 * cs, as: SIMD4<Float>.self)
                        let x7 = s.loadUnaligned(fromByteOffset: o + 7 * cs, as: SIMD4<Float>.self)
                        for t in 0..<4 {
                            let v = SIMD8(x0[t], x1[t], x2[t], x3[t], x4[t], x5[t], x6[t], x7[t])
                            out.storeBytes(of: v, toByteOffset: (p + t) * rowBytes + g * 4, as: SIMD8<Float>.self)
                        }
                        p += 4
                    }
                    while p < kc {
                        let e = b.at(row + p, j0 + g), cs = b.cs
                        let v = SIMD8(e[0], e[cs], e[2 * cs], e[3 * cs], e[4 * cs], e[5 * cs], e[6 * cs], e[7 * cs])
                        out.storeBytes(of: v, toByteOffset: p * rowBytes + g * 4, as: SIMD8<Float>.self)
                        p += 1
                    }
                }
            } else {
                // Ragged last panel (or an arbitrary view): scalar copy with zero padding.
                let o = out.assumingMemoryBound(to: Float.self)
                for p in 0..<kc {
                    for j in 0..<w { o[p * nr + j] = b.at(row + p, j0 + j).pointee }
                    for j in w..<nr { o[p * nr + j] = 0 }
                }
            }
            q += 1
        }
    }

    /// The micro-panels of v's rows t0..<t0+count (each `width` rows, the last ragged) over columns
    /// p0..<p0+kc, for the C packing functions: body(first element, row stride, column stride, rows
    /// in this panel, panel index).
    @inline(__always)
    static func forEachPanel(_ v: View, t0: Int, count: Int, p0: Int, kc: Int, width: Int,
                             _ body: (UnsafePointer<Float>, Int64, Int64, Int64, Int) -> Void) {
        var q = 0
        while q * width < count {
            body(v.at(t0 + q * width, p0), Int64(v.rs), Int64(v.cs), Int64(min(width, count - q * width)), q)
            q += 1
        }
    }

    /// The bf16 pair panels of v's rows t0..<t0+count over columns p0..<p0+kc (`lora_pack_bf16_pairs`,
    /// or its bf16-source form for a bf16 view), panel q at dst + q·ceil(kc/2)·width.
    static func packPairs(_ v: View, t0: Int, count: Int, p0: Int, kc: Int, width: Int, into dst: UnsafeMutablePointer<UInt32>) {
        let kq = (kc + 1) / 2
        var q = 0
        while q * width < count {
            let t = t0 + q * width, rows = Int64(min(width, count - q * width)), out = dst + q * kq * width
            if v.isBF16 {
                lora_pack_bf16_pairs_from_bf16(v.half(t, p0), Int64(v.rs), Int64(v.cs), rows, Int64(kc), Int64(width), out)
            } else {
                lora_pack_bf16_pairs(v.at(t, p0), Int64(v.rs), Int64(v.cs), rows, Int64(kc), Int64(width), out)
            }
            q += 1
        }
    }

    /// Packs A[row..<row+mc, col..<col+kc] as ceil(mc/mr) plain micro-panels (for the C kernels, which
    /// broadcast from memory): value (r, p) of panel q is at dst + (q·kc + p)·mr + r. Rows past mc are zero.
    static func packPlainA(_ a: View, row: Int, mc: Int, col: Int, kc: Int, mr: Int, into dst: UnsafeMutablePointer<Float>,
                           kernel: MicroKernel) {
        if kernel == .avx512 {
            forEachPanel(a, t0: row, count: mc, p0: col, kc: kc, width: mr) { x, ts, ps, count, panel in
                lora_pack_f32_avx512(x, ts, ps, count, Int64(kc), Int64(mr), dst + panel * kc * mr)
            }
            return
        }
        var q = 0
        while q * mr < mc {
            let i0 = row + q * mr, h = min(mr, mc - q * mr)
            let out = dst + q * kc * mr
            if a.rs == 1 {
                // Columns of A are contiguous: the h values of one k are adjacent.
                var src = a.at(i0, col)
                for p in 0..<kc {
                    let o = out + p * mr
                    for r in 0..<h { o[r] = src[r] }
                    for r in h..<mr { o[r] = 0 }
                    src += a.cs
                }
            } else if a.cs == 1 && mr == 6 && h == 6 {
                // Rows of A are contiguous: six sequential reads, one sequential write of six per k.
                let s0 = a.at(i0, col), s1 = s0 + a.rs, s2 = s1 + a.rs, s3 = s2 + a.rs, s4 = s3 + a.rs, s5 = s4 + a.rs
                var o = out
                for p in 0..<kc {
                    o[0] = s0[p]; o[1] = s1[p]; o[2] = s2[p]; o[3] = s3[p]; o[4] = s4[p]; o[5] = s5[p]
                    o += 6
                }
            } else {
                for r in 0..<mr {
                    if r < h {
                        let src = a.at(i0 + r, col), cs = a.cs
                        for p in 0..<kc { out[p * mr + r] = src[p * cs] }
                    } else {
                        for p in 0..<kc { out[p * mr + r] = 0 }
                    }
                }
            }
            q += 1
        }
    }

    /// Packs A[row..<row+mc, col..<col+kc] as ceil(mc/MR) micro-panels stored pre-broadcast: value (r, p)
    /// of panel q is the SIMD4 splat at dst + (q·kc + p)·24 + 4r. Rows past mc are zero.
    static func packA(_ a: View, row: Int, mc: Int, col: Int, kc: Int, into dst: UnsafeMutablePointer<Float>) {
        let kStep = aPanelStride * 4  // bytes per k step
        var q = 0
        while q * mr < mc {
            let i0 = row + q * mr, h = min(mr, mc - q * mr)
            let out = UnsafeMutableRawPointer(dst + q * kc * aPanelStride)
            if a.rs == 1 && h == mr {
                // Columns of A are contiguous (A is a transposed matrix): the 6 values of one k are adjacent.
                var src = a.at(i0, col)
                var o = out
                for _ in 0..<kc {
                    for r in 0..<mr { o.storeBytes(of: SIMD4(repeating: src[r]), toByteOffset: r * 16, as: SIMD4<Float>.self) }
                    src += a.cs; o += kStep
                }
            } else {
                // Rows of A are contiguous (or a ragged panel): stream each row.
                for r in 0..<mr {
                    let o = out + r * 16
                    if r < h {
                        let src = a.at(i0 + r, col), cs = a.cs
                        for p in 0..<kc {
                            o.storeBytes(of: SIMD4(repeating: src[p * cs]), toByteOffset: p * kStep, as: SIMD4<Float>.self)
                        }
                    } else {
                        for p in 0..<kc { o.storeBytes(of: SIMD4<Float>(), toByteOffset: p * kStep, as: SIMD4<Float>.self) }
                    }
                }
            }
            q += 1
        }
    }

    // MARK: - Micro-kernels

    /// Where a micro-kernel's 6×8 result goes: C tile element (r, j) is `c[r * rs + j * cs]`, of which the
    /// top-left rows×cols are real; it becomes alpha·result + beta·C (C not read when beta == 0).
    struct Tile {
        let c: UnsafeMutablePointer<Float>
        let rs: Int
        let cs: Int
        let rows: Int
        let cols: Int
        let alpha: Float
        let beta: Float
    }

    /// The micro-kernel on a packed, pre-broadcast A micro-panel.
    @inline(never)
    static func kernelPackedA(kc: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, bStride: Int, tile: Tile) {
        var c00 = SIMD4<Float>(), c01 = SIMD4<Float>(), c10 = SIMD4<Float>(), c11 = SIMD4<Float>()
        var c20 = SIMD4<Float>(), c21 = SIMD4<Float>(), c30 = SIMD4<Float>(), c31 = SIMD4<Float>()
        var c40 = SIMD4<Float>(), c41 = SIMD4<Float>(), c50 = SIMD4<Float>(), c51 = SIMD4<Float>()
        var ap = UnsafeRawPointer(a), bp = UnsafeRawPointer(b)
        let bBytes = bStride * 4
        for _ in 0..<kc {
            let b0 = bp.loadUnaligned(as: SIMD4<Float>.self)
            let b1 = bp.loadUnaligned(fromByteOffset: 16, as: SIMD4<Float>.self)
            let x0 = ap.load(as: SIMD4<Float>.self)
            c00 += x0 * b0; c01 += x0 * b1
            let x1 = ap.load(fromByteOffset: 16, as: SIMD4<Float>.self)
            c10 += x1 * b0; c11 += x1 * b1
            let x2 = ap.load(fromByteOffset: 32, as: SIMD4<Float>.self)
            c20 += x2 * b0; c21 += x2 * b1
            let x3 = ap.load(fromByteOffset: 48, as: SIMD4<Float>.self)
            c30 += x3 * b0; c31 += x3 * b1
            let x4 = ap.load(fromByteOffset: 64, as: SIMD4<Float>.self)
            c40 += x4 * b0; c41 += x4 * b1
            let x5 = ap.load(fromByteOffset: 80, as: SIMD4<Float>.self)
            c50 += x5 * b0; c51 += x5 * b1
            ap += 96; bp += bBytes
        }
        store(SIMD8(lowHalf: c00, highHalf: c01), SIMD8(lowHalf: c10, highHalf: c11),
              SIMD8(lowHalf: c20, highHalf: c21), SIMD8(lowHalf: c30, highHalf: c31),
              SIMD8(lowHalf: c40, highHalf: c41), SIMD8(lowHalf: c50, highHalf: c51), to: tile)
    }

    /// The micro-kernel reading A in place: value (r, p) is `a[r·aRS + p·aCS]`, broadcast in the loop. Rows
    /// past `tile.rows` repeat the last real row (their results are discarded), so A is never over-read.
    @inline(never)
    static func kernelStridedA(kc: Int, a: UnsafePointer<Float>, aRS: Int, aCS: Int,
                               b: UnsafePointer<Float>, bStride: Int, tile: Tile) {
        let last = tile.rows - 1
        let a0 = a, a1 = a + min(1, last) * aRS, a2 = a + min(2, last) * aRS
        let a3 = a + min(3, last) * aRS, a4 = a + min(4, last) * aRS, a5 = a + min(5, last) * aRS
        var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), c2 = SIMD8<Float>()
        var c3 = SIMD8<Float>(), c4 = SIMD8<Float>(), c5 = SIMD8<Float>()
        var bp = UnsafeRawPointer(b)
        let bBytes = bStride * 4
        var ao = 0
        for _ in 0..<kc {
            let bv = bp.loadUnaligned(as: SIMD8<Float>.self)
            c0 += SIMD8(repeating: a0[ao]) * bv
            c1 += SIMD8(repeating: a1[ao]) * bv
            c2 += SIMD8(repeating: a2[ao]) * bv
            c3 += SIMD8(repeating: a3[ao]) * bv
            c4 += SIMD8(repeating: a4[ao]) * bv
            c5 += SIMD8(repeating: a5[ao]) * bv
            bp += bBytes
            ao += aCS
        }
        store(c0, c1, c2, c3, c4, c5, to: tile)
    }

    /// One tile through a C kernel (AVX2 or AVX-512) with packed A: straight into C when the tile is full
    /// and C's rows are contiguous, else into `scratch` (MR×NR) and from there through the scalar path.
    @inline(__always)
    static func runC(_ kernel: MicroKernel, kc: Int, packedA a: UnsafePointer<Float>, b: UnsafePointer<Float>, bStride: Int,
                     tile t: Tile, scratch: UnsafeMutablePointer<Float>) {
        let full = t.rows == kernel.mr && t.cols == kernel.nr && t.cs == 1
        let (c, ldc, alpha, beta) = full ? (t.c, t.rs, t.alpha, t.beta) : (scratch, kernel.nr, 1, 0)
        switch kernel {
        case .avx512: lora_sgemm_avx512_14x32(Int64(kc), a, b, Int64(bStride), c, Int64(ldc), alpha, beta)
        case .neon: lora_sgemm_neon_6x16(Int64(kc), a, b, Int64(bStride), c, Int64(ldc), alpha, beta)
        default: lora_sgemm_avx2_6x16(Int64(kc), a, b, Int64(bStride), c, Int64(ldc), alpha, beta)
        }
        if !full { storeScalar(UnsafePointer(scratch), ld: kernel.nr, to: t) }
    }

    /// As above with A read in place (element (r, p) at a[r·ars + p·acs]).
    @inline(__always)
    static func runC(_ kernel: MicroKernel, kc: Int, a: UnsafePointer<Float>, ars: Int, acs: Int, b: UnsafePointer<Float>,
                     bStride: Int, tile t: Tile, scratch: UnsafeMutablePointer<Float>) {
        let full = t.rows == kernel.mr && t.cols == kernel.nr && t.cs == 1
        let (c, ldc, alpha, beta) = full ? (t.c, t.rs, t.alpha, t.beta) : (scratch, kernel.nr, 1, 0)
        let rows = Int64(full ? kernel.mr : t.rows)
        switch kernel {
        case .avx512:
            lora_sgemm_avx512_14x32_strided(Int64(kc), a, Int64(ars), Int64(acs), rows, b, Int64(bStride), c, Int64(ldc), alpha, beta)
        case .neon:
            lora_sgemm_neon_6x16_strided(Int64(kc), a, Int64(ars), Int64(acs), rows, b, Int64(bStride), c, Int64(ldc), alpha, beta)
        default:
            lora_sgemm_avx2_6x16_strided(Int64(kc), a, Int64(ars), Int64(acs), rows, b, Int64(bStride), c, Int64(ldc), alpha, beta)
        }
        if !full { storeScalar(UnsafePointer(scratch), ld: kernel.nr, to: t) }
    }

    /// Writes a 6×8 result to its tile of C: vector stores for a full tile of a row-major C, else the
    /// scalar path.
    @inline(__always)
    static func store(_ c0: SIMD8<Float>, _ c1: SIMD8<Float>, _ c2: SIMD8<Float>, _ c3: SIMD8<Float>,
                      _ c4: SIMD8<Float>, _ c5: SIMD8<Float>, to t: Tile) {
        if t.rows == mr && t.cols == nr && t.cs == 1 {
            storeRow(c0, t.c, t.alpha, t.beta)
            storeRow(c1, t.c + t.rs, t.alpha, t.beta)
            storeRow(c2, t.c + 2 * t.rs, t.alpha, t.beta)
            storeRow(c3, t.c + 3 * t.rs, t.alpha, t.beta)
            storeRow(c4, t.c + 4 * t.rs, t.alpha, t.beta)
            storeRow(c5, t.c + 5 * t.rs, t.alpha, t.beta)
        } else {
            storeScalar((c0, c1, c2, c3, c4, c5), to: t)
        }
    }

    /// One row of a full tile: C[0..<8] = alpha·acc + beta·C.
    @inline(__always)
    static func storeRow(_ acc: SIMD8<Float>, _ c: UnsafeMutablePointer<Float>, _ alpha: Float, _ beta: Float) {
        let raw = UnsafeMutableRawPointer(c)
        var v = acc * alpha
        if beta == 1 {
            v += raw.loadUnaligned(as: SIMD8<Float>.self)
        } else if beta != 0 {
            v += beta * raw.loadUnaligned(as: SIMD8<Float>.self)
        }
        raw.storeBytes(of: v, as: SIMD8<Float>.self)
    }

    /// A ragged or strided tile of the portable kernel: see `storeScalar(_:ld:to:)`.
    @inline(never)
    static func storeScalar(_ acc: (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>),
                            to t: Tile) {
        withUnsafeBytes(of: acc) { raw in
            storeScalar(raw.bindMemory(to: Float.self).baseAddress!, ld: nr, to: t)
        }
    }

    /// A ragged or strided tile: only the top-left rows×cols of the result (row r at v + r·ld) reach C,
    /// one float at a time.
    static func storeScalar(_ v: UnsafePointer<Float>, ld: Int, to t: Tile) {
        for r in 0..<t.rows {
            for j in 0..<t.cols {
                let x = t.alpha * v[r * ld + j]
                let p = t.c + r * t.rs + j * t.cs
                p.pointee = t.beta == 0 ? x : (t.beta == 1 ? p.pointee + x : x + t.beta * p.pointee)
            }
        }
    }
}
