import Foundation

/// Packing buffers for `BuiltinGemm`, kept between products. A training step runs hundreds of
/// products, each needing a few MiB of packed operands per thread; allocating them anew each time
/// made the kernel touch fresh pages inside every product (page faults took about 15% of a 576-wide
/// product's time on the AVX-512 kernel). Buffers taken are handed back when the product ends; at
/// most `kept` stay allocated.
enum PackingBuffers {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var free: [(pointer: UnsafeMutableRawPointer, bytes: Int)] = []
    private static let kept = 8

    /// Runs body with a 64-byte-aligned buffer of at least `bytes` bytes (contents undefined).
    static func with<T>(bytes: Int, _ body: (UnsafeMutableRawPointer) -> T) -> T {
        let buffer = take(bytes)
        defer { give(buffer) }
        return body(buffer.pointer)
    }

    private static func take(_ bytes: Int) -> (pointer: UnsafeMutableRawPointer, bytes: Int) {
        lock.lock()
        if let i = free.firstIndex(where: { $0.bytes >= bytes }) {
            defer { lock.unlock() }
            return free.remove(at: i)
        }
        lock.unlock()
        return (UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64), bytes)
    }

    private static func give(_ buffer: (pointer: UnsafeMutableRawPointer, bytes: Int)) {
        lock.lock()
        free.append(buffer)
        // Keep the largest ones: a large product's buffers serve every smaller one.
        var dropped: [(pointer: UnsafeMutableRawPointer, bytes: Int)] = []
        if free.count > kept {
            free.sort { $0.bytes > $1.bytes }
            dropped = Array(free[kept...])
            free.removeLast(free.count - kept)
        }
        lock.unlock()
        for d in dropped { d.pointer.deallocate() }
    }
}
