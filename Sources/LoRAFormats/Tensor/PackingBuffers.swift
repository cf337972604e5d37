import Foundation

/// Packing buffers for `BuiltinGemm`, kept between products. A training step runs hundreds of
/// products, each needing a few MiB of packed operands per thread; allocating them anew each time
/// made the kernel touch fresh pages inside every product (page faults took about 15% of a 576-wide
/// product's time on the AVX-512 kernel). A product takes its buffer and gives it back when it ends
/// (`defer`); at most `kept` stay allocated.
enum PackingBuffers {
    typealias Buffer = (pointer: UnsafeMutableRawPointer, bytes: Int)
    private static let lock = NSLock()
    nonisolated(unsafe) private static var free: [Buffer] = []
    private static let kept = 8

    /// A 64-byte-aligned buffer of at least `bytes` bytes (contents undefined), to be given back.
    static func take(_ bytes: Int) -> Buffer {
        lock.lock()
        if let i = free.firstIndex(where: { $0.bytes >= bytes }) {
            defer { lock.unlock() }
            return free.remove(at: i)
        }
        lock.unlock()
        return (UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64), bytes)
    }

    static func give(_ buffer: Buffer) {
        lock.lock()
        free.append(buffer)
        // Keep the largest ones: a large product's buffers serve every smaller one.
        var dropped: [Buffer] = []
        if free.count > kept {
            free.sort { $0.bytes > $1.bytes }
            dropped = Array(free[kept...])
            free.removeLast(free.count - kept)
        }
        lock.unlock()
        for d in dropped { d.pointer.deallocate() }
    }
}
