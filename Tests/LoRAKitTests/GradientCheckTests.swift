import Foundation
import XCTest
@testable import LoRAKit

/// Finite-difference checks of every op's backward pass.
///
/// Method: a scalar objective L = Σ w ∘ y with fixed seeded random weights w (for cross-entropy, L is the
/// returned loss itself). The analytic gradient comes from the op's backward with dy = w. The numeric one is
/// a central difference (L(x + h) − L(x − h)) / (x₊ − x₋): each input is perturbed in Float32 (the step is the
/// one actually stored, x₊ − x₋ in Double), the forward runs in Float32 as in production, and L is summed in
/// Double so the sum itself adds no rounding.
///
/// Tolerance: max |analytic − numeric| ≤ tol · max |numeric| (the error relative to the gradient's scale),
/// and the scale must be ≥ 1e-2 so the check is not vacuous. With h = 1e-2 the truncation error is
/// h²/6 · |L'''| ≈ 2e-5 for these O(1) inputs, and the Float32 rounding of the forward contributes about
/// ε_f32 · Σ|w ∘ y| / h over the outputs one input touches, ≈ 1e-5…1e-4. So tol = 2e-3 for the nonlinear ops
/// leaves a margin of 10× or more, yet a wrong term (a missing factor, a dropped row, a sign) is off by O(1).
/// Ops that are linear in the perturbed input (RoPE, Linear + LoRA in x, A or B one element at a time) have no
/// truncation error; they get tol = 5e-4. Measured errors are printed as `[GradientCheck] …` lines.
final class GradientCheckTests: XCTestCase {
    static let h: Float = 1e-2
    static let nonlinearTolerance = 2e-3
    static let linearTolerance = 5e-4

    // MARK: RMSNorm

    func testRMSNormBackward() {
        let rows = 5, dim = 19, eps: Float = 1e-5
        let x = randomTensor([rows, dim], seed: 101)
        let weight = randomTensor([dim], seed: 102, scale: 1.5)
        let w = randomTensor([rows, dim], seed: 103)
        let y = Tensor(shape: [rows, dim]), rstd = Tensor(shape: [rows])

        func objective() -> Double {
            RMSNorm.forward(x: x.data, weight: weight.data, eps: eps, rows: rows, dim: dim, y: y.data, rstd: rstd.data)
            return weightedSum(y, w)
        }
        _ = objective()
        // backward ADDS into dx: start from a known non-zero buffer and subtract it afterwards.
        let dx0 = randomTensor([rows, dim], seed: 104), dx = dx0.copy()
        RMSNorm.backward(dy: w.data, x: x.data, weight: weight.data, rstd: rstd.data, rows: rows, dim: dim, dx: dx.data)
        let analytic = (0..<dx.count).map { dx[$0] - dx0[$0] }
        let numeric = centralDifferences(x, h: Self.h, objective)
        checkGradient(analytic, numeric, tol: Self.nonlinearTolerance, "RMSNorm dx")

        // recompute gives the forward's y exactly.
        RMSNorm.forward(x: x.data, weight: weight.data, eps: eps, rows: rows, dim: dim, y: y.data, rstd: rstd.data)
        let again = Tensor(shape: [rows, dim])
        RMSNorm.recompute(x: x.data, weight: weight.data, rstd: rstd.data, rows: rows, dim: dim, y: again.data)
        XCTAssertEqual(again.array, y.array, "RMSNorm.recompute differs from forward")
    }

    // MARK: RoPE

    func testRoPEInverseIsBackward() {
        let headDim = 8, heads = 3, batch = 2, seqLen = 5, rows = batch * seqLen, width = heads * headDim
        let rope = RoPE(headDim: headDim, theta: 10_000)
        let (cos, sin) = rope.tables(length: seqLen)
        let x = randomTensor([rows, width], seed: 201)
        let w = randomTensor([rows, width], seed: 202)
        let y = Tensor(shape: [rows, width])

        func objective() -> Double {
            y.copy(from: x)
            rope.apply(y.data, rows: rows, heads: heads, seqLen: seqLen, cos: cos, sin: sin)
            return weightedSum(y, w)
        }
        let dx = w.copy()
        rope.apply(dx.data, rows: rows, heads: heads, seqLen: seqLen, cos: cos, sin: sin, inverse: true)
        let numeric = centralDifferences(x, h: Self.h, objective)
        checkGradient(dx.array, numeric, tol: Self.linearTolerance, "RoPE dx (inverse rotation)")

        // apply then inverse restores the input.
        let r = x.copy()
        rope.apply(r.data, rows: rows, heads: heads, seqLen: seqLen, cos: cos, sin: sin)
        XCTAssertGreaterThan(maxAbsDiff(r.array, x.array), 0.1, "RoPE rotated nothing")
        rope.apply(r.data, rows: rows, heads: heads, seqLen: seqLen, cos: cos, sin: sin, inverse: true)
        let roundTrip = maxAbsDiff(r.array, x.array)
        report("RoPE apply∘inverse round trip", "max |Δ| \(sci(roundTrip))")
        XCTAssertLessThanOrEqual(roundTrip, 1e-6, "RoPE inverse does not undo apply")
    }

    // MARK: SwiGLU

    func testSwiGLUBackward() {
        // 37: four SIMD8 groups and a scalar tail of 5.
        let count = 37
        let gate = randomTensor([count], seed: 301, scale: 4)
        let up = randomTensor([count], seed: 302, scale: 2)
        let w = randomTensor([count], seed: 303)
        let out = Tensor(shape: [count])

        func objective() -> Double {
            SwiGLU.forward(gate: gate.data, up: up.data, count: count, out: out.data)
            return weightedSum(out, w)
        }
        let dGate = Tensor(shape: [count]), dUp = Tensor(shape: [count])
        SwiGLU.backward(da: w.data, gate: gate.data, up: up.data, count: count, dGate: dGate.data, dUp: dUp.data)
        checkGradient(dGate.array, centralDifferences(gate, h: Self.h, objective), tol: Self.nonlinearTolerance, "SwiGLU dgate")
        checkGradient(dUp.array, centralDifferences(up, h: Self.h, objective), tol: Self.linearTolerance, "SwiGLU dup")

        assertAliasedBackwardMatches(gate: gate, up: up, da: w, dGate: dGate, dUp: dUp)
    }

