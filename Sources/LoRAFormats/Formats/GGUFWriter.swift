import Foundation

/// Writes a GGUF (version 3) file: metadata in the order given, tensor infos, then the tensors'
/// data, each aligned to `alignment`. Written to a temporary name and renamed, so a failed write
/// never leaves a partial file.
public struct GGUFWriter {
    public var alignment = 32
    private var metadata: [(String, GGUFValue)] = []
    private var tensors: [(name: String, type: GGMLType, shape: [Int], data: [UInt8])] = []

    public init() {}

    /// Sets a metadata value (replacing an earlier one under the same key, keeping its position).
    public mutating func set(_ key: String, _ value: GGUFValue) {
        if let i = metadata.firstIndex(where: { $0.0 == key }) { metadata[i].1 = value } else { metadata.append((key, value)) }
    }

    public mutating func remove(_ key: String) { metadata.removeAll { $0.0 == key } }

    /// Adds a [rows × columns] row-major matrix (a vector when rows is nil) stored as `type`
    /// (one of `GGMLType.quantizable`). GGUF lists dimensions fastest-varying first: [columns, rows].
    public mutating func addTensor(_ name: String, rows: Int?, columns: Int, values: UnsafeBufferPointer<Float>,
                                   as type: GGMLType) throws {
        guard values.count == (rows ?? 1) * columns else {
            throw LoRAError("tensor \(name): \(values.count) values do not make \(rows ?? 1)×\(columns)")
        }
        guard let byteCount = type.byteCount(forValues: values.count), columns % type.blockSize == 0 else {
            throw LoRAError("tensor \(name): rows of \(columns) values cannot be stored as \(type) (blocks of \(type.blockSize))")
        }
        guard type.canQuantize else {
            throw LoRAError("tensor \(name): GGUF writing supports \(GGMLType.quantizable.map(\.name).joined(separator: ", ")), not \(type)")
        }
        var data = [UInt8](repeating: 0, count: byteCount)
        let rowCount = rows ?? 1, rowBytes = byteCount / max(1, rowCount)
        data.withUnsafeMutableBytes { out in
            guard let from = values.baseAddress, let to = out.baseAddress else { return }
            Parallel.forRanges(rowCount, minChunk: 8) { part in
                GGMLQuant.quantize(type, from + part.lowerBound * columns, count: part.count * columns, into: to + part.lowerBound * rowBytes)
            }
        }
        tensors.append((name, type, rows.map { [columns, $0] } ?? [columns], data))
    }

    public func write(to path: String) throws {
        var out = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func string(_ s: String) { let b = Array(s.utf8); u64(UInt64(b.count)); out.append(contentsOf: b) }
        func pad() { while out.count % alignment != 0 { out.append(0) } }
        func scalar(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): out.append(x)
            case .int8(let x): out.append(UInt8(bitPattern: x))
            case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .int16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .uint32(let x): u32(x)
            case .int32(let x): u32(UInt32(bitPattern: x))
            case .uint64(let x): u64(x)
            case .int64(let x): u64(UInt64(bitPattern: x))
            case .float32(let x): u32(x.bitPattern)
            case .float64(let x): u64(x.bitPattern)
            case .bool(let x): out.append(x ? 1 : 0)
            case .string(let s): string(s)
            case .array(let a): array(a)
            }
        }
        func array(_ a: GGUFArray) {
            u32(a.elementType.rawValue)
            u64(UInt64(a.count))
            for v in a.values { scalar(v) }
        }
        out.append(contentsOf: Array("GGUF".utf8))
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count + (alignment == 32 ? 0 : 1)))
        for (key, value) in metadata {
            string(key)
            u32(value.type.rawValue)
            scalar(value)
        }
        if alignment != 32 { string("general.alignment"); u32(GGUFValueType.uint32.rawValue); u32(UInt32(alignment)) }
        var offset = 0
        for t in tensors {
            string(t.name)
            u32(UInt32(t.shape.count))
            for d in t.shape { u64(UInt64(d)) }
            u32(t.type.rawValue)
            u64(UInt64(offset))
            offset += (t.data.count + alignment - 1) / alignment * alignment
        }
        pad()
        for t in tensors {
            out.append(contentsOf: t.data)
            pad()
        }
        let tmp = path + ".tmp-\(getpid())"
        do {
            try out.write(to: URL(fileURLWithPath: tmp))
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw LoRAError.cannotWrite(path, error)
        }
        if rename(tmp, path) != 0 {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: tmp)
            throw LoRAError("cannot rename \(tmp) to \(path): \(reason)")
        }
    }
}
