// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
//
//   8 bytes    little-endian UInt64 N, the header length
//   N bytes    UTF-8 JSON object: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//              "__metadata__": {"key": "value"}}
//   the rest   the data section; data_offsets are relative to its start, tensors are little-endian.

import Foundation

/// The element types a safetensors file can hold (the subset LoRAKit understands).
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL

    /// Bytes per element.
    public var elementSize: Int {
        switch self {
        case .F64, .I64: return 8
        case .F32, .I32: return 4
        case .F16, .BF16, .I16: return 2
        case .I8, .U8, .BOOL: return 1
        }
    }

    /// True for the floating-point types (F64, F32, F16, BF16).
    public var isFloatingPoint: Bool {
        switch self {
        case .F64, .F32, .F16, .BF16: return true
        case .I64, .I32, .I16, .I8, .U8, .BOOL: return false
        }
    }
}

/// One tensor's entry in a safetensors header.
public struct SafetensorsTensorInfo: Sendable {
    public let name: String
    public let dtype: SafetensorsDType
    public let shape: [Int]
    /// Byte range of the tensor's data, relative to the start of the data section.
    public let dataOffsets: Range<Int>

    /// Number of elements (the product of `shape`; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file opened for reading. The file is memory-mapped read-only (or read into memory
/// if mapping fails) and its header is fully validated by `init`, so lookups never read out of bounds.
public final class SafetensorsFile: @unchecked Sendable {
    // @unchecked Sendable: every stored property is immutable after init, and the mapped bytes are read-only.

    /// The path the file was opened from.
    public let path: String
    /// The header's "__metadata__" entry, or [:] if absent.
    public let metadata: [String: String]
    /// Every tensor in the file, by name.
    public let tensors: [String: SafetensorsTensorInfo]

    private let bytes: MappedFile
    private let dataStart: Int

    /// Tensor names in sorted order.
    public var names: [String] { tensors.keys.sorted() }

    /// Opens and validates the safetensors file at `path`; throws a `LoRAError` naming the file on any problem.
    public init(path: String) throws {
        self.path = path
        let bytes = try MappedFile(path: path, kind: "safetensors file")
        self.bytes = bytes
        let fileSize = bytes.count

        guard fileSize >= 8 else {
            throw LoRAError("Safetensors file \(path) is only \(fileSize) bytes long, too short to hold the 8-byte header length.")
        }
        let headerLength = UInt64(littleEndian: bytes.base.loadUnaligned(as: UInt64.self))
        guard headerLength <= 100_000_000 else {
            throw LoRAError("Safetensors file \(path) declares a header of \(headerLength) bytes, more than the 100 MB limit.")
        }
        guard headerLength <= UInt64(fileSize - 8) else {
            throw LoRAError("Safetensors file \(path) declares a header of \(headerLength) bytes but only \(fileSize - 8) bytes follow the length field.")
        }
        let dataStart = 8 + Int(headerLength)
        let dataSize = fileSize - dataStart
        self.dataStart = dataStart

        let header = try Self.parseHeader(UnsafeRawBufferPointer(start: bytes.base + 8, count: Int(headerLength)), path: path)

        var metadata: [String: String] = [:]
        var tensors: [String: SafetensorsTensorInfo] = [:]
        for name in header.keys.sorted() {  // sorted so the error reported for a bad file is always the same
            let value = header[name]!
            if name == "__metadata__" {
                metadata = try Self.parseMetadata(value, path: path)
            } else {
                tensors[name] = try Self.parseTensor(name: name, value, dataSize: dataSize, path: path)
            }
        }
        try Self.checkNoOverlap(Array(tensors.values), path: path)
        self.metadata = metadata
        self.tensors = tensors
    }

    // MARK: Lookups

    /// The header entry for `name`, or an error "no tensor named X in FILE".
    public func info(_ name: String) throws -> SafetensorsTensorInfo {
        guard let info = tensors[name] else {
            throw LoRAError("There is no tensor named \(name) in safetensors file \(path).")
        }
        return info
    }

    /// The tensor's raw little-endian bytes, a view into the file that stays valid while this object lives.
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let info = try info(name)
        return UnsafeRawBufferPointer(start: bytes.base + dataStart + info.dataOffsets.lowerBound,
                                      count: info.dataOffsets.count)
    }

