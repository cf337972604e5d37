// Reading the GGUF format (llama.cpp's model files), versions 2 and 3, little-endian:
//
//   "GGUF"                  4-byte magic
//   u32 version             2 or 3 (version 1 used 32-bit counts and is not read)
//   u64 tensor_count, u64 kv_count
//   kv_count × (string key, u32 value type, value)
//   tensor_count × (string name, u32 n_dims ≤ 4, n_dims × u64 dims, u32 GGML type, u64 offset)
//   padding to `general.alignment` (a u32 power of two, default 32)
//   the data section; each tensor's offset is relative to its start and aligned
//
// A string is a u64 byte length and UTF-8 bytes; an array is a u32 element type, a u64 count and the
// elements (an element may itself be an array). Dims are in ggml order: dims[0] varies fastest, so
// it is the row length and a Hugging Face [out, in] weight appears as [in, out].

import Foundation

/// The type tag of a GGUF metadata value.
public enum GGUFValueType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// The name gguf-py uses ("UINT8", ..., "ARRAY").
    public var name: String {
        switch self {
        case .uint8: return "UINT8"
        case .int8: return "INT8"
        case .uint16: return "UINT16"
        case .int16: return "INT16"
        case .uint32: return "UINT32"
        case .int32: return "INT32"
        case .float32: return "FLOAT32"
        case .bool: return "BOOL"
        case .string: return "STRING"
        case .array: return "ARRAY"
        case .uint64: return "UINT64"
        case .int64: return "INT64"
        case .float64: return "FLOAT64"
        }
    }

    public var description: String { name }

    /// Bytes of one value of a fixed-size type; nil for strings and arrays.
    var fixedSize: Int? {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string, .array: return nil
        }
    }

    /// The fewest bytes one value of this type can take in a file (a string's length field,
    /// an array's type and count fields).
    var minimumSize: Int { fixedSize ?? (self == .string ? 8 : 12) }

    var isInteger: Bool {
        switch self {
        case .uint8, .int8, .uint16, .int16, .uint32, .int32, .uint64, .int64: return true
        default: return false
        }
    }
}

/// One GGUF metadata value.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    case array(GGUFArray)

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    /// The value of any integer type, if it fits in Int.
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// The value of a float or integer type as Double.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        case .uint64(let v): return Double(v)
        default: return intValue.map(Double.init)
        }
    }

    public var boolValue: Bool? { if case .bool(let v) = self { return v } else { return nil } }
    public var stringValue: String? { if case .string(let v) = self { return v } else { return nil } }
    public var arrayValue: GGUFArray? { if case .array(let v) = self { return v } else { return nil } }
}

/// A GGUF metadata array: elements of one type, kept as a typed Swift array.
public enum GGUFArray: Sendable, Equatable {
    case uint8([UInt8]), int8([Int8]), uint16([UInt16]), int16([Int16]), uint32([UInt32]), int32([Int32])
    case uint64([UInt64]), int64([Int64]), float32([Float]), float64([Double]), bool([Bool]), string([String])
    /// An array of arrays; each inner array has its own element type.
    case array([GGUFArray])

    public var elementType: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    public var count: Int {
        switch self {
        case .uint8(let a): return a.count
        case .int8(let a): return a.count
        case .uint16(let a): return a.count
        case .int16(let a): return a.count
        case .uint32(let a): return a.count
        case .int32(let a): return a.count
        case .uint64(let a): return a.count
        case .int64(let a): return a.count
        case .float32(let a): return a.count
        case .float64(let a): return a.count
        case .bool(let a): return a.count
        case .string(let a): return a.count
        case .array(let a): return a.count
        }
    }

    /// The elements one by one.
    public var values: [GGUFValue] {
        switch self {
        case .uint8(let a): return a.map { .uint8($0) }
        case .int8(let a): return a.map { .int8($0) }
        case .uint16(let a): return a.map { .uint16($0) }
        case .int16(let a): return a.map { .int16($0) }
        case .uint32(let a): return a.map { .uint32($0) }
        case .int32(let a): return a.map { .int32($0) }
        case .uint64(let a): return a.map { .uint64($0) }
        case .int64(let a): return a.map { .int64($0) }
        case .float32(let a): return a.map { .float32($0) }
        case .float64(let a): return a.map { .float64($0) }
        case .bool(let a): return a.map { .bool($0) }
        case .string(let a): return a.map { .string($0) }
        case .array(let a): return a.map { .array($0) }
        }
    }

