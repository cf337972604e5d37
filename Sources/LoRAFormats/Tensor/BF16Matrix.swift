/// A frozen weight stored in bfloat16 (half the memory of Float32), for models whose base products
/// run in bf16 anyway (`Precision.bf16`): the bf16 kernel reads these rows directly
/// (`Gemm.sgemmBF16(... b16:)`); anything else expands them to Float32, exactly.
public final class BF16Matrix: PackedMatrix, @unchecked Sendable {
    // @unchecked Sendable: the rows are written once, in init, and only read after.
    public let rows: Int
    public let columns: Int
    private let storage: UnsafeMutablePointer<UInt16>

    /// W's values rounded to bfloat16 as the bf16 kernel rounds its operands (nearest even,
    /// subnormals to zero), so its products are those it would compute from W in Float32.
    /// Requires `Precision.bf16.isAvailable`.
    public init(rounding weight: Tensor) {
        precondition(weight.shape.count == 2, "a frozen matrix is 2-D")
        precondition(Precision.bf16.isAvailable, "BF16Matrix: this CPU has no bf16 dot products")
        rows = weight.shape[0]
        columns = weight.shape[1]
        storage = .allocate(capacity: max(1, rows * columns))
        BFloat16.round(weight.data, count: rows * columns, into: storage)
    }

    deinit { storage.deallocate() }

    /// Row-major bfloat16 bits, `columns` per row.
    public var bits: UnsafePointer<UInt16> { UnsafePointer(storage) }

    public var byteCount: Int { rows * columns * 2 }

    /// On the calling thread, as `PackedMatrix` requires.
    public func unpack(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) are outside 0..<\(rows)")
        convertBFloat16ToFloat(storage + range.lowerBound * columns, destination, count: range.count * columns)
    }

    public var hasDotProducts: Bool { false }
}