    /// The tensor's values converted to Float (from F32, F16, BF16 or F64). Integer tensors are an error.
    public func floats(_ name: String) throws -> [Float] {
        let info = try floatInfo(name)
        let count = info.elementCount
        guard count > 0 else { return [] }
        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try floats(name, into: buffer.baseAddress!, count: count)
            initialized = count
        }
    }

    /// Like `floats(_:)`, but writes into caller memory; `count` must equal the tensor's element count.
    public func floats(_ name: String, into destination: UnsafeMutablePointer<Float>, count: Int) throws {
        let info = try floatInfo(name)
        guard count == info.elementCount else {
            throw LoRAError("Tensor \(name) in safetensors file \(path) has \(info.elementCount) elements but the destination holds \(count).")
        }
        let source = try rawBytes(name)
        guard count > 0, let base = source.baseAddress else { return }
        switch info.dtype {
        case .F32:
            // Safetensors data is little-endian, as is every platform Swift runs LoRAKit on.
            UnsafeMutableRawPointer(destination).copyMemory(from: base, byteCount: count * 4)
        case .F16:
            convertFloat16ToFloat(base, destination, count: count)
        case .BF16:
            convertBFloat16ToFloat(base, destination, count: count)
        case .F64:
            for i in 0..<count {
                let bits = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
                destination[i] = Float(Double(bitPattern: bits))
            }
        case .I64, .I32, .I16, .I8, .U8, .BOOL:
            preconditionFailure("floatInfo admits only floating-point dtypes")
        }
    }

    /// The tensor's values as Int (from I64, I32, I16, I8, U8 or BOOL). Floating-point tensors are an error.
    public func ints(_ name: String) throws -> [Int] {
        let info = try info(name)
        guard !info.dtype.isFloatingPoint else {
            throw LoRAError("Tensor \(name) in safetensors file \(path) has floating-point dtype \(info.dtype.rawValue), not an integer dtype.")
        }
        let source = try rawBytes(name)
        let count = info.elementCount
        guard count > 0, let base = source.baseAddress else { return [] }
        return (0..<count).map { i -> Int in
            switch info.dtype {
            case .I64: return Int(Int64(littleEndian: base.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)))
            case .I32: return Int(Int32(littleEndian: base.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)))
            case .I16: return Int(Int16(littleEndian: base.loadUnaligned(fromByteOffset: i * 2, as: Int16.self)))
            case .I8: return Int(base.load(fromByteOffset: i, as: Int8.self))
            case .U8: return Int(base.load(fromByteOffset: i, as: UInt8.self))
            case .BOOL: return base.load(fromByteOffset: i, as: UInt8.self) == 0 ? 0 : 1
            case .F64, .F32, .F16, .BF16: preconditionFailure("checked above")
            }
        }
    }

    private func floatInfo(_ name: String) throws -> SafetensorsTensorInfo {
        let info = try info(name)
        guard info.dtype.isFloatingPoint else {
            throw LoRAError("Tensor \(name) in safetensors file \(path) has integer dtype \(info.dtype.rawValue), not a floating-point dtype.")
        }
        return info
    }

    // MARK: Header validation

    private static func parseHeader(_ header: UnsafeRawBufferPointer, path: String) throws -> [String: Any] {
        let data = Data(header)
        guard String(data: data, encoding: .utf8) != nil else {
            throw LoRAError("The header of safetensors file \(path) is not valid UTF-8.")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw LoRAError("The header of safetensors file \(path) is not valid JSON.")
        }
        guard let dictionary = object as? [String: Any] else {
            throw LoRAError("The header of safetensors file \(path) is not a JSON object.")
        }
        return dictionary
    }

    private static func parseMetadata(_ value: Any, path: String) throws -> [String: String] {
        guard let object = value as? [String: Any] else {
            throw LoRAError("The __metadata__ entry of safetensors file \(path) is not a JSON object.")
        }
        var metadata: [String: String] = [:]
        for (key, value) in object {
            guard let string = value as? String else {
                throw LoRAError("Metadata key \(key) in safetensors file \(path) does not have a string value.")
            }
            metadata[key] = string
        }
        return metadata
    }

    private static func parseTensor(name: String, _ value: Any, dataSize: Int, path: String) throws -> SafetensorsTensorInfo {
        func failure(_ problem: String) -> LoRAError {
            LoRAError("Tensor \(name) in safetensors file \(path) \(problem).")
        }
        guard let entry = value as? [String: Any] else { throw failure("is not described by a JSON object") }

        guard let dtypeValue = entry["dtype"] else { throw failure("has no dtype") }
        guard let dtypeName = dtypeValue as? String else { throw failure("has a dtype that is not a string") }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else { throw failure("has unsupported dtype \(dtypeName)") }

        guard let shapeValue = entry["shape"] else { throw failure("has no shape") }
        guard let shapeArray = shapeValue as? [Any] else { throw failure("has a shape that is not a JSON array") }
        var shape: [Int] = []
        var elementCount = 1
        for dimensionValue in shapeArray {
            guard let dimension = jsonInteger(dimensionValue) else { throw failure("has a shape entry that is not an integer") }
            guard dimension >= 0 else { throw failure("has negative dimension \(dimension) in its shape") }
            let (product, overflow) = elementCount.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw failure("has a shape whose element count overflows") }
            shape.append(dimension)
            elementCount = product
        }
        let (byteCount, overflow) = elementCount.multipliedReportingOverflow(by: dtype.elementSize)
        guard !overflow else { throw failure("has a shape whose byte size overflows") }

        guard let offsetsValue = entry["data_offsets"] else { throw failure("has no data_offsets") }
        guard let offsetsArray = offsetsValue as? [Any], offsetsArray.count == 2,
              let begin = jsonInteger(offsetsArray[0]), let end = jsonInteger(offsetsArray[1]),
              begin >= 0, end >= 0
        else { throw failure("has data_offsets that are not two non-negative integers") }
        guard begin <= end else { throw failure("has data_offsets beginning at \(begin), after their end \(end)") }
        guard end <= dataSize else {
            throw failure("has data_offsets ending at \(end), past the end of the \(dataSize)-byte data section")
        }
        guard end - begin == byteCount else {
            throw failure("occupies \(end - begin) bytes but its shape \(shape) of \(dtype.rawValue) needs \(byteCount)")
        }
        return SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end)
    }

    /// Tensors may leave gaps between them but must not share bytes. Empty tensors occupy nothing.
    private static func checkNoOverlap(_ tensors: [SafetensorsTensorInfo], path: String) throws {
        let ordered = tensors.filter { !$0.dataOffsets.isEmpty }.sorted {
            ($0.dataOffsets.lowerBound, $0.name) < ($1.dataOffsets.lowerBound, $1.name)
        }
        for (previous, next) in zip(ordered, ordered.dropFirst())
        where next.dataOffsets.lowerBound < previous.dataOffsets.upperBound {
            throw LoRAError("Tensors \(previous.name) and \(next.name) in safetensors file \(path) overlap.")
        }
    }
}

