import Foundation
import XCTest
@testable import LoRAKit

/// GGML quantizers. The 32-value types against gguf-py's quantizers (fixture from
/// scripts/make_quantize_fixtures.py); the K quants, which gguf-py cannot write, by inputs whose exact
/// result follows from the format (values on a grid the format represents come back unchanged, zeros
/// give zero bytes) and by error bounds.
final class GGMLQuantizeTests: XCTestCase {
    private let fixtures = fixturesPath + "/gguf"

    func testThirtyTwoValueTypesMatchGGUFPyByteForByte() throws {
        let expected = try SafetensorsFile(path: fixtures + "/quantize_expected.safetensors")
        let input = try expected.floats("input")
        for type in [GGMLType.Q4_0, .Q4_1, .Q5_0, .Q5_1, .Q8_0] {
            let reference = try expected.ints(type.name).map { UInt8($0) }
            let bytes = try GGMLQuant.quantize(type, input)
            XCTAssertEqual(bytes.count, reference.count, type.name)
            if let first = bytes.indices.first(where: { $0 >= reference.count || bytes[$0] != reference[$0] }) {
                XCTFail("\(type.name): byte \(first) (block \(first / type.bytesPerBlock)) is \(bytes[first]), gguf-py wrote \(reference[first])")
            }
        }
    }

    func testKQuantsReproduceValuesOnTheirGrid() throws {
        // Q4_K/Q5_K: every 32-value sub-block spans levels 0...top with step 63·2^-10 and minimum
        // −63·2^-11, so d = 2^-10 and dmin = 2^-11 are exact halves and the 6-bit scales and mins are 63.
        for (type, top) in [(GGMLType.Q4_K, 15), (.Q5_K, 31)] {
            let step: Float = 63 * 0x1p-10, minimum: Float = -63 * 0x1p-11
            let values = (0..<512).map { i -> Float in
                let level = i % 32 == 0 ? 0 : i % 32 == 1 ? top : (5 * i) % (top + 1)
                return step * Float(level) + minimum
            }
            XCTAssertEqual(try roundTrip(type, values), values, type.name)
        }
        // Q6_K: levels −32...31 with step 2^-6 and −32 in every 16-value group: d = −2^-13, scales −128.
        let values = (0..<512).map { i -> Float in
            let level = i % 16 == 0 ? -32 : (7 * i) % 64 - 32
            return Float(level) * 0x1p-6
        }
        XCTAssertEqual(try roundTrip(.Q6_K, values), values, "Q6_K")
    }

    func testKQuantsOfZerosAreZeroBytes() throws {
        for type in [GGMLType.Q4_K, .Q5_K, .Q6_K] {
            XCTAssertEqual(try GGMLQuant.quantize(type, [Float](repeating: 0, count: 256)), [UInt8](repeating: 0, count: type.bytesPerBlock), type.name)
        }
    }

    func testKQuantErrorIsWithinTheFormatsResolution() throws {
        var random = SeededRandom(seed: 7)
        let values = (0..<4096).map { i in random.normal() * (i < 2048 ? 0.02 : 1.5) }
        // Relative RMS error of Gaussian weights at two scales. Each extra bit halves it, and the fitted
        // K-quant scales beat Q4_0/Q4_1's min/max ones. Measured: Q4_K 0.070, Q5_K 0.036, Q6_K 0.018,
        // Q4_0 0.088, Q4_1 0.076; the bounds sit about 10% above.
        for (type, bound) in [(GGMLType.Q4_K, Float(0.077)), (.Q5_K, 0.04), (.Q6_K, 0.02), (.Q4_0, 0.097), (.Q4_1, 0.084)] {
            let back = try roundTrip(type, values)
            for half in [0..<2048, 2048..<4096] {
                var error: Float = 0, energy: Float = 0
                for i in half {
                    error += (back[i] - values[i]) * (back[i] - values[i])
                    energy += values[i] * values[i]
                }
                XCTAssertLessThan((error / energy).squareRoot(), bound, "\(type.name) \(half)")
            }
        }
    }

    func testFallbackForRowsThatDoNotSplitIntoBlocks() {
        XCTAssertEqual(GGMLType.Q4_K.fallback(forRowLength: 576), .Q5_0)
        XCTAssertEqual(GGMLType.Q5_K.fallback(forRowLength: 576), .Q5_1)
        XCTAssertEqual(GGMLType.Q6_K.fallback(forRowLength: 576), .Q8_0)
        XCTAssertEqual(GGMLType.Q4_K.fallback(forRowLength: 48), .F16)
        XCTAssertEqual(GGMLType.Q4_0.fallback(forRowLength: 48), .F16)
        XCTAssertEqual(GGMLType.Q4_K.fallback(forRowLength: 1536), .Q4_K)
        XCTAssertEqual(GGMLType.F32.fallback(forRowLength: 7), .F32)
    }

    func testRefusals() {
        XCTAssertThrowsError(try GGMLQuant.quantize(.Q3_K, [Float](repeating: 0, count: 256))) { error in
            XCTAssertEqual((error as? LoRAError)?.message,
                           "LoRAKit cannot write GGML type Q3_K; it writes F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16.")
        }
        XCTAssertThrowsError(try GGMLQuant.quantize(.Q4_K, [Float](repeating: 0, count: 288))) { error in
            XCTAssertEqual((error as? LoRAError)?.message,
                           "Cannot quantize 288 values to Q4_K: the count is not a multiple of its block size 256.")
        }
    }

    private func roundTrip(_ type: GGMLType, _ values: [Float]) throws -> [Float] {
        let bytes = try GGMLQuant.quantize(type, values)
        var back = [Float](repeating: .nan, count: values.count)
        try bytes.withUnsafeBytes { raw in
            try back.withUnsafeMutableBufferPointer { try GGMLQuant.dequantize(type, from: raw.baseAddress!, into: $0.baseAddress!, count: values.count) }
        }
        return back
    }
}
