import XCTest
@testable import LoRAFormats

/// The decoding kernels against the reference: the rows dequantized by GGMLQuant (itself equal to
/// gguf-py's dequantization, GGUFTests) and multiplied in Double.
final class QuantizedDotTests: XCTestCase {
    /// Random blocks of `type`: scales (and Q4_1's minimums) as halves of ordinary size, random quants.
    func randomRows(_ type: GGMLType, rows: Int, blocks: Int, random: inout SeededRandom) -> [UInt8] {
        let blockBytes = type.bytesPerBlock
        var bytes = [UInt8](repeating: 0, count: rows * blocks * blockBytes)
        for b in 0..<(rows * blocks) {
            let at = b * blockBytes
            for i in 0..<blockBytes { bytes[at + i] = UInt8(truncatingIfNeeded: random.next()) }
            func half(_ offset: Int, _ value: Float) {
                let bits = Float16(value).bitPattern
                bytes[at + offset] = UInt8(bits & 0xFF); bytes[at + offset + 1] = UInt8(bits >> 8)
            }
            half(type == .Q6_K ? 208 : 0, Float(random.next() % 1000) / 50_000 + 1e-3)
            if type == .Q4_1 || type == .Q5_1 { half(2, -Float(random.next() % 1000) / 10_000) }
            if type == .Q4_K { half(2, Float(random.next() % 1000) / 100_000) }  // dmin
        }
        return bytes
    }

    func testEveryKernelMatchesTheDequantizedProduct() throws {
        let kernels = QuantizedDot.available
        try XCTSkipIf(kernels.isEmpty, "this CPU has neither AVX2+FMA nor AVX-512")
        var random = SeededRandom(seed: 11)
        for type in QuantizedDot.types {
            let kernels = kernels.filter { QuantizedDot.types(for: $0).contains(type) }
            let shapes = type.blockSize == 256 ? [(1, 1), (7, 2), (33, 6)] : [(1, 1), (7, 18), (33, 48)]
            for (rows, blocks) in shapes {
                let n = blocks * type.blockSize, w = randomRows(type, rows: rows, blocks: blocks, random: &random)
                var dense = [Float](repeating: 0, count: rows * n)
                w.withUnsafeBytes { GGMLQuant.dequantizeBlocks(type, $0.baseAddress!, &dense, blocks: rows * blocks) }
                let ldx = n + 3  // rows of x apart by more than n
                let x = (0..<(4 * ldx)).map { _ in Float(Int(random.next() % 2001) - 1000) / 1000 }
                for kernel in kernels {
                    for nx in 1...4 {
                        for beta: Float in [0, 0.5] {
                            let ldy = rows + 1
                            var y = (0..<(nx * ldy)).map { Float($0 % 7) }
                            let before = y
                            w.withUnsafeBytes { bytes in
                                QuantizedDot.run(kernel, type: type, rows: bytes.baseAddress!, rowBytes: blocks * type.bytesPerBlock,
                                                 count: rows, blocks: blocks, x: x, ldx: ldx, nx: nx, beta: beta, y: &y, ldy: ldy)
                            }
                            for r in 0..<nx {
                                for i in 0..<rows {
                                    var exact = 0.0, magnitude = 0.0
                                    for k in 0..<n {
                                        let p = Double(dense[i * n + k]) * Double(x[r * ldx + k])
                                        exact += p; magnitude += abs(p)
                                    }
                                    let expected = Double(beta) * Double(before[r * ldy + i]) + exact
                                    XCTAssertEqual(Double(y[r * ldy + i]), expected, accuracy: 2e-6 * (magnitude + abs(expected)) + 1e-30,
                                                   "\(kernel) \(type) \(rows)×\(blocks) blocks, vector \(r) of \(nx), row \(i), beta \(beta)")
                                }
                                XCTAssertEqual(y[r * ldy + rows], before[r * ldy + rows], "the column past the rows is left alone")
                            }
                        }
                    }
                }
            }
        }
    }

    /// The kernel each type gets: none for types the kernels do not read, none when the portable
    /// route is forced, AVX2 when it is forced.
    func testKernelChoiceFollowsTheForcedMatrixKernel() {
        XCTAssertNil(QuantizedDot.kernel(for: .Q5_K))
        XCTAssertNil(QuantizedDot.q8Kernel(for: .Q5_K))
        Gemm.withBackend(.builtin) { XCTAssertNil(QuantizedDot.kernel(for: .Q4_1)) }
        if CPUFeatures.current.contains(.avx2FMA) { Gemm.withBackend(.avx2) { XCTAssertEqual(QuantizedDot.kernel(for: .Q8_0), .avx2) } }
        XCTAssertEqual(QuantizedDot.kernel(for: .Q4_0), QuantizedDot.available.first)
    }