/// A JSON integer as Int; nil for booleans, fractions, exponent forms and values outside Int's range.
/// Every reader of integers from JSON files uses it: NSNumber's `intValue` would wrap or truncate.
package func jsonInteger(_ value: Any) -> Int? {
    guard let number = value as? NSNumber else { return nil }
    // JSONSerialization returns booleans and non-integers as NSNumber too; tell them apart by storage type.
    switch String(cString: number.objCType) {
    case "c", "C", "B", "f", "d": return nil
    default: return number as? Int
    }
}

/// Builds a safetensors file in memory and writes it atomically.
///
/// Mistakes while adding (wrong value count, unsupported dtype, duplicate name, integer out of range)
/// are remembered and reported by `write(to:)`, which then writes nothing.
public struct SafetensorsWriter: Sendable {
    private struct Entry: Sendable {
        let dtype: SafetensorsDType
        let shape: [Int]
        let data: [UInt8]
    }

    private var entries: [String: Entry] = [:]
    private var problems: [String] = []

    /// String key/value pairs stored under "__metadata__" (omitted from the file when empty).
    public var metadata: [String: String] = [:]

    public init() {}

    /// Adds a float tensor, stored as F32 (default), F16 or BF16 (rounded to nearest even), or F64.
    public mutating func add(_ name: String, shape: [Int], floats: UnsafeBufferPointer<Float>, as dtype: SafetensorsDType = .F32) {
        guard checkNew(name, shape: shape, valueCount: floats.count) else { return }
        var data: [UInt8]
        switch dtype {
        case .F32:
            data = Array(UnsafeRawBufferPointer(floats))  // the platform layout is little-endian
        case .F16:
            data = Self.littleEndianBytes(floats.map { floatToFloat16Bits($0) })
        case .BF16:
            data = Self.littleEndianBytes(floats.map { floatToBFloat16Bits($0) })
        case .F64:
            data = Self.littleEndianBytes(floats.map { Double($0).bitPattern })
        case .I64, .I32, .I16, .I8, .U8, .BOOL:
            problems.append("tensor \(name) was added as floats with integer dtype \(dtype.rawValue)")
            return
        }
        entries[name] = Entry(dtype: dtype, shape: shape, data: data)
    }

    /// Adds a float tensor; see the `UnsafeBufferPointer` variant.
    public mutating func add(_ name: String, shape: [Int], floats: [Float], as dtype: SafetensorsDType = .F32) {
        floats.withUnsafeBufferPointer { add(name, shape: shape, floats: $0, as: dtype) }
    }