    /// The elements as Int when the element type is an integer type and every element fits.
    public var ints: [Int]? {
        switch self {
        case .uint8(let a): return a.map(Int.init)
        case .int8(let a): return a.map(Int.init)
        case .uint16(let a): return a.map(Int.init)
        case .int16(let a): return a.map(Int.init)
        case .uint32(let a): return a.map(Int.init)
        case .int32(let a): return a.map(Int.init)
        case .int64(let a): return a.map(Int.init)
        case .uint64(let a):
            let converted = a.compactMap { Int(exactly: $0) }
            return converted.count == a.count ? converted : nil
        default: return nil
        }
    }

    /// The elements as Float when the element type is float32 or float64 (rounded).
    public var floats: [Float]? {
        switch self {
        case .float32(let a): return a
        case .float64(let a): return a.map(Float.init)
        default: return nil
        }
    }

    public var strings: [String]? { if case .string(let a) = self { return a } else { return nil } }
}

/// One tensor's entry in a GGUF file.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    public let type: GGMLType
    /// Dimensions in ggml order: `shape[0]` varies fastest (the row length). Reverse it for the
    /// row-major (PyTorch, safetensors) shape.
    public let shape: [Int]
    /// Byte offset of the data from the start of the data section, as stored in the file.
    public let offset: Int
    /// Bytes of data.
    public let byteCount: Int
    /// Position in the file's tensor list.
    public let index: Int

    /// Number of values (the product of `shape`; 1 for a tensor with no dimensions).
    public var elementCount: Int { shape.reduce(1, *) }
    /// Values per row: `shape[0]`.
    public var rowLength: Int { shape.first ?? 1 }
    /// Number of rows: the product of the other dimensions.
    public var rows: Int { elementCount / rowLength }
    /// Bytes per row.
    public var rowByteCount: Int { byteCount / rows }
    /// The shape in row-major order (slowest dimension first), as PyTorch and safetensors write it.
    public var rowMajorShape: [Int] { shape.reversed() }
}

/// The rows of one dequantizable tensor in a mapped GGUF file, left quantized: a `PackedMatrix`, so
/// `FrozenMatrix(packed:)` can hold it and expand a panel of rows at a time. It keeps the file mapped
/// while it lives.
public final class GGMLMatrix: PackedMatrix, @unchecked Sendable {
    // @unchecked Sendable: every property is immutable and the bytes are read-only, kept alive by `owner`.
    public let name: String
    public let type: GGMLType
    public let rows: Int
    /// Values per row (the tensor's `rowLength`, ggml's ne[0]).
    public let columns: Int
    public let rowByteCount: Int
    /// The quantized bytes of all rows.
    public let bytes: UnsafeRawBufferPointer
    private let owner: AnyObject

    init(info: GGUFTensorInfo, bytes: UnsafeRawBufferPointer, owner: AnyObject) {
        name = info.name
        type = info.type
        rows = info.rows
        columns = info.rowLength
        rowByteCount = info.rowByteCount
        self.bytes = bytes
        self.owner = owner
    }

    /// Bytes the quantized rows occupy (in the mapping).
    public var byteCount: Int { bytes.count }

