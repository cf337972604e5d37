import XCTest
@testable import LoRAKit
@testable import LoRAFormats

/// Checks `Gemm.sgemm` on both backends against a naive triple loop in Double.
final class GemmTests: XCTestCase {
    /// A deterministic pseudo-random generator (values in [-1, 1)), so failures reproduce.
    struct Rng {
        var state: UInt64
        mutating func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2048) / 1024 - 1
        }
    }

    /// One product with stored operand shapes padded out to leading dimensions `pad` beyond the minimum.
    struct Case {
        var transA = false, transB = false
        var m: Int, n: Int, k: Int
        var alpha: Float = 1, beta: Float = 0
        var padA = 0, padB = 0, padC = 0
        var nanC = false
    }

    /// The AVX2 kernel, for its part of each test; skipped on a CPU without AVX2+FMA.
    func avx2() throws -> GemmBackend {
        guard CPUFeatures.current.contains(.avx2FMA) else { throw XCTSkip("this CPU has no AVX2+FMA") }
        return .avx2
    }

    /// The AVX-512 kernel; skipped on a CPU without AVX-512F.
    func avx512() throws -> GemmBackend {
        guard CPUFeatures.current.contains(.avx512F) else { throw XCTSkip("this CPU has no AVX-512F") }
        return .avx512
    }

    /// The BLAS backend for the BLAS half of each test; skips that half when no library could be loaded.
    func blas() throws -> GemmBackend {
        guard let blas = Gemm.availableBLAS else { throw XCTSkip("no BLAS library found; only the builtin kernel is tested") }
        return blas
    }

    /// Runs `t` on `backend` (nil: whatever backend is current, without touching the process-wide setting)
    /// and compares every element of C (including the padding, which must be untouched)
    /// with the Double reference, to 1e-5 relative to Σ|alpha·a·b| + |beta·c| for that element.
    func check(_ t: Case, on backend: GemmBackend?, seed: UInt64 = 1, file: StaticString = #filePath, line: UInt = #line) {
        check(t, label: "\(backend ?? Gemm.backend)", seed: seed, file: file, line: line) { a, lda, b, ldb, c, ldc in
            func run() {
                Gemm.sgemm(transA: t.transA, transB: t.transB, m: t.m, n: t.n, k: t.k, alpha: t.alpha,
                           a: a, lda: lda, b: b, ldb: ldb, beta: t.beta, c: c, ldc: ldc)
            }
            if let backend {
                Gemm.withBackend(backend) {
                    XCTAssertEqual(Gemm.backend, backend, file: file, line: line)
                    run()
                }
            } else {
                run()
            }
        }
    }

    /// As above, with `product(a, lda, b, ldb, c, ldc)` computing the product described by `t`.
    func check(_ t: Case, label: String, seed: UInt64 = 1, tolerance: Double = 1e-5, file: StaticString = #filePath, line: UInt = #line,
               _ product: (UnsafePointer<Float>, Int, UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>, Int) -> Void) {
        var rng = Rng(state: seed &+ UInt64(t.m * 1_000_003 + t.n * 1009 + t.k))
        let (aRows, aCols) = t.transA ? (t.k, t.m) : (t.m, t.k)
        let (bRows, bCols) = t.transB ? (t.n, t.k) : (t.k, t.n)
        let lda = aCols + t.padA, ldb = bCols + t.padB, ldc = t.n + t.padC
        // At least one element so that pointers exist even for empty operands.
        let a = (0..<max(1, aRows * lda)).map { _ in rng.next() }
        let b = (0..<max(1, bRows * ldb)).map { _ in rng.next() }
        let c0 = (0..<max(1, t.m * ldc)).map { _ in t.nanC ? Float.nan : rng.next() }
        var c = c0

        // op(A) as m×k and op(B)ᵀ as n×k, in Double, so each reference element is a plain dot product.
        var opA = [Double](repeating: 0, count: t.m * t.k), opBT = [Double](repeating: 0, count: t.n * t.k)
        for i in 0..<t.m { for p in 0..<t.k { opA[i * t.k + p] = Double(t.transA ? a[p * lda + i] : a[i * lda + p]) } }
        for j in 0..<t.n { for p in 0..<t.k { opBT[j * t.k + p] = Double(t.transB ? b[j * ldb + p] : b[p * ldb + j]) } }

        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    product(ap.baseAddress!, lda, bp.baseAddress!, ldb, cp.baseAddress!, ldc)
                }
            }
        }

        var failures = 0
        for i in 0..<t.m {
            for j in 0..<ldc {
                let got = c[i * ldc + j]
                if j >= t.n {  // padding column: must not be written
                    if !(got == c0[i * ldc + j] || (got.isNaN && c0[i * ldc + j].isNaN)) {
                        if failures < 5 { XCTFail("\(label) \(t): padding C[\(i),\(j)] was written", file: file, line: line) }
                        failures += 1
                    }
                    continue
                }
                var sum = 0.0, mag = 0.0
                for p in 0..<t.k {
                    let x = opA[i * t.k + p] * opBT[j * t.k + p]
                    sum += x
                    mag += abs(x)
                }
                var want = Double(t.alpha) * sum
                mag = abs(Double(t.alpha)) * mag
                if t.beta != 0 {
                    want += Double(t.beta) * Double(c0[i * ldc + j])
                    mag += abs(Double(t.beta) * Double(c0[i * ldc + j]))
                }
                if !(abs(Double(got) - want) <= tolerance * max(mag, 1e-30)) {
                    if failures < 5 {
                        XCTFail("\(label) \(t): C[\(i),\(j)] = \(got), want \(want)", file: file, line: line)
                    }
                    failures += 1
                }
            }
        }
        if failures >= 5 { XCTFail("\(label) \(t): \(failures) elements wrong in all", file: file, line: line) }
    }

    // MARK: - Scenarios, each run on one backend

    /// All four transpose combinations over shapes built from 1, 3, 17, 33, 65, 130 (each size appears as
    /// m, n and k), with multiple micro-tiles, ragged tails and several k blocks.
    func transposesAndOddSizes(_ backend: GemmBackend) {
        let shapes = [(1, 1, 1), (1, 3, 17), (3, 1, 33), (17, 33, 1), (33, 17, 3), (65, 130, 17), (130, 65, 33),
                      (3, 130, 65), (130, 3, 130), (65, 1, 130), (1, 65, 3), (17, 17, 17), (33, 65, 130),
                      (130, 130, 65), (6, 8, 300), (12, 16, 513), (8, 130, 33)]
        for (m, n, k) in shapes {
            for transA in [false, true] {
                for transB in [false, true] {
                    check(Case(transA: transA, transB: transB, m: m, n: n, k: k), on: backend)
                }
            }
        }
    }

    /// Submatrices: leading dimensions larger than the stored widths, for A, B and C.
    func leadingDimensions(_ backend: GemmBackend) {
        for transA in [false, true] {
            for transB in [false, true] {
                check(Case(transA: transA, transB: transB, m: 33, n: 17, k: 65, padA: 3, padB: 5, padC: 7), on: backend)
                check(Case(transA: transA, transB: transB, m: 130, n: 65, k: 17, padA: 11, padB: 1, padC: 2), on: backend)
                check(Case(transA: transA, transB: transB, m: 1, n: 130, k: 3, padA: 2, padB: 2, padC: 1), on: backend)
                check(Case(transA: transA, transB: transB, m: 8, n: 65, k: 33, padA: 1, padB: 3, padC: 5), on: backend)
            }
        }
    }

    func alphaBeta(_ backend: GemmBackend) {
        let pairs: [(Float, Float)] = [(1, 0), (1, 1), (2.5, 0), (-1, 1), (0.5, -2), (1, 0.25), (0, 3), (0, 0), (0, 1)]
        for (alpha, beta) in pairs {
            for (transA, transB) in [(false, false), (true, true)] {
                check(Case(transA: transA, transB: transB, m: 33, n: 65, k: 17, alpha: alpha, beta: beta, padC: 3), on: backend)
                check(Case(transA: transA, transB: transB, m: 3, n: 5, k: 300, alpha: alpha, beta: beta), on: backend)
            }
        }
    }

    /// beta == 0 overwrites C without reading it: NaN already there must not leak into the result.
    func betaZeroOverwritesNaN(_ backend: GemmBackend) {
        for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
            check(Case(transA: transA, transB: transB, m: 65, n: 33, k: 17, beta: 0, padC: 2, nanC: true), on: backend)
            check(Case(transA: transA, transB: transB, m: 130, n: 130, k: 130, alpha: 2, beta: 0, nanC: true), on: backend)
            check(Case(transA: transA, transB: transB, m: 8, n: 33, k: 9, beta: 0, padC: 1, nanC: true), on: backend)
        }
        // k == 0 and alpha == 0 with beta == 0 also clear NaN.
        check(Case(m: 17, n: 33, k: 0, beta: 0, nanC: true), on: backend)
        check(Case(m: 17, n: 33, k: 5, alpha: 0, beta: 0, nanC: true), on: backend)
    }

    /// k == 0: C = beta·C; m == 0 or n == 0: nothing is touched.
    func emptyDimensions(_ backend: GemmBackend) {
        for beta: Float in [0, 1, -0.5] {
            check(Case(m: 17, n: 33, k: 0, beta: beta, padC: 1), on: backend)
            check(Case(transA: true, transB: true, m: 3, n: 1, k: 0, beta: beta), on: backend)
        }
        check(Case(m: 0, n: 5, k: 3), on: backend)
        check(Case(m: 5, n: 0, k: 3, padC: 2), on: backend)
        check(Case(m: 0, n: 0, k: 0), on: backend)
    }

    /// Inside `singleThreaded`, alone and from several threads at once (as when attention heads are
    /// processed in parallel, each worker entering its own block).
    func singleThreaded(_ backend: GemmBackend) {
        Gemm.withBackend(backend) {
            Gemm.singleThreaded {
                check(Case(transA: true, transB: false, m: 130, n: 65, k: 129, alpha: 1.5, beta: 0.5), on: nil)
                Parallel.forEach(4) { h in
                    Gemm.singleThreaded {
                        check(Case(transA: h % 2 == 0, transB: h >= 2, m: 40 + h, n: 33, k: 70), on: nil, seed: UInt64(h))
                    }
                }
            }
        }
    }

    // MARK: - Tests: each scenario on each of our kernels and on BLAS

    func testTransposesAndOddSizesBuiltin() { transposesAndOddSizes(.builtin) }
    func testTransposesAndOddSizesBLAS() throws { transposesAndOddSizes(try blas()) }
    func testLeadingDimensionsBuiltin() { leadingDimensions(.builtin) }
    func testLeadingDimensionsBLAS() throws { leadingDimensions(try blas()) }
    func testAlphaBetaBuiltin() { alphaBeta(.builtin) }
    func testAlphaBetaBLAS() throws { alphaBeta(try blas()) }
    func testBetaZeroOverwritesNaNBuiltin() { betaZeroOverwritesNaN(.builtin) }
    func testBetaZeroOverwritesNaNBLAS() throws { betaZeroOverwritesNaN(try blas()) }
    func testEmptyDimensionsBuiltin() { emptyDimensions(.builtin) }
    func testEmptyDimensionsBLAS() throws { emptyDimensions(try blas()) }
    func testSingleThreadedBuiltin() { singleThreaded(.builtin) }
    func testSingleThreadedBLAS() throws { singleThreaded(try blas()) }
    func testTransposesAndOddSizesAVX2() throws { transposesAndOddSizes(try avx2()) }
    func testLeadingDimensionsAVX2() throws { leadingDimensions(try avx2()) }
    func testAlphaBetaAVX2() throws { alphaBeta(try avx2()) }
    func testBetaZeroOverwritesNaNAVX2() throws { betaZeroOverwritesNaN(try avx2()) }
    func testEmptyDimensionsAVX2() throws { emptyDimensions(try avx2()) }
    func testSingleThreadedAVX2() throws { singleThreaded(try avx2()) }
    func testTransposesAndOddSizesAVX512() throws { transposesAndOddSizes(try avx512()) }
    func testLeadingDimensionsAVX512() throws { leadingDimensions(try avx512()) }
    func testAlphaBetaAVX512() throws { alphaBeta(try avx512()) }
    func testBetaZeroOverwritesNaNAVX512() throws { betaZeroOverwritesNaN(try avx512()) }
    func testEmptyDimensionsAVX512() throws { emptyDimensions(try avx512()) }
    func testSingleThreadedAVX512() throws { singleThreaded(try avx512()) }

    /// The Fortran `sgemm_` path (row-major → column-major swap), through the available library with its
    /// `cblas_sgemm` ignored.
    func testFortranSgemmPath() throws {
        guard case .blas(let name) = try blas() else { return XCTFail("availableBLAS is not a BLAS") }
        guard let lib = BLASLibrary(name: name, fortranOnly: true) else { throw XCTSkip("\(name) has no sgemm_") }
        for (m, n, k) in [(1, 1, 1), (17, 33, 65), (130, 3, 17), (3, 130, 33)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let t = Case(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1.5, beta: 0.5, padA: 1, padB: 2, padC: 3)
                    check(t, label: "sgemm_ of \(name)") { a, lda, b, ldb, c, ldc in
                        lib.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: t.alpha,
                                  a: a, lda: lda, b: b, ldb: ldb, beta: t.beta, c: c, ldc: ldc)
                    }
                }
            }
        }
    }

    /// Products large enough (≥ BuiltinGemm.parallelThreshold multiply-adds) for our kernel's threading and
    /// blocking: several k blocks, partial last row/column bands, splits by rows (m ≥ n) and by columns
    /// (m < n), and an odd thread count.
    func largerShapesAndThreadSplits(_ backend: GemmBackend) {
        for (m, n, k) in [(301, 77, 530), (9, 611, 800), (517, 9, 1000), (70, 2100, 40), (8, 1100, 520)] {
            XCTAssertGreaterThanOrEqual(m * n * k, BuiltinGemm.parallelThreshold)
        }
        let saved = Parallel.threadCount
        defer { Parallel.threadCount = saved }
        for threads in [saved, 3] {
            Parallel.threadCount = threads
            check(Case(transA: false, transB: false, m: 301, n: 77, k: 530, alpha: 1, beta: 0.5), on: backend)
            check(Case(transA: true, transB: false, m: 9, n: 611, k: 800, padA: 3), on: backend)
            check(Case(transA: false, transB: true, m: 517, n: 9, k: 1000, padB: 1), on: backend)
            check(Case(transA: true, transB: true, m: 70, n: 2100, k: 40, beta: 1), on: backend)
            // m = 8 is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ (see BuiltinGemm), with C written column-wise.
            for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
                check(Case(transA: transA, transB: transB, m: 8, n: 1100, k: 520, beta: -1, padA: 1, padB: 2, padC: 3), on: backend)
                check(Case(transA: transA, transB: transB, m: 8, n: 20, k: 7, alpha: 2, beta: 0, nanC: true), on: backend)
            }
        }
    }

    func testLargerShapesAndThreadSplitsBuiltin() { largerShapesAndThreadSplits(.builtin) }
    func testLargerShapesAndThreadSplitsAVX2() throws { largerShapesAndThreadSplits(try avx2()) }
    func testLargerShapesAndThreadSplitsAVX512() throws { largerShapesAndThreadSplits(try avx512()) }

    /// Our C kernels bit for bit against a scalar model of them: each element is a chain of fused
    /// multiply-adds in k order within each k block of BuiltinGemm (blocks of ⌈k / ⌈k/kcMax⌉⌉), scaled by
    /// alpha and added to C once per block (beta 0 for the first block then 1; beta 0 or 1 here, so every
    /// store path rounds the same way). Covers packed and in-place operands, ragged tiles, transposes,
    /// M = 1 and k not a multiple of the vector width or the unroll.
    func testAVX2MatchesItsScalarModelExactly() throws { try matchesScalarModel(try avx2(), kcMax: BuiltinGemm.MicroKernel.avx2.kcMax) }
    func testAVX512MatchesItsScalarModelExactly() throws { try matchesScalarModel(try avx512(), kcMax: BuiltinGemm.MicroKernel.avx512.kcMax) }

    func matchesScalarModel(_ backend: GemmBackend, kcMax: Int) throws {
        try forEachModelCase { m, n, k, beta, opA, opB, alpha, c0 in
            let blocks = (k + kcMax - 1) / kcMax
            let kc = (k + blocks - 1) / blocks
            return modelProduct(m: m, n: n, k: k, kc: kc, beta: beta, alpha: alpha, c0: c0) { i, j, range in
                var acc: Float = 0
                for p in range { acc.addProduct(opA(i, p), opB(p, j)) }  // one rounding per step, as FMA
                return acc
            }
        } product: { transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc in
            Gemm.withBackend(backend) {
                Gemm.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                           beta: beta, c: c, ldc: ldc)
            }
        }
    }

    /// The bf16 kernel bit for bit against its scalar model: inputs rounded to bfloat16 as
    /// vcvtneps2bf16 does (nearest even, subnormals to zero), and per k block (blocks of an even
    /// count, ⌈k / ⌈k/kcMax⌉⌉ rounded up to even) a chain over the pairs: acc += a(2q+1)·b(2q+1), then
    /// acc += a(2q)·b(2q), each one rounding (the product of two bfloat16 values is exact in fp32),
    /// which is vdpbf16ps's order in Intel's description.
    func testBF16MatchesItsScalarModelExactly() throws {
        // ARM's BFDOT tile rounds to odd; scripts/neon_check.sh checks it against its own model.
        guard CPUFeatures.current.contains(.avx512BF16) else { throw XCTSkip("this CPU has no AVX-512 BF16") }
        let kcMax = BuiltinGemm.MicroKernel.avx512bf16.kcMax
        try forEachModelCase { m, n, k, beta, opA, opB, alpha, c0 in
            let blocks = (k + kcMax - 1) / kcMax
            let kc = ((k + blocks - 1) / blocks + 1) / 2 * 2
            return modelProduct(m: m, n: n, k: k, kc: kc, beta: beta, alpha: alpha, c0: c0) { i, j, range in
                var acc: Float = 0
                for p in stride(from: range.lowerBound, to: range.upperBound, by: 2) {
                    if p + 1 < range.upperBound { acc += Self.bf16(opA(i, p + 1)) * Self.bf16(opB(p + 1, j)) }
                    acc += Self.bf16(opA(i, p)) * Self.bf16(opB(p, j))
                }
                return acc
            }
        } product: { transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc in
            Gemm.sgemmBF16(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                           beta: beta, c: c, ldc: ldc)
        }
    }

    /// x rounded to bfloat16 as vcvtneps2bf16 rounds it (written here from Intel's description, not
    /// taken from the kernel): NaN stays NaN, zero and subnormals become a zero of x's sign, else
    /// round to nearest, ties to even.
    static func bf16(_ x: Float) -> Float {
        let u = x.bitPattern
        if x.isNaN { return x }
        if u & 0x7f80_0000 == 0 { return Float(bitPattern: u & 0x8000_0000) }
        let rounded = (u &+ 0x7fff &+ ((u >> 16) & 1)) & 0xffff_0000
        return Float(bitPattern: rounded)
    }

    /// The bf16 kernel against the Double reference on every shape class, to the bound bfloat16
    /// rounding implies: bfloat16 keeps 8 significant bits, so each rounded input carries a relative
    /// error of at most 2⁻⁸ and each product at most 2⁻⁷ + 2⁻¹⁶; the sum's error is at most that times
    /// Σ|a·b| (plus fp32 summation, far smaller).
    func testBF16AgainstTheReference() throws {
        guard Precision.bf16.isAvailable else { throw XCTSkip("this CPU has no AVX-512 BF16") }
        let shapes = [(1, 1, 1), (1, 3, 17), (3, 1, 33), (17, 33, 1), (33, 17, 3), (65, 130, 17), (130, 65, 33),
                      (3, 130, 65), (130, 3, 130), (14, 32, 513), (15, 33, 2), (301, 77, 530), (8, 1100, 520)]
        for (m, n, k) in shapes {
            for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
                let t = Case(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1.5, beta: 0.5, padA: 1, padB: 2, padC: 3)
                check(t, label: "bf16", tolerance: 1.0 / 128 + 1e-5) { a, lda, b, ldb, c, ldc in
                    Gemm.sgemmBF16(transA: transA, transB: transB, m: m, n: n, k: k, alpha: t.alpha, a: a, lda: lda, b: b, ldb: ldb,
                                   beta: t.beta, c: c, ldc: ldc)
                }
            }
        }
        // And it is not simply fp32: an input that bfloat16 cannot hold is rounded.
        var a: [Float] = [1 + 1.0 / 256 + 1.0 / 4096], b: [Float] = [1], c: [Float] = [0]
        Gemm.sgemmBF16(transA: false, transB: false, m: 1, n: 1, k: 1, alpha: 1, a: &a, lda: 1, b: &b, ldb: 1, beta: 0, c: &c, ldc: 1)
        XCTAssertEqual(c[0], 1 + 1.0 / 128)
    }

    /// A weight stored once in bfloat16 (`BF16Matrix`, read in place by the bf16 kernel, forward
    /// x·Wᵀ and backward dy·W) gives bit for bit the products of the same weight in Float32, which
    /// the kernel rounds as it packs; its expansion is the rounded weight (the scalar model above).
    func testBF16StoredWeightsGiveTheSameProducts() throws {
        guard Precision.bf16.isAvailable else { throw XCTSkip("this CPU has no AVX-512 BF16") }
        var random = SeededRandom(seed: 11)
        for (m, out, inp) in [(1, 1, 1), (3, 33, 17), (17, 70, 200), (16, 31, 385), (130, 65, 64), (29, 2, 3), (300, 200, 401)] {
            var w = (0..<(out * inp)).map { _ in random.uniform(-2, 2) }
            w[0] = 1e-39  // a subnormal: the kernel's rounding makes it zero
            let weight = Tensor(shape: [out, inp], values: w), stored = BF16Matrix(rounding: weight)
            let expanded = Tensor(shape: [out, inp])
            stored.unpack(rows: 0..<out, into: expanded.data)
            XCTAssertEqual(expanded.array, w.map(Self.bf16), "\(m)×\(out)×\(inp)")
            let x = (0..<(m * inp)).map { _ in random.uniform(-1, 1) }, dy = (0..<(m * out)).map { _ in random.uniform(-1, 1) }
            var y1 = [Float](repeating: 0.5, count: m * out), y2 = y1, dx1 = [Float](repeating: 0.25, count: m * inp), dx2 = dx1
            Gemm.sgemmBF16(transA: false, transB: true, m: m, n: out, k: inp, alpha: 1, a: x, lda: inp, b: w, ldb: inp,
                           beta: 1, c: &y1, ldc: out)
            Gemm.sgemmBF16(transA: false, transB: true, m: m, n: out, k: inp, alpha: 1, a: x, lda: inp, b16: stored.bits, ldb: inp,
                           beta: 1, c: &y2, ldc: out)
            XCTAssertEqual(y2, y1, "forward \(m)×\(out)×\(inp)")
            Gemm.sgemmBF16(transA: false, transB: false, m: m, n: inp, k: out, alpha: 1, a: dy, lda: out, b: w, ldb: inp,
                           beta: 1, c: &dx1, ldc: inp)
            Gemm.sgemmBF16(transA: false, transB: false, m: m, n: inp, k: out, alpha: 1, a: dy, lda: out, b16: stored.bits, ldb: inp,
                           beta: 1, c: &dx2, ldc: inp)
            XCTAssertEqual(dx2, dx1, "backward \(m)×\(out)×\(inp)")
        }
    }

    typealias Product = (Bool, Bool, Int, Int, Int, Float, UnsafePointer<Float>, Int, UnsafePointer<Float>, Int, Float,
                         UnsafeMutablePointer<Float>, Int) -> Void

    /// Runs `product` over the model tests' shapes, transposes and betas, and compares C bit for bit
    /// with what `model` returns for the same operands.
    func forEachModelCase(_ model: (Int, Int, Int, Float, (Int, Int) -> Float, (Int, Int) -> Float, Float, [Float]) -> [Float],
                          product: Product) throws {
        let shapes = [(1, 1, 1), (1, 40, 3), (7, 17, 5), (6, 16, 256), (14, 32, 255), (13, 100, 257), (100, 13, 513),
                      (64, 130, 600), (1, 300, 77), (29, 65, 2)]
        for (m, n, k) in shapes {
            for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
                for beta: Float in [0, 1] {
                    var rng = Rng(state: UInt64(m * 7919 + n * 31 + k))
                    let (aRows, aCols) = transA ? (k, m) : (m, k)
                    let (bRows, bCols) = transB ? (n, k) : (k, n)
                    let a = (0..<aRows * aCols).map { _ in rng.next() }
                    let b = (0..<bRows * bCols).map { _ in rng.next() }
                    let c0 = (0..<m * n).map { _ in rng.next() }
                    let alpha: Float = 0.75
                    func opA(_ i: Int, _ p: Int) -> Float { transA ? a[p * aCols + i] : a[i * aCols + p] }
                    func opB(_ p: Int, _ j: Int) -> Float { transB ? b[j * bCols + p] : b[p * bCols + j] }
                    let want = model(m, n, k, beta, opA, opB, alpha, c0)
                    var c = c0
                    a.withUnsafeBufferPointer { ap in
                        b.withUnsafeBufferPointer { bp in
                            c.withUnsafeMutableBufferPointer { cp in
                                product(transA, transB, m, n, k, alpha, ap.baseAddress!, aCols, bp.baseAddress!, bCols,
                                        beta, cp.baseAddress!, n)
                            }
                        }
                    }
                    let mismatches = (0..<m * n).filter { c[$0].bitPattern != want[$0].bitPattern }
                    XCTAssertTrue(mismatches.isEmpty, "\(m)×\(n)×\(k) transA \(transA) transB \(transB) beta \(beta): \(mismatches.count) elements differ from the model, first at \(mismatches.first ?? 0): \(mismatches.first.map { c[$0] } ?? 0) vs \(mismatches.first.map { want[$0] } ?? 0)")
                }
            }
        }
    }

    /// C after the model's product, from C = `c0`: per k block of `kc`, `block(i, j, range)` is the tile's sum, which
    /// is scaled by alpha and stored (beta 0) or added (beta 1, and every later block).
    func modelProduct(m: Int, n: Int, k: Int, kc: Int, beta: Float, alpha: Float, c0: [Float],
                      block: (Int, Int, Range<Int>) -> Float) -> [Float] {
        var model = c0
        for i in 0..<m {
            for j in 0..<n {
                var start = 0
                while start < k {
                    let acc = block(i, j, start..<min(k, start + kc))
                    model[i * n + j] = (start == 0 && beta == 0) ? alpha * acc : alpha * acc + model[i * n + j]
                    start += kc
                }
            }
        }
        return model
    }

    /// singleThreaded returns the body's value, rethrows its error, and puts the BLAS thread count back.
    func testSingleThreadedContract() throws {
        XCTAssertEqual(Gemm.singleThreaded { 42 }, 42)
        struct Boom: Error {}
        XCTAssertThrowsError(try Gemm.singleThreaded { throw Boom() })
        XCTAssertEqual(Gemm.singleThreaded { Gemm.singleThreaded { "nested" } }, "nested")

        guard case .blas(let name) = try blas(), let lib = BLASLibrary.named(name) else { return }
        guard let before = lib.threadCount else { throw XCTSkip("\(name) has no thread-count getter") }
        Gemm.withBackend(.blas(name)) {
            Gemm.singleThreaded {
                XCTAssertEqual(lib.threadCount, 1)
                Gemm.singleThreaded { XCTAssertEqual(lib.threadCount, 1) }
                XCTAssertEqual(lib.threadCount, 1)
            }
        }
        XCTAssertEqual(lib.threadCount, before)
        _ = try? Gemm.withBackend(.blas(name)) { try Gemm.singleThreaded { throw Boom() } }
        XCTAssertEqual(lib.threadCount, before)
    }

    func testWithBackendRestores() {
        let before = Gemm.backend
        Gemm.withBackend(.builtin) {
            XCTAssertEqual(Gemm.backend, .builtin)
            if let blas = Gemm.availableBLAS {
                Gemm.withBackend(blas) { XCTAssertEqual(Gemm.backend, blas) }
                XCTAssertEqual(Gemm.backend, .builtin)
            }
        }
        XCTAssertEqual(Gemm.backend, before)
        // The default without LORA_BLAS: our AVX-512 kernel where the CPU has it, else the BLAS
        // found, else our best kernel for the CPU.
        if ProcessInfo.processInfo.environment["LORA_BLAS"] == nil {
            let expected = CPUFeatures.current.contains(.avx512F) ? .avx512 : Gemm.availableBLAS ?? GemmBackend.cpuKernels[0]
            XCTAssertEqual(before, expected)
        }
    }
}