    /// A size that splits over several threads (minChunk 4096) at boundaries that are not multiples of 8.
    /// The op is element-wise, so perturbing every element at once gives each element's partial derivative.
    func testSwiGLUBackwardMultithreaded() {
        let count = 3 * 4096 + 13
        let gate = randomTensor([count], seed: 311, scale: 6)
        let up = randomTensor([count], seed: 312, scale: 2)
        let w = randomTensor([count], seed: 313)
        let dGate = Tensor(shape: [count]), dUp = Tensor(shape: [count])
        SwiGLU.backward(da: w.data, gate: gate.data, up: up.data, count: count, dGate: dGate.data, dUp: dUp.data)

        func elementwiseDifferences(_ x: Tensor) -> [Double] {
            let xp = Tensor(shape: [count]), xm = Tensor(shape: [count])
            for i in 0..<count { xp[i] = x[i] + Self.h; xm[i] = x[i] - Self.h }
            let yp = Tensor(shape: [count]), ym = Tensor(shape: [count])
            let isGate = x === gate
            SwiGLU.forward(gate: isGate ? xp.data : gate.data, up: isGate ? up.data : xp.data, count: count, out: yp.data)
            SwiGLU.forward(gate: isGate ? xm.data : gate.data, up: isGate ? up.data : xm.data, count: count, out: ym.data)
            return (0..<count).map { Double(w[$0]) * (Double(yp[$0]) - Double(ym[$0])) / (Double(xp[$0]) - Double(xm[$0])) }
        }
        checkGradient(dGate.array, elementwiseDifferences(gate), tol: Self.nonlinearTolerance, "SwiGLU dgate (n=\(count))")
        checkGradient(dUp.array, elementwiseDifferences(up), tol: Self.linearTolerance, "SwiGLU dup (n=\(count))")

        assertAliasedBackwardMatches(gate: gate, up: up, da: w, dGate: dGate, dUp: dUp)
    }

    /// The backward with dGate written into the gate buffer (and dUp into up) gives the same bits as with separate outputs.
    func assertAliasedBackwardMatches(gate: Tensor, up: Tensor, da: Tensor, dGate: Tensor, dUp: Tensor,
                                      file: StaticString = #filePath, line: UInt = #line) {
        let count = gate.count
        // dGate = gate buffer only.
        let g1 = gate.copy(), u1 = up.copy(), du1 = Tensor(shape: [count])
        SwiGLU.backward(da: da.data, gate: g1.data, up: u1.data, count: count, dGate: g1.data, dUp: du1.data)
        XCTAssertEqual(g1.array, dGate.array, "SwiGLU dGate aliased to gate", file: file, line: line)
        XCTAssertEqual(du1.array, dUp.array, "SwiGLU dUp with dGate aliased to gate", file: file, line: line)
        // dGate = gate and dUp = up.
        let g2 = gate.copy(), u2 = up.copy()
        SwiGLU.backward(da: da.data, gate: g2.data, up: u2.data, count: count, dGate: g2.data, dUp: u2.data)
        XCTAssertEqual(g2.array, dGate.array, "SwiGLU dGate aliased to gate, dUp to up", file: file, line: line)
        XCTAssertEqual(u2.array, dUp.array, "SwiGLU dUp aliased to up, dGate to gate", file: file, line: line)
    }

    // MARK: Cross-entropy

    func testCrossEntropyHandComputedRow() {
        // logits [0, ln 2, ln 3], target 2: softmax = [1, 2, 3] / 6, loss = ln 6 − ln 3 = ln 2.
        let values: [Float] = [0, Float(log(2.0)), Float(log(3.0))]
        var targets: [Int32] = [2]
        let logits = Tensor(shape: [1, 3], values: values)
        let loss = CrossEntropy.forwardBackward(logits: logits.data, targets: &targets, rows: 1, vocab: 3, gradScale: 1)
        XCTAssertEqual(loss, log(2.0), accuracy: 1e-6)
        let expectedGrad: [Float] = [1.0 / 6, 2.0 / 6, 3.0 / 6 - 1]
        XCTAssertLessThanOrEqual(maxAbsDiff(logits.array, expectedGrad), 1e-6, "softmax − onehot: \(logits.array)")

        // gradScale multiplies the gradient, not the loss.
        let scaled = Tensor(shape: [1, 3], values: values)
        let loss2 = CrossEntropy.forwardBackward(logits: scaled.data, targets: &targets, rows: 1, vocab: 3, gradScale: 0.25)
        XCTAssertEqual(loss2, log(2.0), accuracy: 1e-6)
        XCTAssertLessThanOrEqual(maxAbsDiff(scaled.array, expectedGrad.map { $0 * 0.25 }), 1e-6)

        // gradScale nil: the row holds the unnormalized probabilities exp(logit − max) = [1, 2, 3] / 3.
        let probs = Tensor(shape: [1, 3], values: values)
        let loss3 = CrossEntropy.forwardBackward(logits: probs.data, targets: &targets, rows: 1, vocab: 3, gradScale: nil)
        XCTAssertEqual(loss3, log(2.0), accuracy: 1e-6)
        XCTAssertLessThanOrEqual(maxAbsDiff(probs.array, [1.0 / 3, 2.0 / 3, 1]), 1e-6)
    }

    func testCrossEntropyGradient() {
        // vocab 21: two SIMD8 groups and a tail of 5; four rows run on several threads.
        let rows = 4, vocab = 21, gradScale: Float = 0.7
        let logits = randomTensor([rows, vocab], seed: 401, scale: 3)
        var r = SeededRandom(seed: 402)
        let targets = (0..<rows).map { _ in Int32(r.next() % UInt64(vocab)) }
        let scratch = Tensor(shape: [rows, vocab])

        // L = gradScale · Σ_rows loss; forwardBackward with gradScale nil computes the loss only.
        func objective() -> Double {
            scratch.copy(from: logits)
            return Double(gradScale) * CrossEntropy.forwardBackward(logits: scratch.data, targets: targets,
                                                                      rows: rows, vocab: vocab, gradScale: nil)
        }
        let grad = logits.copy()
        let loss = CrossEntropy.forwardBackward(logits: grad.data, targets: targets, rows: rows, vocab: vocab, gradScale: gradScale)
        XCTAssertEqual(Double(gradScale) * loss, objective(), accuracy: 1e-6 * abs(loss))

        // The loss against a Double reference.
        var reference = 0.0
        for row in 0..<rows {
            let l = (0..<vocab).map { Double(logits[row * vocab + $0]) }
            let mx = l.max()!
            reference += mx + log(l.reduce(0) { $0 + exp($1 - mx) }) - l[Int(targets[row])]
        }
        report("CrossEntropy loss vs Double reference", "|Δ| \(sci(abs(loss - reference))), loss \(loss)")
        XCTAssertEqual(loss, reference, accuracy: 1e-5 * reference)

        checkGradient(grad.array, centralDifferences(logits, h: Self.h, objective), tol: Self.nonlinearTolerance,
                      "CrossEntropy dlogits")
    }