    /// Writes rows `range` (range.count × columns floats) to `destination`, on the calling thread.
    public func unpack(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) are outside 0..<\(rows) of \(name)")
        guard !range.isEmpty, let base = bytes.baseAddress else { return }
        GGMLQuant.dequantizeBlocks(type, base + range.lowerBound * rowByteCount, destination,
                                   blocks: range.count * columns / type.blockSize)
    }

    public var hasDotProducts: Bool { QuantizedDot.kernel(for: type) != nil }

    public func dotProducts(first: Int, step: Int, count: Int, x: UnsafePointer<Float>, ldx: Int, nx: Int, beta: Float,
                            y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard count > 0, let base = bytes.baseAddress, let kernel = QuantizedDot.kernel(for: type) else { return }
        precondition(first >= 0 && step >= 1 && first + (count - 1) * step < rows, "rows from \(first) by \(step) leave the \(rows) of \(name)")
        QuantizedDot.run(kernel, type: type, rows: base + first * rowByteCount, rowBytes: step * rowByteCount,
                         count: count, blocks: columns / type.blockSize, x: x, ldx: ldx, nx: nx, beta: beta, y: y, ldy: ldy)
    }

    public var hasQ8DotProducts: Bool { QuantizedDot.q8Kernel(for: type) != nil }

    public func dotProducts(first: Int, step: Int, count: Int, x: Q8Vectors, beta: Float, y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard count > 0, let base = bytes.baseAddress, let kernel = QuantizedDot.q8Kernel(for: type) else { return }
        precondition(first >= 0 && step >= 1 && first + (count - 1) * step < rows, "rows from \(first) by \(step) leave the \(rows) of \(name)")
        QuantizedDot.run(kernel, type: type, rows: base + first * rowByteCount, rowBytes: step * rowByteCount,
                         count: count, blocks: columns / type.blockSize, x: x, beta: beta, y: y, ldy: ldy)
    }

    /// Every row, expanded on `Parallel.threadCount` threads (rows × columns floats).
    public func unpackAll(into destination: UnsafeMutablePointer<Float>) {
        let destinationBox = UncheckedBox(destination)
        Parallel.forRanges(rows, minChunk: max(1, 65_536 / columns)) { range in
            unpack(rows: range, into: destinationBox.value + range.lowerBound * columns)
        }
    }
}

/// A GGUF file opened for reading. The file is memory-mapped read-only (or read into memory if
/// mapping fails) and everything about it is validated by `init`, so later lookups never read out of
/// bounds; tensors stay in the file until asked for.
public final class GGUFFile: @unchecked Sendable {
    // @unchecked Sendable: every stored property is immutable after init, and the mapped bytes are read-only.

    /// The path the file was opened from.
    public let path: String
    /// The format version (2 or 3).
    public let version: Int
    /// Alignment of the data section and of every tensor in it (`general.alignment`, default 32).
    public let alignment: Int
    /// File offset of the data section.
    public let dataOffset: Int
    /// Every metadata value, by key.
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Every tensor, by name.
    public let tensors: [String: GGUFTensorInfo]
    /// Tensor names in file order.
    public let tensorNames: [String]

    private let file: MappedFile

    /// The deepest nesting of arrays accepted (real files use 1).
    static let maximumArrayDepth = 8
    /// The most dimensions a tensor may have (GGML_MAX_DIMS).
    static let maximumDimensions = 4

