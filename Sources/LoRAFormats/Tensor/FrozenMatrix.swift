import Foundation

/// Rows of a frozen matrix kept in a compact encoding (GGML quantized blocks, for instance) and
/// expanded to Float32 a range of rows at a time.
public protocol PackedMatrix: AnyObject, Sendable {
    var rows: Int { get }
    var columns: Int { get }
    /// Bytes the packed rows occupy in memory.
    var byteCount: Int { get }
    /// Writes rows `range` as Float32, `columns` values per row, row-major.
    func unpack(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>)
    /// Whether `dotProducts` runs here (a kernel reads these rows' encoding on this CPU).
    var hasDotProducts: Bool { get }
    /// y[r·ldy + i] = row (first + i·step) · x[r·ldx ..< r·ldx + columns] (plus beta·y[r·ldy + i] when
    /// beta ≠ 0) for i < count and nx ≤ 4 vectors, read from the packed rows; only where `hasDotProducts`.
    func dotProducts(first: Int, step: Int, count: Int, x: UnsafePointer<Float>, ldx: Int, nx: Int, beta: Float,
                     y: UnsafeMutablePointer<Float>, ldy: Int)
    /// Whether the `Q8Vectors` form of `dotProducts` runs here.
    var hasQ8DotProducts: Bool { get }
    /// As `dotProducts`, against vectors rounded to 8 bits (`x.length == columns`); only where `hasQ8DotProducts`.
    func dotProducts(first: Int, step: Int, count: Int, x: Q8Vectors, beta: Float, y: UnsafeMutablePointer<Float>, ldy: Int)
}

extension PackedMatrix {
    public var hasDotProducts: Bool { false }
    public func dotProducts(first: Int, step: Int, count: Int, x: UnsafePointer<Float>, ldx: Int, nx: Int, beta: Float,
                            y: UnsafeMutablePointer<Float>, ldy: Int) {
        preconditionFailure("\(Self.self) has no dot products")
    }
    public var hasQ8DotProducts: Bool { false }
    public func dotProducts(first: Int, step: Int, count: Int, x: Q8Vectors, beta: Float, y: UnsafeMutablePointer<Float>, ldy: Int) {
        preconditionFailure("\(Self.self) has no 8-bit dot products")
    }
}

/// A frozen [rows × columns] weight: a dense Float32 tensor, or packed rows that products expand
/// one panel at a time into a reused scratch buffer, so a quantized base is never expanded whole.
public final class FrozenMatrix: @unchecked Sendable {
    public enum Storage { case dense(Tensor), packed(any PackedMatrix) }
    public private(set) var storage: Storage
    public let rows: Int
    public let columns: Int

    public init(_ tensor: Tensor) {
        precondition(tensor.shape.count == 2, "a frozen matrix is 2-D")
        storage = .dense(tensor)
        rows = tensor.shape[0]
        columns = tensor.shape[1]
    }

    public init(packed: any PackedMatrix) {
        storage = .packed(packed)
        rows = packed.rows
        columns = packed.columns
    }

    public var isPacked: Bool { if case .packed = storage { true } else { false } }

    /// The rows in bfloat16 when stored as a `BF16Matrix`, for the bf16 kernel to read in place.
    public var bf16Rows: UnsafePointer<UInt16>? {
        if case .packed(let p) = storage, let m = p as? BF16Matrix { return m.bits }
        return nil
    }

    /// Bytes held in memory.
    public var byteCount: Int {
        switch storage {
        case .dense(let t): t.count * 4
        case .packed(let p): p.byteCount
        }
    }

    /// The dense tensor itself, or a new Float32 expansion of packed rows (for export and tests).
    public func expanded() -> Tensor {
        switch storage {
        case .dense(let t): return t
        case .packed(let p):
            let t = Tensor(shape: [rows, columns])
            p.unpack(rows: 0..<rows, into: t.data)
            return t
        }
    }

    /// Replaces packed storage by its Float32 expansion (merging an adapter needs writable rows).
    public func makeDense() {
        if case .packed = storage { storage = .dense(expanded()) }
    }

    /// Writes rows `range` as Float32 into `destination`, spreading large ranges over the threads.
    public func unpack(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        switch storage {
        case .dense(let t):
            (destination).update(from: t.data + range.lowerBound * columns, count: range.count * columns)
        case .packed(let p):
            let cols = columns
            Parallel.forRanges(range.count, minChunk: max(1, 16_384 / max(1, cols))) { part in
                p.unpack(rows: (range.lowerBound + part.lowerBound)..<(range.lowerBound + part.upperBound),
                         into: destination + part.lowerBound * cols)
            }
        }
    }

    /// Like `unpack`, but on the calling thread only (for callers already running in parallel).
    package func unpackOnThisThread(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        switch storage {
        case .dense(let t): destination.update(from: t.data + range.lowerBound * columns, count: range.count * columns)
        case .packed(let p): p.unpack(rows: range, into: destination)
        }
    }

    /// Rows expanded per panel: at most about 4 MB of Float32, at least 16 rows.
    package var panelRows: Int { Swift.min(rows, Swift.max(16, (1 << 20) / Swift.max(1, columns))) }

    /// Calls body(firstRow, rowCount, rowsAsFloat32) for consecutive panels of the matrix.
    /// Dense storage is one panel, in place; packed storage reuses one scratch buffer.
    package func forEachPanel(_ body: (Int, Int, UnsafePointer<Float>) -> Void) {
        switch storage {
        case .dense(let t):
            body(0, rows, t.data)
        case .packed:
            PanelScratch.shared.with(count: panelRows * columns) { scratch in
                for r0 in stride(from: 0, to: rows, by: panelRows) {
                    let n = Swift.min(panelRows, rows - r0)
                    unpack(rows: r0..<(r0 + n), into: scratch)
                    body(r0, n, scratch)
                }
            }
        }
    }
}

/// One growing Float32 buffer reused by every packed product (model passes run one at a time;
/// the lock only guards against two models used from two threads at once).
final class PanelScratch: @unchecked Sendable {
    static let shared = PanelScratch()
    private let lock = NSLock()
    private var buffer = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    private var capacity = 1

    func with(count: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) {
        lock.lock(); defer { lock.unlock() }
        if count > capacity {
            buffer.deallocate()
            buffer = .allocate(capacity: count)
            capacity = count
        }
        body(buffer)
    }
}