    // MARK: Causal attention

    struct AttentionCase {
        let batch: Int, T: Int, heads: Int, kvHeads: Int, headDim: Int
        var qd: Int { heads * headDim }
        var kvd: Int { kvHeads * headDim }
        let q: Tensor, k: Tensor, v: Tensor
        init(batch: Int = 2, T: Int = 7, heads: Int = 4, kvHeads: Int = 2, headDim: Int = 8) {
            (self.batch, self.T, self.heads, self.kvHeads, self.headDim) = (batch, T, heads, kvHeads, headDim)
            q = randomTensor([batch * T, heads * headDim], seed: 501)
            k = randomTensor([batch * T, kvHeads * headDim], seed: 502)
            v = randomTensor([batch * T, kvHeads * headDim], seed: 503)
        }
    }

    /// Causal softmax attention in Double with an explicit softmax over j ≤ i; query head h reads kv head h / (heads / kvHeads).
    /// `round` is applied to both products' operands (q, k; the probabilities and v); with `unnormalized`
    /// the probabilities are rounded before the division by their sum (FlashAttention's order).
    func naiveAttention(_ c: AttentionCase, round: (Float) -> Float = { $0 }, unnormalized: Bool = false) -> (out: [Double], lse: [Double]) {
        let group = c.heads / c.kvHeads, scale = 1 / Double(c.headDim).squareRoot()
        var out = [Double](repeating: 0, count: c.batch * c.T * c.qd)
        var lse = [Double](repeating: 0, count: c.batch * c.heads * c.T)
        for b in 0..<c.batch {
            for h in 0..<c.heads {
                let kvh = h / group
                for i in 0..<c.T {
                    let qi = (b * c.T + i) * c.qd + h * c.headDim
                    var s = [Double](repeating: 0, count: i + 1)
                    for j in 0...i {
                        let kj = (b * c.T + j) * c.kvd + kvh * c.headDim
                        var dot = 0.0
                        for d in 0..<c.headDim { dot += Double(round(c.q[qi + d])) * Double(round(c.k[kj + d])) }
                        s[j] = dot * scale
                    }
                    let mx = s.max()!
                    let sum = s.reduce(0) { $0 + exp($1 - mx) }
                    lse[(b * c.heads + h) * c.T + i] = mx + log(sum)
                    for j in 0...i {
                        let p = unnormalized ? Double(round(Float(exp(s[j] - mx)))) / sum : Double(round(Float(exp(s[j] - mx) / sum)))
                        let vj = (b * c.T + j) * c.kvd + kvh * c.headDim
                        for d in 0..<c.headDim { out[qi + d] += p * Double(round(c.v[vj + d])) }
                    }
                }
            }
        }
        return (out, lse)
    }

    func testCausalAttentionForwardMatchesNaiveReference() {
        let c = AttentionCase()
        let (refOut, refLse) = naiveAttention(c)
        for block in [4, 3, 1, 64] {
            var attention = CausalAttention(heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim)
            attention.block = block
            let out = Tensor(shape: [c.batch * c.T, c.qd]), lse = Tensor(shape: [c.batch * c.heads * c.T])
            attention.forward(q: c.q.data, k: c.k.data, v: c.v.data, batch: c.batch, seqLen: c.T, out: out.data, lse: lse.data)
            let outErr = maxAbsDiff(out.array, refOut), lseErr = maxAbsDiff(lse.array, refLse)
            report("CausalAttention forward (block \(block)) vs naive", "out max |Δ| \(sci(outErr)), lse max |Δ| \(sci(lseErr))")
            XCTAssertLessThanOrEqual(outErr, 1e-5, "attention output, block \(block)")
            XCTAssertLessThanOrEqual(lseErr, 1e-5, "attention log-sum-exp, block \(block)")
        }
    }

    /// From 2048 tokens on, query rows go in blocks of 128 (`rowBlock`), with a ragged last block here.
    func testLongSequencesUseTallerBlocksAndMatchTheNaiveReference() {
        let c = AttentionCase(batch: 1, T: 2100, heads: 2, kvHeads: 1, headDim: 4)
        let attention = CausalAttention(heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim)
        XCTAssertEqual(attention.rowBlock(seqLen: 2047), 64)
        XCTAssertEqual(attention.rowBlock(seqLen: c.T), 128)
        let (refOut, refLse) = naiveAttention(c)
        let out = Tensor(shape: [c.batch * c.T, c.qd]), lse = Tensor(shape: [c.batch * c.heads * c.T])
        attention.forward(q: c.q.data, k: c.k.data, v: c.v.data, batch: c.batch, seqLen: c.T, out: out.data, lse: lse.data)
        XCTAssertLessThanOrEqual(maxAbsDiff(out.array, refOut), 1e-5)
        XCTAssertLessThanOrEqual(maxAbsDiff(lse.array, refLse), 1e-5)
    }

    /// In bf16 precision the products take bfloat16-rounded operands (GemmTests.bf16, written from
    /// Intel's description): the output equals the reference whose q, k, probabilities and v are
    /// rounded, to fp32 rounding, while the fp32 output is 1e-3 or more away from it.
    func testBF16AttentionRoundsTheProductsOperands() throws {
        guard Precision.bf16.isAvailable else { throw XCTSkip("this CPU has no bf16 dot products") }
        let c = AttentionCase(batch: 2, T: 70, heads: 4, kvHeads: 2, headDim: 16)
        let (refOut, refLse) = naiveAttention(c, round: GemmTests.bf16)
        var outputs: [Precision: [Float]] = [:]
        for precision in [Precision.bf16, .fp32] {
            var attention = CausalAttention(heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim)
            attention.precision = precision
            let out = Tensor(shape: [c.batch * c.T, c.qd]), lse = Tensor(shape: [c.batch * c.heads * c.T])
            attention.forward(q: c.q.data, k: c.k.data, v: c.v.data, batch: c.batch, seqLen: c.T, out: out.data, lse: lse.data)
            outputs[precision] = out.array
            if precision == .bf16 { XCTAssertLessThanOrEqual(maxAbsDiff(lse.array, refLse), 1e-5) }
        }
        let bf16Err = maxAbsDiff(outputs[.bf16]!, refOut), fp32Err = maxAbsDiff(outputs[.fp32]!, refOut)
        report("CausalAttention bf16 forward vs naive with rounded operands", "bf16 max |Δ| \(sci(bf16Err)), fp32 \(sci(fp32Err))")
        XCTAssertLessThanOrEqual(bf16Err, 1e-6)
        XCTAssertGreaterThan(fp32Err, 1e-3)
    }