    /// Adds an integer tensor stored as I64 (default), I32, I16, I8, U8 or BOOL (0 or 1 only).
    public mutating func addInts(_ name: String, shape: [Int], values: [Int], as dtype: SafetensorsDType = .I64) {
        guard checkNew(name, shape: shape, valueCount: values.count) else { return }
        let range: ClosedRange<Int>
        switch dtype {
        case .I64: range = Int(Int64.min)...Int(Int64.max)
        case .I32: range = Int(Int32.min)...Int(Int32.max)
        case .I16: range = Int(Int16.min)...Int(Int16.max)
        case .I8: range = Int(Int8.min)...Int(Int8.max)
        case .U8: range = 0...255
        case .BOOL: range = 0...1
        case .F64, .F32, .F16, .BF16:
            problems.append("tensor \(name) was added as integers with floating-point dtype \(dtype.rawValue)")
            return
        }
        if let bad = values.first(where: { !range.contains($0) }) {
            problems.append("tensor \(name) has value \(bad), which does not fit in \(dtype.rawValue)")
            return
        }
        let data: [UInt8]
        switch dtype {
        case .I64: data = Self.littleEndianBytes(values.map { Int64($0) })
        case .I32: data = Self.littleEndianBytes(values.map { Int32($0) })
        case .I16: data = Self.littleEndianBytes(values.map { Int16($0) })
        default: data = values.map { UInt8(truncatingIfNeeded: $0) }  // I8, U8, BOOL
        }
        entries[name] = Entry(dtype: dtype, shape: shape, data: data)
    }

    /// Writes the file to `path + ".tmp-<pid>"`, then renames it to `path`, so a crash never leaves a
    /// half-written file at `path`.
    public func write(to path: String) throws {
        if let problem = problems.first {
            throw LoRAError("Not writing safetensors file \(path) because \(problem).")
        }
        let header = headerBytes()
        let temporaryPath = path + ".tmp-\(getpid())"
        let fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw LoRAError("Cannot create \(temporaryPath) to write safetensors file \(path): \(String(cString: strerror(errno))).")
        }
        do {
            var length = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &length) { try Self.writeAll(fd, $0, path: path) }
            try header.withUnsafeBytes { try Self.writeAll(fd, $0, path: path) }
            for name in entries.keys.sorted() {
                try entries[name]!.data.withUnsafeBytes { try Self.writeAll(fd, $0, path: path) }
            }
            guard fsync(fd) == 0 else {
                throw LoRAError("Cannot flush safetensors file \(path) to disk: \(String(cString: strerror(errno))).")
            }
        } catch {
            close(fd)
            unlink(temporaryPath)
            throw error
        }
        close(fd)
        guard rename(temporaryPath, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporaryPath)
            throw LoRAError("Cannot move \(temporaryPath) into place as safetensors file \(path): \(reason).")
        }
    }

    // MARK: Helpers

    /// Records a problem and returns false if `name` is taken or reserved, or `shape` doesn't match `valueCount`.
    private mutating func checkNew(_ name: String, shape: [Int], valueCount: Int) -> Bool {
        if name == "__metadata__" {
            problems.append("__metadata__ is reserved and cannot be a tensor name")
            return false
        }
        if entries[name] != nil {
            problems.append("tensor \(name) was added twice")
            return false
        }
        if shape.contains(where: { $0 < 0 }) {
            problems.append("tensor \(name) has a negative dimension in shape \(shape)")
            return false
        }
        let (elementCount, overflow) = shape.reduce((1, false)) { partial, dimension in
            let (product, overflow) = partial.0.multipliedReportingOverflow(by: dimension)
            return (product, partial.1 || overflow)
        }
        if overflow || elementCount != valueCount {
            problems.append("tensor \(name) has \(valueCount) values but shape \(shape)")
            return false
        }
        return true
    }

    /// The JSON header, padded with spaces to a multiple of 8 bytes. Tensors are laid out in sorted name order.
    private func headerBytes() -> [UInt8] {
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(Self.jsonString($0)):\(Self.jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for name in entries.keys.sorted() {
            let entry = entries[name]!
            let shape = entry.shape.map(String.init).joined(separator: ",")
            let end = offset + entry.data.count
            fields.append("\(Self.jsonString(name)):{\"dtype\":\"\(entry.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var bytes = Array("{\(fields.joined(separator: ","))}".utf8)
        while bytes.count % 8 != 0 { bytes.append(UInt8(ascii: " ")) }
        return bytes
    }

    /// `string` as a JSON string literal.
    private static func jsonString(_ string: String) -> String {
        var result = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    private static func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
        let littleEndian = values.map { $0.littleEndian }
        return littleEndian.withUnsafeBytes { Array($0) }
    }

    private static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws {
        var written = 0
        while written < buffer.count {
            let n = posixWrite(fd, buffer.baseAddress! + written, buffer.count - written)
            if n >= 0 {
                written += n
            } else if errno != EINTR {
                throw LoRAError("Cannot write safetensors file \(path): \(String(cString: strerror(errno))).")
            }
        }
    }
}

/// POSIX write(2); a file-level function because `SafetensorsWriter.write(to:)` hides the global name.
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}
