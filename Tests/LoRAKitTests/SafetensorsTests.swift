import Foundation
import XCTest
@testable import LoRAKit
@testable import LoRAFormats

final class SafetensorsTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("safetensors-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    // MARK: Helpers

    private func path(_ name: String) -> String {
        directory.appendingPathComponent(name).path
    }

    /// An 8-byte little-endian length, the header text, then `data`. `declaredLength` overrides the length field.
    private func fileBytes(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
        let headerBytes = Array(header.utf8)
        let length = declaredLength ?? UInt64(headerBytes.count)
        return withUnsafeBytes(of: length.littleEndian) { Array($0) } + headerBytes + data
    }

    private func writeBytes(_ bytes: [UInt8], to name: String) throws -> String {
        let filePath = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: filePath))
        return filePath
    }

    private func readBytes(_ filePath: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: filePath)))
    }

    /// Asserts that opening `bytes` as a file throws a LoRAError mentioning the file name and every `keywords` entry.
    private func assertRejects(_ bytes: [UInt8], mentioning keywords: [String],
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let fileName = "bad-\(UUID().uuidString.prefix(8)).safetensors"
        let filePath = try writeBytes(bytes, to: fileName)
        do {
            _ = try SafetensorsFile(path: filePath)
            XCTFail("expected \(fileName) to be rejected", file: file, line: line)
        } catch let error as LoRAError {
            XCTAssertTrue(error.message.contains(fileName), "message does not name the file: \(error.message)", file: file, line: line)
            for keyword in keywords {
                XCTAssertTrue(error.message.contains(keyword), "message lacks \"\(keyword)\": \(error.message)", file: file, line: line)
            }
        } catch {
            XCTFail("expected a LoRAError, got \(error)", file: file, line: line)
        }
    }

    private func assertThrowsLoRAError(_ expression: @autoclosure () throws -> some Any, mentioning keywords: [String],
                                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), file: file, line: line) { error in
            guard let error = error as? LoRAError else {
                return XCTFail("expected a LoRAError, got \(error)", file: file, line: line)
            }
            for keyword in keywords {
                XCTAssertTrue(error.message.contains(keyword), "message lacks \"\(keyword)\": \(error.message)", file: file, line: line)
            }
        }
    }

    private func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

    // MARK: Half-float conversions

    func testFloat16KnownValues() {
        let cases: [(Float, UInt16)] = [
            (1.0, 0x3C00), (-2.0, 0xC000), (0.5, 0x3800), (0.0, 0x0000), (-0.0, 0x8000),
            (65504, 0x7BFF),                      // largest finite half
            (65519, 0x7BFF),                      // just below the midpoint to 65536
            (65520, 0x7C00),                      // midpoint, 0x7BFF is odd so ties-to-even gives infinity
            (100_000, 0x7C00), (-100_000, 0xFC00),
            (.infinity, 0x7C00), (-.infinity, 0xFC00),
            (1 + 0x1p-11, 0x3C00),                // tie between 0x3C00 and 0x3C01: even
            (1 + 3 * 0x1p-11, 0x3C02),            // tie between 0x3C01 and 0x3C02: even
            (1 + 0x1p-11 + 0x1p-20, 0x3C01),      // just above the tie
            (0x1p-14, 0x0400),                    // smallest normal
            (1023.5 * 0x1p-24, 0x0400),           // tie between largest subnormal 0x03FF and 0x0400: even
            (0x1p-24, 0x0001),                    // smallest subnormal
            (0x1p-25, 0x0000),                    // tie between 0 and 0x0001: even
            (1.5 * 0x1p-25, 0x0001),              // above the tie
            (1.5 * 0x1p-24, 0x0002),              // tie between 0x0001 and 0x0002: even
            (-2.5 * 0x1p-24, 0x8002),             // tie between 0x0002 and 0x0003: even
            (1e-10, 0x0000), (Float.leastNonzeroMagnitude, 0x0000),
        ]
        for (value, expected) in cases {
            XCTAssertEqual(floatToFloat16Bits(value), expected, "\(value)")
        }
        XCTAssertEqual(floatToFloat16Bits(.nan), 0x7E00)
        // A NaN whose payload lives only in the low bits must not become infinity.
        let lowPayloadNaN = floatToFloat16Bits(Float(bitPattern: 0x7F80_0001))
        XCTAssertEqual(lowPayloadNaN & 0x7C00, 0x7C00)
        XCTAssertNotEqual(lowPayloadNaN & 0x03FF, 0)

        XCTAssertEqual(float16BitsToFloat(0x3C00), 1.0)
        XCTAssertEqual(float16BitsToFloat(0x7BFF), 65504)
        XCTAssertEqual(float16BitsToFloat(0x3555), 0.333251953125)
        XCTAssertEqual(float16BitsToFloat(0x0001), 0x1p-24)
        XCTAssertEqual(float16BitsToFloat(0x03FF), 1023 * 0x1p-24)
        XCTAssertEqual(float16BitsToFloat(0x8000).bitPattern, (-0.0 as Float).bitPattern)
        XCTAssertEqual(float16BitsToFloat(0xFC00), -.infinity)
        XCTAssertTrue(float16BitsToFloat(0x7E00).isNaN)
        XCTAssertTrue(float16BitsToFloat(0x7C01).isNaN)
    }

    func testFloat16EveryHalfValueRoundTrips() {
        for h in 0...UInt16.max {
            let f = float16BitsToFloat(h)
            if f.isNaN {
                XCTAssertTrue(float16BitsToFloat(floatToFloat16Bits(f)).isNaN)
            } else if floatToFloat16Bits(f) != h {
                XCTFail("half 0x\(String(h, radix: 16)) does not round-trip")
            }
        }
    }

    #if !(os(macOS) && arch(x86_64))
    /// Compares with the platform Float16 type: every half value, and every float at and around each rounding midpoint.
    func testFloat16MatchesPlatformFloat16() {
        for h in 0...UInt16.max {
            let ours = float16BitsToFloat(h)
            let platform = Float(Float16(bitPattern: h))
            XCTAssertTrue(ours.bitPattern == platform.bitPattern || (ours.isNaN && platform.isNaN), "half 0x\(String(h, radix: 16))")
        }
        var mismatches = 0
        for h in UInt16(0)..<0x7C00 {
            // The midpoint between h and h + 1, and its Float neighbours, for both signs.
            let low = Double(float16BitsToFloat(h)), high = Double(float16BitsToFloat(h + 1))
            let midpoint = Float((low + high) / 2)
            for value in [midpoint.nextDown, midpoint, midpoint.nextUp, Float(low)] {
                for signed in [value, -value] where floatToFloat16Bits(signed) != Float16(signed).bitPattern {
                    mismatches += 1
                }
            }
        }
        for pattern in stride(from: UInt32(0), through: 0x7F80_0000, by: 65_521) {
            let value = Float(bitPattern: pattern)
            if floatToFloat16Bits(value) != Float16(value).bitPattern { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0)
    }
    #endif

    func testBFloat16KnownValues() {
        let cases: [(Float, UInt16)] = [
            (1.0, 0x3F80), (-2.0, 0xC000), (0.0, 0x0000), (-0.0, 0x8000),
            (1 + 0x1p-8, 0x3F80),                 // tie between 0x3F80 and 0x3F81: even
            (1 + 3 * 0x1p-8, 0x3F82),             // tie between 0x3F81 and 0x3F82: even
            (1 + 0x1p-8 + 0x1p-20, 0x3F81),       // just above the tie
            (Float(bitPattern: 0x4049_0FDB), 0x4049),  // pi
            (.greatestFiniteMagnitude, 0x7F80),   // rounds up past the largest bfloat16 to infinity
            (.infinity, 0x7F80), (-.infinity, 0xFF80),
            (Float(bitPattern: 0x0000_8000), 0x0000),  // subnormal tie: even
            (Float(bitPattern: 0x0001_8000), 0x0002),  // subnormal tie: even
        ]
        for (value, expected) in cases {
            XCTAssertEqual(floatToBFloat16Bits(value), expected, "\(value)")
        }
        XCTAssertTrue(bfloat16BitsToFloat(floatToBFloat16Bits(.nan)).isNaN)
        XCTAssertTrue(bfloat16BitsToFloat(floatToBFloat16Bits(Float(bitPattern: 0x7F80_0001))).isNaN)
        XCTAssertTrue(bfloat16BitsToFloat(floatToBFloat16Bits(Float(bitPattern: 0xFFFF_FFFF))).isNaN)

        XCTAssertEqual(bfloat16BitsToFloat(0x3F80), 1.0)
        XCTAssertEqual(bfloat16BitsToFloat(0x4049), 3.140625)
        XCTAssertEqual(bfloat16BitsToFloat(0xFF80), -.infinity)
        XCTAssertTrue(bfloat16BitsToFloat(0x7FC0).isNaN)
    }

    // MARK: Round trips through the writer

    func testRoundTripF32() throws {
        let values: [Float] = [1, -2.5, 0.1, .greatestFiniteMagnitude, -0.0, 0x1p-140, .infinity]
        var writer = SafetensorsWriter()
        writer.add("a.weight", shape: [7], floats: values)
        writer.add("m", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6], as: .F32)
        let filePath = path("f32.safetensors")
        try writer.write(to: filePath)

        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.names, ["a.weight", "m"])
        XCTAssertEqual(file.tensors["a.weight"]?.dtype, .F32)
        XCTAssertEqual(file.tensors["a.weight"]?.shape, [7])
        XCTAssertEqual(file.tensors["a.weight"]?.dataOffsets, 0..<28)
        XCTAssertEqual(file.tensors["m"]?.shape, [2, 3])
        XCTAssertEqual(file.tensors["m"]?.dataOffsets, 28..<52)
        XCTAssertEqual(bits(try file.floats("a.weight")), bits(values))
        XCTAssertEqual(try file.floats("m"), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(Array(try file.rawBytes("m").prefix(8)), [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40])
        XCTAssertEqual(file.metadata, [:])
    }

    func testRoundTripF16() throws {
        let values: [Float] = [1, -2, 65504, 65520, 1 + 3 * 0x1p-11, 0x1p-24, 0.1]
        var writer = SafetensorsWriter()
        writer.add("h", shape: [7], floats: values, as: .F16)
        let filePath = path("f16.safetensors")
        try writer.write(to: filePath)

        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.tensors["h"]?.dtype, .F16)
        XCTAssertEqual(file.tensors["h"]?.dataOffsets, 0..<14)
        XCTAssertEqual(Array(try file.rawBytes("h")),
                       [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x00, 0x7C, 0x02, 0x3C, 0x01, 0x00, 0x66, 0x2E])
        XCTAssertEqual(try file.floats("h"), [1, -2, 65504, .infinity, 1 + 2 * 0x1p-10, 0x1p-24, 0.0999755859375])
    }

    func testRoundTripBF16() throws {
        let values: [Float] = [1, -2, 1 + 0x1p-8, 1 + 3 * 0x1p-8, Float(bitPattern: 0x4049_0FDB)]
        var writer = SafetensorsWriter()
        writer.add("b", shape: [5, 1], floats: values, as: .BF16)
        let filePath = path("bf16.safetensors")
        try writer.write(to: filePath)

        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.tensors["b"]?.dtype, .BF16)
        XCTAssertEqual(file.tensors["b"]?.shape, [5, 1])
        XCTAssertEqual(Array(try file.rawBytes("b")), [0x80, 0x3F, 0x00, 0xC0, 0x80, 0x3F, 0x82, 0x3F, 0x49, 0x40])
        XCTAssertEqual(try file.floats("b"), [1, -2, 1, 1 + 2 * 0x1p-7, 3.140625])
    }

    func testRoundTripF64AndFloatsIntoCallerMemory() throws {
        var writer = SafetensorsWriter()
        writer.add("d", shape: [3], floats: [0.1, -1e30, 2], as: .F64)
        let filePath = path("f64.safetensors")
        try writer.write(to: filePath)

        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.tensors["d"]?.dataOffsets, 0..<24)
        var destination = [Float](repeating: 7, count: 3)
        try destination.withUnsafeMutableBufferPointer { try file.floats("d", into: $0.baseAddress!, count: 3) }
        XCTAssertEqual(destination, [0.1, -1e30, 2])
        var tooSmall = [Float](repeating: 0, count: 2)
        assertThrowsLoRAError(try tooSmall.withUnsafeMutableBufferPointer { try file.floats("d", into: $0.baseAddress!, count: 2) },
                              mentioning: ["d", "f64.safetensors", "3", "2"])
    }

    func testMetadataRoundTrip() throws {
        var writer = SafetensorsWriter()
        writer.metadata = ["format": "pt", "rank": "8", "note": "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓"]
        writer.add("x", shape: [1], floats: [3])
        let filePath = path("meta.safetensors")
        try writer.write(to: filePath)

        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.metadata, writer.metadata)
        XCTAssertEqual(try file.floats("x"), [3])
    }

    func testIntsRoundTrip() throws {
        var writer = SafetensorsWriter()
        writer.addInts("i64", shape: [3], values: [Int(Int64.min), -1, Int(Int64.max)])
        writer.addInts("i32", shape: [2], values: [-2_147_483_648, 2_147_483_647], as: .I32)
        writer.addInts("i16", shape: [2], values: [-32768, 32767], as: .I16)
        writer.addInts("i8", shape: [2], values: [-128, 127], as: .I8)
        writer.addInts("u8", shape: [2], values: [0, 255], as: .U8)
        writer.addInts("bool", shape: [3], values: [1, 0, 1], as: .BOOL)
        writer.addInts("scalar", shape: [], values: [42])
        let filePath = path("ints.safetensors")
        try writer.write(to: filePath)

        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(try file.ints("i64"), [Int(Int64.min), -1, Int(Int64.max)])
        XCTAssertEqual(try file.ints("i32"), [-2_147_483_648, 2_147_483_647])
        XCTAssertEqual(try file.ints("i16"), [-32768, 32767])
        XCTAssertEqual(try file.ints("i8"), [-128, 127])
        XCTAssertEqual(try file.ints("u8"), [0, 255])
        XCTAssertEqual(try file.ints("bool"), [1, 0, 1])
        XCTAssertEqual(try file.ints("scalar"), [42])
        XCTAssertEqual(file.tensors["scalar"]?.shape, [])
        XCTAssertEqual(file.tensors["bool"]?.dtype, .BOOL)
        XCTAssertEqual(file.tensors["i32"]?.dtype, .I32)
        XCTAssertEqual(Array(try file.rawBytes("i16")), [0x00, 0x80, 0xFF, 0x7F])
        assertThrowsLoRAError(try file.floats("i32"), mentioning: ["i32", "ints.safetensors", "I32"])
    }

    func testWriterExactBytes() throws {
        var writer = SafetensorsWriter()
        writer.add("a", shape: [1], floats: [1])
        let filePath = path("exact.safetensors")
        try writer.write(to: filePath)

        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#  // 54 bytes, padded to 56
        XCTAssertEqual(try readBytes(filePath), [56, 0, 0, 0, 0, 0, 0, 0] + Array(header.utf8) + [0x20, 0x20] + [0, 0, 0x80, 0x3F])
    }

    func testWriterHeaderIsPaddedAndTensorsSorted() throws {
        var writer = SafetensorsWriter()
        writer.metadata = ["k": "v"]
        writer.add("zeta", shape: [2], floats: [1, 2], as: .F16)
        writer.add("alpha", shape: [1], floats: [5])
        writer.add("empty", shape: [0, 4], floats: [])
        let filePath = path("sorted.safetensors")
        try writer.write(to: filePath)

        let bytes = try readBytes(filePath)
        let headerLength = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        XCTAssertEqual(headerLength % 8, 0)
        XCTAssertEqual(bytes.count, 8 + headerLength + 8)
        let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix(#"{"__metadata__":{"k":"v"},"alpha":"#), header)
        XCTAssertTrue(header.hasSuffix(" ") || header.hasSuffix("}"))

        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.names, ["alpha", "empty", "zeta"])
        XCTAssertEqual(file.tensors["alpha"]?.dataOffsets, 0..<4)
        XCTAssertEqual(file.tensors["empty"]?.dataOffsets, 4..<4)
        XCTAssertEqual(file.tensors["zeta"]?.dataOffsets, 4..<8)
        XCTAssertEqual(try file.floats("empty"), [])
        XCTAssertEqual(try file.floats("zeta"), [1, 2])
        XCTAssertEqual(file.metadata, ["k": "v"])
    }

    func testWriterReplacesExistingFileAndLeavesNoTemporaryFile() throws {
        let filePath = path("replace.safetensors")
        try Data("old contents".utf8).write(to: URL(fileURLWithPath: filePath))
        var writer = SafetensorsWriter()
        writer.add("x", shape: [2], floats: [1, 2])
        try writer.write(to: filePath)

        XCTAssertEqual(try SafetensorsFile(path: filePath).floats("x"), [1, 2])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["replace.safetensors"])
    }

    func testWriterReportsMistakesAndWritesNothing() throws {
        let cases: [(String, (inout SafetensorsWriter) -> Void)] = [
            ("3 values", { $0.add("w", shape: [2, 2], floats: [1, 2, 3]) }),
            ("added twice", { $0.add("w", shape: [1], floats: [1]); $0.add("w", shape: [1], floats: [2]) }),
            ("integer dtype I32", { $0.add("w", shape: [1], floats: [1], as: .I32) }),
            ("does not fit in I8", { $0.addInts("w", shape: [1], values: [128], as: .I8) }),
            ("floating-point dtype F16", { $0.addInts("w", shape: [1], values: [1], as: .F16) }),
            ("reserved", { $0.add("__metadata__", shape: [1], floats: [1]) }),
        ]
        for (keyword, addTensors) in cases {
            var writer = SafetensorsWriter()
            addTensors(&writer)
            let filePath = path("mistake.safetensors")
            assertThrowsLoRAError(try writer.write(to: filePath), mentioning: ["mistake.safetensors", keyword])
            XCTAssertFalse(FileManager.default.fileExists(atPath: filePath), keyword)
        }
    }

    // MARK: Reading a hand-built file

    /// Checks the reader independently of the writer: unpadded header (so data is unaligned), keys and
    /// offsets out of order, a gap between tensors, a scalar, an empty tensor, and several dtypes.
    func testReadsHandBuiltFile() throws {
        let header = """
        {"w":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]},\
        "__metadata__":{"format":"pt"},\
        "b":{"shape":[3],"data_offsets":[0,6],"dtype":"F16"},\
        "s":{"dtype":"F64","shape":[],"data_offsets":[8,16]},\
        "i":{"dtype":"I8","shape":[2],"data_offsets":[32,34]},\
        "e":{"dtype":"F32","shape":[0,3],"data_offsets":[34,34]}}
        """
        var data: [UInt8] = []
        data += [0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38]               // b: F16 1, -2, 0.5
        data += [0xEE, 0xEE]                                        // gap
        data += [0, 0, 0, 0, 0, 0, 0xF8, 0x3F]                      // s: F64 1.5
        data += [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40]  // w: F32 1, 2, 3, 4
        data += [0xFF, 0x05]                                        // i: I8 -1, 5
        XCTAssertNotEqual(header.utf8.count % 8, 0)
        let filePath = try writeBytes(fileBytes(header: header, data: data), to: "hand.safetensors")

        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.path, filePath)
        XCTAssertEqual(file.names, ["b", "e", "i", "s", "w"])
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(try file.floats("b"), [1, -2, 0.5])
        XCTAssertEqual(try file.floats("s"), [1.5])
        XCTAssertEqual(try file.floats("w"), [1, 2, 3, 4])
        XCTAssertEqual(try file.floats("e"), [])
        XCTAssertEqual(try file.ints("i"), [-1, 5])
        XCTAssertEqual(file.tensors["w"]?.shape, [2, 2])
        XCTAssertEqual(file.tensors["w"]?.dataOffsets, 16..<32)
        XCTAssertEqual(file.tensors["w"]?.elementCount, 4)
        XCTAssertEqual(file.tensors["s"]?.shape, [])
        XCTAssertEqual(file.tensors["s"]?.elementCount, 1)
        XCTAssertEqual(Array(try file.rawBytes("i")), [0xFF, 0x05])

        assertThrowsLoRAError(try file.floats("missing"), mentioning: ["no tensor named missing", "hand.safetensors"])
        assertThrowsLoRAError(try file.ints("missing"), mentioning: ["no tensor named missing", "hand.safetensors"])
        assertThrowsLoRAError(try file.rawBytes("missing"), mentioning: ["no tensor named missing", "hand.safetensors"])
        assertThrowsLoRAError(try file.floats("i"), mentioning: ["i", "hand.safetensors", "integer dtype I8"])
        assertThrowsLoRAError(try file.ints("w"), mentioning: ["w", "hand.safetensors", "floating-point dtype F32"])
    }

    // MARK: Malformed files

    func testRejectsMissingFile() {
        assertThrowsLoRAError(try SafetensorsFile(path: path("nowhere.safetensors")), mentioning: ["nowhere.safetensors"])
    }

    func testRejectsFileShorterThanEightBytes() throws {
        try assertRejects([], mentioning: ["too short"])
        try assertRejects([1, 0, 0, 0, 0, 0, 0], mentioning: ["too short"])
    }

    func testRejectsHeaderLengthPastEndOfFile() throws {
        try assertRejects(fileBytes(header: "{}", declaredLength: 3), mentioning: ["header of 3 bytes"])
    }

    func testRejectsAbsurdHeaderLength() throws {
        try assertRejects(fileBytes(header: "{}", declaredLength: 100_000_001), mentioning: ["100 MB"])
        try assertRejects(fileBytes(header: "{}", declaredLength: UInt64.max), mentioning: ["100 MB"])
    }

    func testRejectsInvalidJSON() throws {
        try assertRejects(fileBytes(header: #"{"a": {"dtype": "F32",}"#), mentioning: ["not valid JSON"])
        var invalidUTF8 = fileBytes(header: #"{"ab":{}}"#)
        invalidUTF8[11] = 0xFF
        try assertRejects(invalidUTF8, mentioning: ["UTF-8"])
    }

    func testRejectsHeaderThatIsNotAnObject() throws {
        try assertRejects(fileBytes(header: "[1, 2]"), mentioning: ["not a JSON object"])
        try assertRejects(fileBytes(header: "42"), mentioning: ["not a JSON object"])
    }

    func testRejectsEntryMissingDtype() throws {
        try assertRejects(fileBytes(header: #"{"t":{"shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]),
                          mentioning: ["Tensor t", "no dtype"])
    }

    func testRejectsEntryMissingShape() throws {
        try assertRejects(fileBytes(header: #"{"t":{"dtype":"F32","data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]),
                          mentioning: ["Tensor t", "no shape"])
    }

    func testRejectsEntryMissingDataOffsets() throws {
        try assertRejects(fileBytes(header: #"{"t":{"dtype":"F32","shape":[1]}}"#, data: [0, 0, 0, 0]),
                          mentioning: ["Tensor t", "no data_offsets"])
    }

    func testRejectsEntriesOfWrongTypes() throws {
        let data: [UInt8] = [0, 0, 0, 0]
        let cases: [(String, String)] = [
            (#"{"t":[1,2]}"#, "not described by a JSON object"),
            (#"{"t":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}"#, "dtype that is not a string"),
            (#"{"t":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}"#, "shape that is not a JSON array"),
            (#"{"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, "shape entry that is not an integer"),
            (#"{"t":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#, "shape entry that is not an integer"),
            (#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, "data_offsets that are not two"),
            (#"{"t":{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}}"#, "data_offsets that are not two"),
            (#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, "data_offsets that are not two"),
            (#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}}"#, "data_offsets that are not two"),
        ]
        for (header, keyword) in cases {
            try assertRejects(fileBytes(header: header, data: data), mentioning: ["Tensor t", keyword])
        }
        try assertRejects(fileBytes(header: #"{"__metadata__":{"k":1}}"#), mentioning: ["Metadata key k", "string"])
        try assertRejects(fileBytes(header: #"{"__metadata__":[]}"#), mentioning: ["__metadata__", "not a JSON object"])
    }

    func testRejectsUnknownDtype() throws {
        try assertRejects(fileBytes(header: #"{"t":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#, data: [0]),
                          mentioning: ["Tensor t", "unsupported dtype F8_E4M3"])
    }

    func testRejectsNegativeDimension() throws {
        try assertRejects(fileBytes(header: #"{"t":{"dtype":"F32","shape":[-1,-4],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]),
                          mentioning: ["Tensor t", "negative dimension -1"])
    }

    func testRejectsElementCountOverflow() throws {
        try assertRejects(fileBytes(header: #"{"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#),
                          mentioning: ["Tensor t", "element count overflows"])
        try assertRejects(fileBytes(header: #"{"t":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}}"#),
                          mentioning: ["Tensor t", "byte size overflows"])
    }

    func testRejectsOffsetsBeginAfterEnd() throws {
        try assertRejects(fileBytes(header: #"{"t":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, data: [UInt8](repeating: 0, count: 8)),
                          mentioning: ["Tensor t", "beginning at 8", "end 4"])
    }

    func testRejectsOffsetsPastDataSection() throws {
        try assertRejects(fileBytes(header: #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: [0, 0, 0, 0]),
                          mentioning: ["Tensor t", "ending at 8", "4-byte data section"])
    }

    func testRejectsByteLengthNotMatchingShape() throws {
        try assertRejects(fileBytes(header: #"{"t":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)),
                          mentioning: ["Tensor t", "occupies 8 bytes", "needs 6"])
    }

    func testRejectsOverlappingTensors() throws {
        let header = """
        {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},\
        "c":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},\
        "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}
        """
        try assertRejects(fileBytes(header: header, data: [UInt8](repeating: 0, count: 16)),
                          mentioning: ["Tensors a and b", "overlap"])
    }
}