    func testCausalAttentionBackward() {
        let c = AttentionCase()
        var attention = CausalAttention(heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim)
        attention.block = 4  // T = 7: one full block and one partial
        let w = randomTensor([c.batch * c.T, c.qd], seed: 504)
        let out = Tensor(shape: [c.batch * c.T, c.qd]), lse = Tensor(shape: [c.batch * c.heads * c.T])

        func run(_ attention: CausalAttention) -> Double {
            attention.forward(q: c.q.data, k: c.k.data, v: c.v.data, batch: c.batch, seqLen: c.T, out: out.data, lse: lse.data)
            return weightedSum(out, w)
        }
        func objective() -> Double { run(attention) }
        func analytic(_ attention: CausalAttention) -> (dq: Tensor, dk: Tensor, dv: Tensor) {
            _ = run(attention)
            // The backward overwrites: start from NaN so a missed element shows.
            let dq = Tensor(shape: c.q.shape), dk = Tensor(shape: c.k.shape), dv = Tensor(shape: c.v.shape)
            for t in [dq, dk, dv] { t.data.update(repeating: .nan, count: t.count) }
            attention.backward(dOut: w.data, q: c.q.data, k: c.k.data, v: c.v.data, out: out.data, lse: lse.data,
                               batch: c.batch, seqLen: c.T, dq: dq.data, dk: dk.data, dv: dv.data)
            return (dq, dk, dv)
        }
        let (dq, dk, dv) = analytic(attention)
        checkGradient(dq.array, centralDifferences(c.q, h: Self.h, objective), tol: Self.nonlinearTolerance, "CausalAttention dq")
        checkGradient(dk.array, centralDifferences(c.k, h: Self.h, objective), tol: Self.nonlinearTolerance, "CausalAttention dk")
        checkGradient(dv.array, centralDifferences(c.v, h: Self.h, objective), tol: Self.linearTolerance, "CausalAttention dv")

        // Other block sizes give the same gradients to rounding.
        for block in [3, 64] {
            var other = attention
            other.block = block
            let (q2, k2, v2) = analytic(other)
            XCTAssertLessThan(relativeError(q2.array, dq.array), 1e-5, "dq, block \(block) vs 4")
            XCTAssertLessThan(relativeError(k2.array, dk.array), 1e-5, "dk, block \(block) vs 4")
            XCTAssertLessThan(relativeError(v2.array, dv.array), 1e-5, "dv, block \(block) vs 4")
        }
    }

    // MARK: Causal attention's packed path (CausalAttention+Packed.swift)

    /// The packed path's kernels this CPU has, each with the precision and `Gemm` backend that select it.
    static var packedRoutes: [(precision: Precision, backend: GemmBackend)] {
        [(Precision.fp32, GemmBackend.avx512), (.fp32, .avx2), (.bf16, .avx512)].filter { route in
            GemmBackend.cpuKernels.contains(route.backend) && route.precision.isAvailable
                && Gemm.withBackend(route.backend) {
                    var attention = CausalAttention(heads: 1, kvHeads: 1, headDim: 32)
                    attention.precision = route.precision
                    return attention.runsPacked
                }
        }
    }

    /// Head sizes in whole panels take the packed path, on each of its kernels this CPU has: row blocks
    /// that are ragged against the 14- and 6-row tiles (3, 14, 29) and odd (the bf16 pairs of rows),
    /// T = 70 ragged against the 32- and 16-key panels; and a head of 64 (two panels, longer packing loops).
    func testPackedAttentionForwardMatchesNaiveReference() throws {
        let routes = Self.packedRoutes
        guard !routes.isEmpty else { throw XCTSkip("this CPU has neither AVX-512 nor AVX2") }
        for c in [AttentionCase(batch: 2, T: 70, heads: 4, kvHeads: 2, headDim: 32),
                  AttentionCase(batch: 1, T: 45, heads: 2, kvHeads: 1, headDim: 64)] {
            try checkPackedForward(c, routes: routes)
        }
    }

    private func checkPackedForward(_ c: AttentionCase, routes: [(precision: Precision, backend: GemmBackend)]) throws {
        let (refOut, refLse) = naiveAttention(c)
        let (roundedOut, roundedLse) = naiveAttention(c, round: GemmTests.bf16, unnormalized: true)
        for (precision, backend) in routes {
            try Gemm.withBackend(backend) {
                var attention = CausalAttention(heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim)
                attention.precision = precision
                let kernel = try XCTUnwrap(attention.packedKernel)
                for block in [64, 3, 14, 29] {
                    attention.packedBlock = block
                    let out = Tensor(shape: [c.batch * c.T, c.qd]), lse = Tensor(shape: [c.batch * c.heads * c.T])
                    attention.forward(q: c.q.data, k: c.k.data, v: c.v.data, batch: c.batch, seqLen: c.T, out: out.data, lse: lse.data)
                    let outErr = maxAbsDiff(out.array, precision == .bf16 ? roundedOut : refOut)
                    let lseErr = maxAbsDiff(lse.array, precision == .bf16 ? roundedLse : refLse)
                    report("CausalAttention packed \(kernel) forward (head \(c.headDim), block \(block)) vs naive", "out max |Δ| \(sci(outErr)), lse \(sci(lseErr))")
                    XCTAssertLessThanOrEqual(outErr, precision == .bf16 ? 1e-6 : 1e-5, "\(kernel) output, block \(block)")
                    XCTAssertLessThanOrEqual(lseErr, 1e-5, "\(kernel) log-sum-exp, block \(block)")
                }
            }
        }
    }

    /// A NaN key (a diverged adapter) reaches every query that sees it and none before, as on the `Gemm`
    /// path, rather than being clamped to a zero probability.
    func testPackedAttentionPropagatesANaNKey() throws {
        let routes = Self.packedRoutes
        guard !routes.isEmpty else { throw XCTSkip("this CPU has neither AVX-512 nor AVX2") }
        let c = AttentionCase(batch: 1, T: 40, heads: 2, kvHeads: 1, headDim: 32)
        c.k.data[20 * c.kvd + 5] = .nan
        for (precision, backend) in routes {
            Gemm.withBackend(backend) {
                var attention = CausalAttention(heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim)
                attention.precision = precision
                let out = Tensor(shape: [c.batch * c.T, c.qd]), lse = Tensor(shape: [c.batch * c.heads * c.T])
                attention.forward(q: c.q.data, k: c.k.data, v: c.v.data, batch: c.batch, seqLen: c.T, out: out.data, lse: lse.data)
                for t in 0..<c.T {
                    XCTAssertEqual(out.data[t * c.qd].isNaN, t >= 20, "\(precision) on \(backend): row \(t)")
                }
            }
        }
    }