    /// Opens and validates the GGUF file at `path`; throws a `LoRAError` naming the file on any problem.
    public init(path: String) throws {
        self.path = path
        let file = try MappedFile(path: path, kind: "GGUF file")
        self.file = file
        var cursor = Cursor(base: file.base, end: file.count, path: path)

        guard file.count >= 4, file.buffer.prefix(4).elementsEqual("GGUF".utf8) else {
            throw LoRAError("File \(path) is not a GGUF file: it does not start with the magic bytes \"GGUF\".")
        }
        guard file.count >= 24 else {
            throw LoRAError("GGUF file \(path) is only \(file.count) bytes long, too short for the 24-byte header.")
        }
        cursor.offset = 4
        let rawVersion = try cursor.read(UInt32.self, "the version")
        if rawVersion & 0xFFFF == 0, (1...3).contains(rawVersion.byteSwapped) {
            throw LoRAError("GGUF file \(path) is big-endian, which LoRAKit does not read.")
        }
        guard rawVersion == 2 || rawVersion == 3 else {
            throw LoRAError("GGUF file \(path) has format version \(rawVersion); LoRAKit reads versions 2 and 3.")
        }
        version = Int(rawVersion)
        let tensorCount = try cursor.read(UInt64.self, "the tensor count")
        let kvCount = try cursor.read(UInt64.self, "the metadata count")
        // Bounds before anything is reserved: a key/value takes at least 13 bytes (8-byte key length,
        // 4-byte type, 1-byte value), a tensor entry at least 24 (name length, n_dims, type, offset).
        guard kvCount <= UInt64(cursor.remaining / 13) else {
            throw LoRAError("GGUF file \(path) declares \(kvCount) metadata entries, more than its remaining \(cursor.remaining) bytes can hold.")
        }
        guard tensorCount <= UInt64(cursor.remaining / 24) else {
            throw LoRAError("GGUF file \(path) declares \(tensorCount) tensors, more than its remaining \(cursor.remaining) bytes can hold.")
        }

        // Metadata.
        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(Int(kvCount))
        for i in 0..<Int(kvCount) {
            let key = try cursor.string("the key of metadata entry \(i)")
            guard metadata[key] == nil else {
                throw LoRAError("GGUF file \(path) has metadata key \(key) twice.")
            }
            let context = "metadata key \(key)"
            let type = try cursor.valueType(context)
            metadata[key] = try cursor.value(type, depth: 0, context)
            keys.append(key)
        }
        self.metadata = metadata
        self.metadataKeys = keys

        var alignment = 32
        if let value = metadata["general.alignment"] {
            guard case .uint32(let a) = value else {
                throw LoRAError("GGUF file \(path) has a general.alignment of type \(value.type.name); it must be a UINT32 power of two.")
            }
            guard a > 0, a & (a - 1) == 0 else {
                throw LoRAError("GGUF file \(path) has general.alignment \(a), which is not a power of two.")
            }
            alignment = Int(a)
        }
        self.alignment = alignment

        // Tensor entries.
        var entries: [(name: String, type: GGMLType, shape: [Int], elementCount: Int, offset: UInt64)] = []
        entries.reserveCapacity(Int(tensorCount))
        var seen = Set<String>()
        for i in 0..<Int(tensorCount) {
            let name = try cursor.string("the name of tensor entry \(i)")
            guard seen.insert(name).inserted else {
                throw LoRAError("GGUF file \(path) has two tensors named \(name).")
            }
            func failure(_ problem: String) -> LoRAError {
                LoRAError("Tensor \(name) in GGUF file \(path) \(problem).")
            }
            let dimensionCount = try cursor.read(UInt32.self, "the dimension count of tensor \(name)")
            guard dimensionCount <= UInt32(Self.maximumDimensions) else {
                throw failure("has \(dimensionCount) dimensions; GGUF allows at most \(Self.maximumDimensions)")
            }
            var shape: [Int] = []
            var elementCount = 1
            for _ in 0..<Int(dimensionCount) {
                let dimension = try cursor.read(UInt64.self, "the dimensions of tensor \(name)")
                guard dimension > 0 else { throw failure("has a zero dimension") }
                guard dimension <= UInt64(Int64.max) else {
                    throw failure("has dimension \(Int64(bitPattern: dimension)), which is negative")
                }
                let (product, overflow) = elementCount.multipliedReportingOverflow(by: Int(dimension))
                guard !overflow else { throw failure("has so many values that their count overflows") }
                shape.append(Int(dimension))
                elementCount = product
            }
            let rawType = try cursor.read(UInt32.self, "the type of tensor \(name)")
            guard let type = GGMLType(rawValue: rawType) else {
                throw failure("has unknown GGML type \(rawType)")
            }
            let offset = try cursor.read(UInt64.self, "the data offset of tensor \(name)")
            entries.append((name, type, shape, elementCount, offset))
        }

        // Data section.
        let dataOffset = (cursor.offset + alignment - 1) / alignment * alignment
        self.dataOffset = dataOffset
        let dataSize = max(0, file.count - dataOffset)
        var tensors: [String: GGUFTensorInfo] = [:]
        for (index, entry) in entries.enumerated() {
            func failure(_ problem: String) -> LoRAError {
                LoRAError("Tensor \(entry.name) in GGUF file \(path) \(problem).")
            }
            let rowLength = entry.shape.first ?? 1
            guard rowLength % entry.type.blockSize == 0 else {
                throw failure("has rows of \(rowLength) values, not a multiple of the \(entry.type.blockSize)-value blocks of type \(entry.type.name)")
            }
            guard let byteCount = entry.type.byteCount(forValues: entry.elementCount) else {
                throw failure("has so many values that its byte size overflows")
            }
            guard entry.offset % UInt64(alignment) == 0 else {
                throw failure("has data offset \(entry.offset), not a multiple of the file's alignment \(alignment)")
            }
            guard entry.offset <= UInt64(dataSize), byteCount <= dataSize - Int(entry.offset) else {
                throw failure("has \(byteCount) bytes of data at offset \(entry.offset), past the end of the \(dataSize)-byte data section")
            }
            tensors[entry.name] = GGUFTensorInfo(name: entry.name, type: entry.type, shape: entry.shape,
                                                 offset: Int(entry.offset), byteCount: byteCount, index: index)
        }
        let ordered = tensors.values.sorted { ($0.offset, $0.index) < ($1.offset, $1.index) }
        for (previous, next) in zip(ordered, ordered.dropFirst()) where next.offset < previous.offset + previous.byteCount {
            throw LoRAError("Tensors \(previous.name) and \(next.name) in GGUF file \(path) overlap.")
        }
        self.tensors = tensors
        self.tensorNames = entries.map(\.name)
    }