    /// Rounding to 8 bits by hand: one block whose largest magnitude is 2.54, so d = 0.02 and each
    /// value's q is x / 0.02 rounded to nearest, ties to even.
    func testQ8VectorsRoundAsLlamaCppDoes() throws {
        var x = [Float](repeating: 0, count: 64)
        x[0] = 2.54; x[1] = -1.27; x[2] = 0.01; x[3] = 0.03; x[4] = -0.05; x[5] = 0.0099
        x[32] = -3  // the second block: d = 3/127, q = -127
        let q = try XCTUnwrap(Q8Vectors(x: x, ldx: 64, count: 1, length: 64))
        XCTAssertEqual(q.scales[0], 2.54 / 127)
        let inverse = 1 / (Float(2.54) / 127)
        let expected = x[0..<6].map { Int8(($0 * inverse).rounded(.toNearestOrEven)) }
        XCTAssertEqual(Array(q.values[0..<6]), expected)
        XCTAssertEqual(Array(q.values[0..<6]), [127, -64, 0, 2, -2, 0], "0.5 → 0 and 1.5 → 2 (ties to even), 2.5 → 2, 0.495 → 0")
        XCTAssertEqual(q.scaledSums[0], q.scales[0] * Float(127 - 64 + 2 - 2))
        XCTAssertEqual(q.values[32], -127)
        XCTAssertEqual(q.scales[1], 3 / 127)
        XCTAssertEqual(q.scaledSums[1], -3, accuracy: 1e-6)
        x[40] = .nan
        XCTAssertNil(Q8Vectors(x: x, ldx: 64, count: 1, length: 64), "a non-finite value leaves the vectors to the fp32 kernels")
        XCTAssertNil(Q8Vectors(x: x, ldx: 64, count: 1, length: 48), "lengths are whole blocks")
    }

    /// The 8-bit kernels against the dequantized weights times the dequantized 8-bit vectors in Double:
    /// the kernels' block sums are exact integers, so only the fp32 scaling and summation differ.
    func testEveryQ8KernelMatchesTheDequantizedProduct() throws {
        let kernels = QuantizedDot.q8Available
        try XCTSkipIf(kernels.isEmpty, "this CPU has neither AVX2+FMA nor AVX-512 VNNI")
        var random = SeededRandom(seed: 12)
        XCTAssertEqual(Set(QuantizedDot.q8Types), [.Q4_0, .Q4_1, .Q5_0, .Q5_1, .Q8_0, .Q4_K, .Q6_K])
        for type in QuantizedDot.q8Types {
            for (rows, blocks) in type.blockSize == 256 ? [(1, 1), (7, 2), (33, 3)] : [(1, 1), (7, 3), (33, 18)] {
                let n = blocks * type.blockSize, w = randomRows(type, rows: rows, blocks: blocks, random: &random)
                var dense = [Float](repeating: 0, count: rows * n)
                w.withUnsafeBytes { GGMLQuant.dequantizeBlocks(type, $0.baseAddress!, &dense, blocks: rows * blocks) }
                let ldx = n + 5
                // Large and small blocks side by side, and one block of zeros (scale 0).
                let x = (0..<(4 * ldx)).map { i in i % ldx < 32 && i >= ldx ? 0 : Float(Int(random.next() % 2001) - 1000) / (i % 3 == 0 ? 10 : 1000) }
                for nx in 1...4 {
                    let q = try XCTUnwrap(Q8Vectors(x: x, ldx: ldx, count: nx, length: n))
                    for kernel in kernels {
                        for beta: Float in [0, 0.5] {
                            let ldy = rows + 2
                            var y = (0..<(nx * ldy)).map { Float($0 % 5) }
                            let before = y
                            w.withUnsafeBytes { bytes in
                                QuantizedDot.run(kernel, type: type, rows: bytes.baseAddress!, rowBytes: blocks * type.bytesPerBlock,
                                                 count: rows, blocks: blocks, x: q, beta: beta, y: &y, ldy: ldy)
                            }
                            for r in 0..<nx {
                                for i in 0..<rows {
                                    var exact = 0.0, magnitude = 0.0
                                    for k in 0..<n {
                                        let xk = Double(q.scales[r * n / 32 + k / 32]) * Double(q.values[r * n + k])
                                        let p = Double(dense[i * n + k]) * xk
                                        exact += p; magnitude += abs(p)
                                    }
                                    let expected = Double(beta) * Double(before[r * ldy + i]) + exact
                                    XCTAssertEqual(Double(y[r * ldy + i]), expected, accuracy: 2e-6 * (magnitude + abs(expected)) + 1e-30,
                                                   "\(kernel) \(type) \(rows)×\(blocks) blocks, vector \(r) of \(nx), row \(i), beta \(beta)")
                                }
                                XCTAssertEqual(Array(y[(r * ldy + rows)..<(r * ldy + ldy)]), Array(before[(r * ldy + rows)..<(r * ldy + ldy)]),
                                               "the columns past the rows are left alone")
                            }
                        }
                    }
                }
            }
        }
    }

    func testQ8KernelChoiceFollowsTheForcedMatrixKernel() {
        XCTAssertNil(QuantizedDot.q8Kernel(for: .Q2_K))
        Gemm.withBackend(.builtin) { XCTAssertNil(QuantizedDot.q8Kernel(for: .Q4_1)) }
        if CPUFeatures.current.contains(.avx2FMA) { Gemm.withBackend(.avx2) { XCTAssertEqual(QuantizedDot.q8Kernel(for: .Q8_0), .avx2) } }
        XCTAssertEqual(QuantizedDot.q8Kernel(for: .Q4_0), QuantizedDot.q8Available.first)
    }
}