    /// Every row block exactly once, in order, in runs whose work (the blocks' keys) differs by at most
    /// one block's from an equal share.
    func testPackedAttentionScheduleSharesTheWork() {
        for (tasks, T, block, parts) in [(9, 4096, 56, 2), (9, 256, 56, 2), (1, 75, 13, 3), (36, 256, 56, 2), (2, 7, 4, 5)] {
            let runs = CausalAttention.schedule(tasks: tasks, seqLen: T, block: block, parts: parts)
            let blocks = (T + block - 1) / block
            let visited = runs.flatMap { $0 }.flatMap { s in s.blocks.map { s.task * blocks + $0 } }
            XCTAssertEqual(visited, Array(0..<tasks * blocks), "tasks \(tasks), T \(T), block \(block), parts \(parts)")
            XCTAssertLessThanOrEqual(runs.count, parts)
            let work = runs.map { $0.reduce(0) { w, s in w + s.blocks.reduce(0) { $0 + min(($1 + 1) * block, T) } } }
            let share = Double(work.reduce(0, +)) / Double(runs.count)
            for w in work { XCTAssertLessThanOrEqual(abs(Double(w) - share), Double(T), "runs \(work)") }
        }
    }

    /// The packed backward on each of its kernels this CPU has: against finite differences (fp32), and
    /// against the `Gemm` path (itself checked against finite differences above) over several ragged row blocks.
    func testPackedAttentionBackward() throws {
        let routes = Self.packedRoutes
        guard !routes.isEmpty else { throw XCTSkip("this CPU has neither AVX-512 nor AVX2") }

        /// The gradients after `forward`'s output (or `saved`'s: bf16 rounds the probabilities in another
        /// order on each path, and the backward's D = dO·O would differ by that).
        func gradients(_ attention: CausalAttention, _ c: AttentionCase, dOut w: Tensor,
                       saved: (out: Tensor, lse: Tensor)? = nil) -> (out: Tensor, lse: Tensor, grads: [Tensor]) {
            let ownOut = Tensor(shape: [c.batch * c.T, c.qd]), ownLse = Tensor(shape: [c.batch * c.heads * c.T])
            attention.forward(q: c.q.data, k: c.k.data, v: c.v.data, batch: c.batch, seqLen: c.T, out: ownOut.data, lse: ownLse.data)
            let (out, lse) = saved ?? (ownOut, ownLse)
            let dq = Tensor(shape: c.q.shape), dk = Tensor(shape: c.k.shape), dv = Tensor(shape: c.v.shape)
            for t in [dq, dk, dv] { t.data.update(repeating: .nan, count: t.count) }
            attention.backward(dOut: w.data, q: c.q.data, k: c.k.data, v: c.v.data, out: out.data, lse: lse.data,
                               batch: c.batch, seqLen: c.T, dq: dq.data, dk: dk.data, dv: dv.data)
            return (out, lse, [dq, dk, dv])
        }

        let small = AttentionCase(batch: 2, T: 7, heads: 4, kvHeads: 2, headDim: 32)
        let w = randomTensor([small.batch * small.T, small.qd], seed: 504)
        let c = AttentionCase(batch: 1, T: 75, heads: 4, kvHeads: 2, headDim: 32)
        let dOut = randomTensor([c.batch * c.T, c.qd], seed: 505)
        for (precision, backend) in routes {
            try Gemm.withBackend(backend) {
                var attention = CausalAttention(heads: 4, kvHeads: 2, headDim: 32)
                attention.precision = precision
                let kernel = try XCTUnwrap(attention.packedKernel)
                if precision == .fp32 {
                    attention.packedBlock = 4
                    let analytic = gradients(attention, small, dOut: w).grads
                    func objective() -> Double { weightedSum(gradients(attention, small, dOut: w).out, w) }
                    for (i, x) in [small.q, small.k, small.v].enumerated() {
                        checkGradient(analytic[i].array, centralDifferences(x, h: Self.h, objective), tol: Self.nonlinearTolerance,
                                      "packed CausalAttention \(kernel) \(["dq", "dk", "dv"][i])")
                    }
                }
                var reference = attention
                reference.packedKernels = false
                reference.block = 64
                let expected = gradients(reference, c, dOut: dOut)
                for block in [64, 13, 28] {
                    attention.packedBlock = block
                    let got = gradients(attention, c, dOut: dOut, saved: (expected.out, expected.lse)).grads
                    for i in 0..<3 {
                        let err = relativeError(got[i].array, expected.grads[i].array)
                        report("CausalAttention packed \(kernel) \(["dq", "dk", "dv"][i]) (block \(block)) vs Gemm path", "relative \(sci(Double(err)))")
                        XCTAssertLessThan(err, 1e-5, "\(kernel) \(["dq", "dk", "dv"][i]), block \(block)")
                    }
                }
            }
        }
    }

    // MARK: Linear with a LoRA adapter

    func testLinearLoRABackward() {
        checkLinearLoRA(dropout: 0, label: "Linear+LoRA")
    }

    func testLinearLoRABackwardWithDropout() {
        checkLinearLoRA(dropout: 0.3, label: "Linear+LoRA dropout 0.3")
    }