    // MARK: Tensors

    /// The entry for `name`, or an error naming the file.
    public func info(_ name: String) throws -> GGUFTensorInfo {
        guard let info = tensors[name] else {
            throw LoRAError("There is no tensor named \(name) in GGUF file \(path).")
        }
        return info
    }

    /// The tensor's bytes as stored, a view into the file that stays valid while this object lives.
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let info = try info(name)
        return UnsafeRawBufferPointer(start: file.base + dataOffset + info.offset, count: info.byteCount)
    }

    /// The tensor as a matrix of `rows` × `rowLength`, left quantized in the mapping, that can be
    /// dequantized a range of rows at a time.
    /// Throws if the tensor's type cannot be dequantized.
    public func matrix(_ name: String) throws -> GGMLMatrix {
        let info = try info(name)
        guard info.type.canDequantize else {
            throw LoRAError("Tensor \(name) in GGUF file \(path) has type \(info.type.name), which LoRAKit cannot dequantize; it reads \(GGMLType.dequantizable.map(\.name).joined(separator: ", ")).")
        }
        return GGMLMatrix(info: info, bytes: try rawBytes(name), owner: file)
    }

    /// The tensor's values dequantized to Float, in ggml order (row after row).
    public func floats(_ name: String) throws -> [Float] {
        let matrix = try matrix(name)
        let count = matrix.rows * matrix.columns
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            matrix.unpackAll(into: buffer.baseAddress!)
            initialized = count
        }
    }

    /// Like `floats(_:)`, but writes into caller memory; `count` must equal the tensor's element count.
    public func floats(_ name: String, into destination: UnsafeMutablePointer<Float>, count: Int) throws {
        let matrix = try matrix(name)
        guard count == matrix.rows * matrix.columns else {
            throw LoRAError("Tensor \(name) in GGUF file \(path) has \(matrix.rows * matrix.columns) values but the destination holds \(count).")
        }
        matrix.unpackAll(into: destination)
    }

    /// Dequantizes rows `rows` of the tensor (rows.count × rowLength floats) into `destination`.
    public func dequantizeRows(_ name: String, _ rows: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws {
        let matrix = try matrix(name)
        guard rows.lowerBound >= 0, rows.upperBound <= matrix.rows else {
            throw LoRAError("Tensor \(name) in GGUF file \(path) has \(matrix.rows) rows, so rows \(rows) are out of range.")
        }
        matrix.unpack(rows: rows, into: destination)
    }

    // MARK: Metadata

    /// The architecture named by `general.architecture` ("llama", "qwen2", ...), if any.
    public var architecture: String? { metadata["general.architecture"]?.stringValue }

    private func value(_ key: String) throws -> GGUFValue {
        guard let value = metadata[key] else {
            throw LoRAError("GGUF file \(path) has no metadata key \(key).")
        }
        return value
    }

    private func wrongType(_ key: String, _ value: GGUFValue, _ wanted: String) -> LoRAError {
        let found = value.arrayValue.map { "an ARRAY of \($0.elementType.name)" } ?? "a \(value.type.name)"
        return LoRAError("Metadata key \(key) in GGUF file \(path) holds \(found), not \(wanted).")
    }

    /// An integer value of any integer type.
    public func int(_ key: String) throws -> Int {
        let value = try value(key)
        guard value.type.isInteger else { throw wrongType(key, value, "an integer") }
        guard let int = value.intValue else {
            throw LoRAError("Metadata key \(key) in GGUF file \(path) holds \(value), which does not fit in Int.")
        }
        return int
    }

    /// `int(key)`, or `defaultValue` when the key is absent.
    public func int(_ key: String, default defaultValue: Int) throws -> Int {
        metadata[key] == nil ? defaultValue : try int(key)
    }

    /// A float32 or float64 value (an integer value is accepted too), as Double.
    public func double(_ key: String) throws -> Double {
        let value = try value(key)
        guard let double = value.doubleValue else { throw wrongType(key, value, "a number") }
        return double
    }

    /// A float32 or float64 value (an integer value is accepted too), as Float.
    public func float(_ key: String) throws -> Float { Float(try double(key)) }

    /// `float(key)`, or `defaultValue` when the key is absent.
    public func float(_ key: String, default defaultValue: Float) throws -> Float {
        metadata[key] == nil ? defaultValue : try float(key)
    }

    public func bool(_ key: String) throws -> Bool {
        let value = try value(key)
        guard let bool = value.boolValue else { throw wrongType(key, value, "a BOOL") }
        return bool
    }

    /// `bool(key)`, or `defaultValue` when the key is absent.
    public func bool(_ key: String, default defaultValue: Bool) throws -> Bool {
        metadata[key] == nil ? defaultValue : try bool(key)
    }

    public func string(_ key: String) throws -> String {
        let value = try value(key)
        guard let string = value.stringValue else { throw wrongType(key, value, "a STRING") }
        return string
    }

    /// An array of any integer type, as Int.
    public func intArray(_ key: String) throws -> [Int] {
        let value = try value(key)
        guard let array = value.arrayValue, array.elementType.isInteger else { throw wrongType(key, value, "an ARRAY of integers") }
        guard let ints = array.ints else {
            throw LoRAError("Metadata key \(key) in GGUF file \(path) holds an integer that does not fit in Int.")
        }
        return ints
    }

    /// An array of FLOAT32 or FLOAT64, as Float.
    public func floatArray(_ key: String) throws -> [Float] {
        let value = try value(key)
        guard let floats = value.arrayValue?.floats else { throw wrongType(key, value, "an ARRAY of floats") }
        return floats
    }

    public func stringArray(_ key: String) throws -> [String] {
        let value = try value(key)
        guard let strings = value.arrayValue?.strings else { throw wrongType(key, value, "an ARRAY of STRING") }
        return strings
    }
}