    /// Gradients of A, B (accumulated into Parameter.grad) and x for y = x·Wᵀ + b + s·B·A·dropout(x), training mode.
    /// With dropout the adapter's generator is reset to one saved state before every forward, so every forward
    /// (the analytic one and each finite-difference one) draws the same mask.
    func checkLinearLoRA(dropout: Float, label: String, file: StaticString = #filePath, line: UInt = #line) {
        let inF = 12, outF = 10, rank = 4, rows = 5
        let linear = Linear(weight: randomTensor([outF, inF], seed: 601, scale: 0.5), bias: randomTensor([outF], seed: 602))
        var seed = SeededRandom(seed: 603)
        // .none initializes B non-zero too, so A's gradient and the adapter's share of dx are not trivially zero.
        let lora = LoRA(inFeatures: inF, outFeatures: outF, rank: rank, alpha: 8, dropout: dropout,
                        initialization: .none, name: "fd", random: &seed)
        linear.adapter = lora
        XCTAssertEqual(lora.scaling, 2, file: file, line: line)
        lora.random = SeededRandom(seed: 604)
        let maskState = lora.random

        let x = randomTensor([rows, inF], seed: 605)
        let w = randomTensor([rows, outF], seed: 606)
        let savedPerRow = linear.savedFloatsPerRow(training: true)
        XCTAssertEqual(savedPerRow, rank + (dropout > 0 ? inF : 0), file: file, line: line)
        let y = Tensor(shape: [rows, outF]), saved = Tensor(shape: [rows * savedPerRow])

        func objective() -> Double {
            lora.random = maskState
            linear.forward(x: x.data, rows: rows, y: y.data, saved: saved.data, training: true)
            return weightedSum(y, w)
        }

        // Analytic: grads and dx start non-zero, since both are accumulated into.
        _ = objective()
        if dropout > 0 {
            let mask = Array(UnsafeBufferPointer(start: saved.data + rows * rank, count: rows * inF))
            let keep = 1 / (1 - dropout), dropped = mask.filter { $0 == 0 }.count
            XCTAssertTrue(mask.allSatisfy { $0 == 0 || $0 == keep }, "mask values", file: file, line: line)
            XCTAssertGreaterThan(dropped, 0, "the mask drops nothing", file: file, line: line)
            XCTAssertLessThan(dropped, mask.count, "the mask drops everything", file: file, line: line)
            report("\(label) mask", "\(dropped) of \(mask.count) inputs dropped")
        }
        let gradA0 = randomTensor(lora.a.value.shape, seed: 607), gradB0 = randomTensor(lora.b.value.shape, seed: 608)
        lora.a.grad.copy(from: gradA0)
        lora.b.grad.copy(from: gradB0)
        let dx0 = randomTensor([rows, inF], seed: 609), dx = dx0.copy()
        linear.backward(dy: w.data, x: x.data, rows: rows, saved: saved.data, dx: dx.data, accumulate: true)
        let dA = (0..<gradA0.count).map { lora.a.grad[$0] - gradA0[$0] }
        let dB = (0..<gradB0.count).map { lora.b.grad[$0] - gradB0[$0] }
        let dX = (0..<dx0.count).map { dx[$0] - dx0[$0] }

        checkGradient(dA, centralDifferences(lora.a.value, h: Self.h, objective), tol: Self.linearTolerance,
                      "\(label) dA", file: file, line: line)
        checkGradient(dB, centralDifferences(lora.b.value, h: Self.h, objective), tol: Self.linearTolerance,
                      "\(label) dB", file: file, line: line)
        checkGradient(dX, centralDifferences(x, h: Self.h, objective), tol: Self.linearTolerance,
                      "\(label) dx", file: file, line: line)

        // accumulate: false overwrites dx (NaN start), and a second backward adds the same gradient again to A and B.
        _ = objective()
        let dxFresh = Tensor(shape: [rows, inF])
        dxFresh.data.update(repeating: .nan, count: dxFresh.count)
        linear.backward(dy: w.data, x: x.data, rows: rows, saved: saved.data, dx: dxFresh.data, accumulate: false)
        XCTAssertLessThan(relativeError(dxFresh.array, dX), 1e-5, "\(label) dx, accumulate false", file: file, line: line)
        let twiceA = (0..<gradA0.count).map { gradA0[$0] + 2 * dA[$0] }
        let twiceB = (0..<gradB0.count).map { gradB0[$0] + 2 * dB[$0] }
        XCTAssertLessThan(relativeError(lora.a.grad.array, twiceA), 1e-5, "\(label) A.grad accumulates", file: file, line: line)
        XCTAssertLessThan(relativeError(lora.b.grad.array, twiceB), 1e-5, "\(label) B.grad accumulates", file: file, line: line)
    }
}

// MARK: An adapter that rescales the base output (the shape DoRA needs)

extension GradientCheckTests {
    /// y = r + (1 + c) ∘ (x·Wᵀ) + b through `Linear` with a residual r already in y (beta 1): the
    /// adapter must get x·Wᵀ alone, the bias must come after it, the base path's input gradient must
    /// take the adapter's rescaled dy, and merging must put diag(1 + c)·W in place.
    func testAdapterThatRescalesTheBaseOutput() throws {
        let rows = 4, inF = 6, outF = 5
        let weight = randomTensor([outF, inF], seed: 901), bias = randomTensor([outF], seed: 902)
        let x = randomTensor([rows, inF], seed: 903), residual = randomTensor([rows, outF], seed: 904)
        let w = randomTensor([rows, outF], seed: 905)
        let linear = Linear(weight: weight.copy(), bias: bias)
        let scale = OutputScale(outFeatures: outF)
        for j in 0..<outF { scale.c.value[j] = 0.1 * Float(j) - 0.2 }
        linear.adapter = scale
        let saved = Tensor(shape: [rows * scale.savedFloatsPerRow(training: true)])
        let y = Tensor(shape: [rows, outF])
        func objective() -> Double {
            for i in 0..<y.count { y[i] = residual[i] }
            linear.forward(x: x.data, rows: rows, y: y.data, beta: 1, saved: saved.data, training: true)
            return weightedSum(y, w)
        }
        _ = objective()
        for r in 0..<rows {
            for j in 0..<outF {
                let base = (0..<inF).reduce(Float(0)) { $0 + x[r * inF + $1] * weight[j * inF + $1] }
                XCTAssertEqual(y[r * outF + j], residual[r * outF + j] + (1 + scale.c.value[j]) * base + bias[j], accuracy: 1e-5)
            }
        }
        let dx = Tensor(shape: [rows, inF])
        linear.backward(dy: w.data, x: x.data, rows: rows, saved: saved.data, dx: dx.data, accumulate: false)
        checkGradient(dx.array, centralDifferences(x, h: Self.h, objective), tol: Self.linearTolerance, "rescaling adapter dx")
        checkGradient(scale.c.grad.array, centralDifferences(scale.c.value, h: Self.h, objective), tol: Self.linearTolerance,
                      "rescaling adapter dc")

        _ = objective()  // the differences left y at a perturbed input
        let unmergedY = y.array
        try linear.merge()
        _ = objective()
        XCTAssertLessThan(relativeError(y.array, unmergedY), 1e-6, "merged output")
        try linear.unmerge()
        XCTAssertLessThan(relativeError(linear.weight.array, weight.array), 1e-6, "unmerge restores W")
    }
}

extension GradientCheckTests {
    /// DoRA through Linear: m starts at the row norms of W (B is zero), the output is
    /// m ⊙ (x·Wᵀ + s·B·A·x) / ‖W + s·B·A‖ + b, and the input and magnitude gradients (which the
    /// detached norm does not touch) equal finite differences; merging and unmerging are exact.
    func testDoRAOutputAndGradients() throws {
        let rows = 3, inF = 7, outF = 5, rank = 2
        let weight = randomTensor([outF, inF], seed: 911), bias = randomTensor([outF], seed: 912)
        let x = randomTensor([rows, inF], seed: 913), w = randomTensor([rows, outF], seed: 914)
        let linear = Linear(weight: weight.copy(), bias: bias)
        var random = SeededRandom(seed: 915)
        let lora = LoRA(inFeatures: inF, outFeatures: outF, rank: rank, alpha: 4, name: "l", random: &random)
        let dora = DoRA(lora: lora, layer: linear, name: "l")
        for j in 0..<outF {
            let norm = (0..<inF).reduce(0.0) { $0 + Double(weight[j * inF + $1] * weight[j * inF + $1]) }.squareRoot()
            XCTAssertEqual(Double(dora.magnitude.value[j]), norm, accuracy: 1e-6 * norm, "m starts at ‖W‖ of row \(j)")
        }
        for i in 0..<lora.b.value.count { lora.b.value[i] = 0.3 * Float(i % 5) - 0.6 }
        for j in 0..<outF { dora.magnitude.value[j] *= 0.9 + 0.05 * Float(j) }
        linear.adapter = dora
        let saved = Tensor(shape: [rows * dora.savedFloatsPerRow(training: true)]), y = Tensor(shape: [rows, outF])
        func objective() -> Double {
            linear.forward(x: x.data, rows: rows, y: y.data, saved: saved.data, training: true)
            return weightedSum(y, w)
        }
        _ = objective()
        let adapted = Tensor(shape: [outF, inF])  // W + s·B·A by hand
        for j in 0..<outF {
            for i in 0..<inF {
                adapted[j * inF + i] = weight[j * inF + i] + lora.scaling * (0..<rank).reduce(0) { $0 + lora.b.value[j * rank + $1] * lora.a.value[$1 * inF + i] }
            }
        }
        for r in 0..<rows {
            for j in 0..<outF {
                let norm = (0..<inF).reduce(Float(0)) { $0 + adapted[j * inF + $1] * adapted[j * inF + $1] }.squareRoot()
                let dotValue = (0..<inF).reduce(Float(0)) { $0 + x[r * inF + $1] * adapted[j * inF + $1] }
                XCTAssertEqual(y[r * outF + j], dora.magnitude.value[j] * dotValue / norm + bias[j], accuracy: 1e-5)
            }
        }
        let dx = Tensor(shape: [rows, inF])
        linear.backward(dy: w.data, x: x.data, rows: rows, saved: saved.data, dx: dx.data, accumulate: false)
        checkGradient(dx.array, centralDifferences(x, h: Self.h, objective), tol: Self.linearTolerance, "DoRA dx")
        checkGradient(dora.magnitude.grad.array, centralDifferences(dora.magnitude.value, h: Self.h, objective),
                      tol: Self.linearTolerance, "DoRA dm")

        _ = objective()
        let unmergedY = y.array
        try linear.merge()
        _ = objective()
        XCTAssertLessThan(relativeError(y.array, unmergedY), 1e-6, "DoRA merged output")
        try linear.unmerge()
        XCTAssertLessThan(relativeError(linear.weight.array, weight.array), 1e-6, "DoRA unmerge restores W")
    }
}

extension GradientCheckTests {
    /// DoRA with dropout, as PEFT computes it in training: y = x·Wᵀ + b + (k − 1) ⊙ (x̃·Wᵀ) + k ⊙ s·B·A·x̃
    /// with x̃ the dropped input and k = m / ‖W + s·B·A‖; the input and magnitude gradients equal finite
    /// differences under the same mask (the generator is rewound before every evaluation).
    func testDoRAWithDropoutOutputAndGradients() throws {
        let rows = 3, inF = 7, outF = 5, rank = 2
        let weight = randomTensor([outF, inF], seed: 921), bias = randomTensor([outF], seed: 922)
        let x = randomTensor([rows, inF], seed: 923), w = randomTensor([rows, outF], seed: 924)
        let linear = Linear(weight: weight.copy(), bias: bias)
        var random = SeededRandom(seed: 925)
        let lora = LoRA(inFeatures: inF, outFeatures: outF, rank: rank, alpha: 4, dropout: 0.3, name: "l", random: &random)
        let dora = DoRA(lora: lora, layer: linear, name: "l")
        for i in 0..<lora.b.value.count { lora.b.value[i] = 0.3 * Float(i % 5) - 0.6 }
        for j in 0..<outF { dora.magnitude.value[j] *= 0.9 + 0.05 * Float(j) }
        linear.adapter = dora
        let saved = Tensor(shape: [rows * dora.savedFloatsPerRow(training: true)]), y = Tensor(shape: [rows, outF])
        let start = dora.generators
        func objective() -> Double {
            dora.generators = start
            linear.forward(x: x.data, rows: rows, y: y.data, saved: saved.data, training: true)
            return weightedSum(y, w)
        }
        _ = objective()
        let mask = (0..<(rows * inF)).map { saved[rows * rank + $0] }
        XCTAssertTrue(mask.contains(0) && mask.contains { $0 > 1 }, "dropout drew no mask")
        let norms = dora.rowNorms()
        for r in 0..<rows {
            for j in 0..<outF {
                let k = dora.magnitude.value[j] / norms[j]
                var base: Float = 0, dropped: Float = 0, low: Float = 0
                for i in 0..<inF {
                    let xd = x[r * inF + i] * mask[r * inF + i]
                    base += x[r * inF + i] * weight[j * inF + i]
                    dropped += xd * weight[j * inF + i]
                    low += lora.scaling * xd * (0..<rank).reduce(0) { $0 + lora.b.value[j * rank + $1] * lora.a.value[$1 * inF + i] }
                }
                XCTAssertEqual(y[r * outF + j], base + bias[j] + (k - 1) * dropped + k * low, accuracy: 1e-5)
            }
        }
        let dx = Tensor(shape: [rows, inF])
        linear.backward(dy: w.data, x: x.data, rows: rows, saved: saved.data, dx: dx.data, accumulate: false)
        checkGradient(dx.array, centralDifferences(x, h: Self.h, objective), tol: Self.linearTolerance, "DoRA with dropout dx")
        checkGradient(dora.magnitude.grad.array, centralDifferences(dora.magnitude.value, h: Self.h, objective),
                      tol: Self.linearTolerance, "DoRA with dropout dm")
    }
}