// MARK: - Parsing

/// Bounds-checked little-endian reads over the mapped file. Every failure names the file.
private struct Cursor {
    let base: UnsafeRawPointer
    let end: Int
    let path: String
    var offset = 0

    init(base: UnsafeRawPointer, end: Int, path: String) {
        self.base = base
        self.end = end
        self.path = path
    }

    var remaining: Int { end - offset }

    private func pastEnd(_ what: String, needing count: Int) -> LoRAError {
        LoRAError("GGUF file \(path) ends inside \(what): \(count) bytes are needed at byte \(offset) but the file is \(end) bytes long.")
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw pastEnd(what(), needing: size) }
        let value = T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += size
        return value
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let length = try read(UInt64.self, what())
        guard length <= UInt64(remaining) else {
            throw LoRAError("GGUF file \(path) declares a \(length)-byte string for \(what()) at byte \(offset), past the end of the \(end)-byte file.")
        }
        let bytes = UnsafeRawBufferPointer(start: base + offset, count: Int(length))
        // String(decoding:) repairs bad sequences; a string is valid UTF-8 exactly when nothing changed.
        let string = String(decoding: bytes, as: UTF8.self)
        guard string.utf8.elementsEqual(bytes) else {
            throw LoRAError("GGUF file \(path) has a string for \(what()) at byte \(offset) that is not valid UTF-8.")
        }
        offset += Int(length)
        return string
    }

    mutating func valueType(_ context: String) throws -> GGUFValueType {
        let raw = try read(UInt32.self, "the value type of \(context)")
        guard let type = GGUFValueType(rawValue: raw) else {
            throw LoRAError("GGUF file \(path) has unknown value type \(raw) for \(context).")
        }
        return type
    }

    mutating func value(_ type: GGUFValueType, depth: Int, _ context: String) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try read(UInt8.self, context))
        case .int8: return .int8(try read(Int8.self, context))
        case .uint16: return .uint16(try read(UInt16.self, context))
        case .int16: return .int16(try read(Int16.self, context))
        case .uint32: return .uint32(try read(UInt32.self, context))
        case .int32: return .int32(try read(Int32.self, context))
        case .uint64: return .uint64(try read(UInt64.self, context))
        case .int64: return .int64(try read(Int64.self, context))
        case .float32: return .float32(Float(bitPattern: try read(UInt32.self, context)))
        case .float64: return .float64(Double(bitPattern: try read(UInt64.self, context)))
        case .bool: return .bool(try read(UInt8.self, context) != 0)
        case .string: return .string(try string(context))
        case .array: return .array(try array(depth: depth + 1, context))
        }
    }

    mutating func array(depth: Int, _ context: String) throws -> GGUFArray {
        guard depth <= GGUFFile.maximumArrayDepth else {
            throw LoRAError("GGUF file \(path) nests arrays more than \(GGUFFile.maximumArrayDepth) deep in \(context).")
        }
        let elementType = try valueType("the elements of \(context)")
        let rawCount = try read(UInt64.self, "the array length of \(context)")
        guard rawCount <= UInt64(remaining / elementType.minimumSize) else {
            throw LoRAError("GGUF file \(path) declares an array of \(rawCount) \(elementType.name) values for \(context), more than its remaining \(remaining) bytes can hold.")
        }
        let count = Int(rawCount)
        func fixed<T: FixedWidthInteger>(_: T.Type) -> [T] {
            // In bounds: count · size ≤ remaining was checked above.
            let values = (0..<count).map { i in
                T(littleEndian: base.loadUnaligned(fromByteOffset: offset + i * MemoryLayout<T>.size, as: T.self))
            }
            offset += count * MemoryLayout<T>.size
            return values
        }
        switch elementType {
        case .uint8: return .uint8(fixed(UInt8.self))
        case .int8: return .int8(fixed(Int8.self))
        case .uint16: return .uint16(fixed(UInt16.self))
        case .int16: return .int16(fixed(Int16.self))
        case .uint32: return .uint32(fixed(UInt32.self))
        case .int32: return .int32(fixed(Int32.self))
        case .uint64: return .uint64(fixed(UInt64.self))
        case .int64: return .int64(fixed(Int64.self))
        case .float32: return .float32(fixed(UInt32.self).map(Float.init(bitPattern:)))
        case .float64: return .float64(fixed(UInt64.self).map(Double.init(bitPattern:)))
        case .bool: return .bool(fixed(UInt8.self).map { $0 != 0 })
        case .string:
            var strings: [String] = []
            strings.reserveCapacity(count)
            for i in 0..<count { strings.append(try string("element \(i) of \(context)")) }
            return .string(strings)
        case .array:
            var arrays: [GGUFArray] = []
            arrays.reserveCapacity(count)
            for i in 0..<count { arrays.append(try array(depth: depth + 1, "element \(i) of \(context)")) }
            return .array(arrays)
        }
    }
}