extension GradientCheckTests {
    /// VeRA through Linear, with and without dropout: every gradient (λ_b, λ_d, and the input through
    /// the sliced shared projections) equals finite differences under the same mask.
    func testVeRABackward() throws {
        for dropout: Float in [0, 0.3] {
            let rows = 3, inF = 6, outF = 5
            let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
            var config = VeRAConfig(r: 4, targetModules: .names(["q_proj", "down_proj"]))  // projections wider than q_proj
            config.veraDropout = dropout
            let made = try config.makeAdapters(sites: model.sites.filter { config.targets(path: $0.path) }, keyPrefix: "", random: &TestRandom.shared)
            let a = made.shared[0], b = made.shared[1]
            let vera = VeRA(inFeatures: inF, outFeatures: outF, projectionA: a, projectionB: b, dInitial: 0.1, dropout: dropout,
                            name: "l", random: &TestRandom.shared)
            for j in 0..<outF { vera.lambdaB.value[j] = 0.5 - 0.2 * Float(j) }
            for i in 0..<vera.rank { vera.lambdaD.value[i] = 0.1 + 0.3 * Float(i) }
            let linear = Linear(weight: randomTensor([outF, inF], seed: 931))
            linear.adapter = vera
            let x = randomTensor([rows, inF], seed: 932), w = randomTensor([rows, outF], seed: 933)
            let saved = Tensor(shape: [rows * vera.savedFloatsPerRow(training: true)]), y = Tensor(shape: [rows, outF])
            let start = vera.generators
            func objective() -> Double {
                vera.generators = start
                linear.forward(x: x.data, rows: rows, y: y.data, saved: saved.data, training: true)
                return weightedSum(y, w)
            }
            _ = objective()
            let dx = Tensor(shape: [rows, inF])
            linear.backward(dy: w.data, x: x.data, rows: rows, saved: saved.data, dx: dx.data, accumulate: false)
            let label = "VeRA (dropout \(dropout))"
            checkGradient(dx.array, centralDifferences(x, h: Self.h, objective), tol: Self.linearTolerance, "\(label) dx")
            checkGradient(vera.lambdaB.grad.array, centralDifferences(vera.lambdaB.value, h: Self.h, objective),
                          tol: Self.linearTolerance, "\(label) dλ_b")
            checkGradient(vera.lambdaD.grad.array, centralDifferences(vera.lambdaD.value, h: Self.h, objective),
                          tol: Self.linearTolerance, "\(label) dλ_d")
            if dropout > 0 { XCTAssertTrue((0..<(rows * inF)).contains { saved[rows * vera.rank + $0] == 0 }, "dropout drew no mask") }
        }
    }
}

/// One generator for tests that only need some fresh seed.
private enum TestRandom { nonisolated(unsafe) static var shared = SeededRandom(seed: 77) }

/// y = (1 + c) ∘ base per output column, with c trainable.
private final class OutputScale: LinearAdapter {
    let c: Parameter
    init(outFeatures: Int) { c = Parameter(name: "c", value: Tensor(shape: [outFeatures])) }
    var parameters: [Parameter] { [c] }
    var readsBaseOutput: Bool { true }
    func savedFloatsPerRow(training: Bool) -> Int { c.value.count }
    func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, saved: UnsafeMutablePointer<Float>, training: Bool) {
        let n = c.value.count
        for r in 0..<rows { for j in 0..<n { saved[r * n + j] = y[r * n + j]; y[r * n + j] *= 1 + c.value[j] } }
    }
    func baseOutputGradient(dy: UnsafePointer<Float>, rows: Int, saved: UnsafeMutablePointer<Float>, into: UnsafeMutablePointer<Float>) -> Bool {
        let n = c.value.count
        for r in 0..<rows { for j in 0..<n { into[r * n + j] = dy[r * n + j] * (1 + c.value[j]) } }
        return true
    }
    func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, saved: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?) {
        let n = c.value.count
        for r in 0..<rows { for j in 0..<n { c.grad[j] += dy[r * n + j] * saved[r * n + j] } }
    }
    func mergedWeight(_ weight: Tensor) -> Tensor { rowsScaled(weight) { 1 + $0 } }
    func unmergedWeight(_ merged: Tensor) -> Tensor { rowsScaled(merged) { 1 / (1 + $0) } }
    private func rowsScaled(_ weight: Tensor, _ factor: (Float) -> Float) -> Tensor {
        let out = weight.copy(), n = weight.count / c.value.count
        for j in 0..<c.value.count { for i in 0..<n { out[j * n + i] *= factor(c.value[j]) } }
        return out
    }
}

// MARK: - Helpers

/// L = Σ w ∘ y, summed in Double.
private func weightedSum(_ y: Tensor, _ w: Tensor) -> Double {
    precondition(y.count == w.count)
    var s = 0.0
    for i in 0..<w.count { s += Double(w[i]) * Double(y[i]) }
    return s
}

/// Central differences of `objective` with respect to every element of `x`: x[i] is perturbed in Float32
/// by ±h, divided by the step actually stored, and restored.
private func centralDifferences(_ x: Tensor, h: Float, _ objective: () -> Double) -> [Double] {
    (0..<x.count).map { i in
        let x0 = x[i], xp = x0 + h, xm = x0 - h
        x[i] = xp
        let lp = objective()
        x[i] = xm
        let lm = objective()
        x[i] = x0
        return (lp - lm) / (Double(xp) - Double(xm))
    }
}

private func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Double {
    maxAbsDiff(a, b.map(Double.init))
}

private func maxAbsDiff(_ a: [Float], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    return zip(a, b).reduce(0) { max($0, abs(Double($1.0) - $1.1)) }
}

private func sci(_ x: Double) -> String { String(format: "%.2e", x) }

private func report(_ name: String, _ detail: String) {
    print("[GradientCheck] \(name): \(detail)")
}

/// max |analytic − numeric| ≤ tol · max |numeric|, with max |numeric| ≥ minScale so the check means something.
private func checkGradient(_ analytic: [Float], _ numeric: [Double], tol: Double, minScale: Double = 1e-2, _ name: String,
                           file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(analytic.count, numeric.count, name, file: file, line: line)
    let err = maxAbsDiff(analytic, numeric)
    let scale = numeric.reduce(0) { max($0, abs($1)) }
    let rel = err / max(scale, .leastNonzeroMagnitude)
    report(name, "max |Δ| \(sci(err)), gradient scale \(sci(scale)), relative \(sci(rel)) (tol \(sci(tol)))")
    XCTAssertFalse(analytic.contains { !$0.isFinite }, "\(name): non-finite analytic gradient", file: file, line: line)
    XCTAssertGreaterThanOrEqual(scale, minScale, "\(name): gradient too small to check", file: file, line: line)
    XCTAssertLessThanOrEqual(rel, tol, "\(name): analytic vs finite differences", file: file, line: line)
}
