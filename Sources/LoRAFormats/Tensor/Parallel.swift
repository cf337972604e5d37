import Foundation
import Synchronization

/// Work split over the machine's cores with Dispatch. Chunking is static (a function of the
/// count and the thread count only), so results are bitwise reproducible for a given thread count.
public enum Parallel {
    /// Number of worker threads LoRAKit's own kernels use (BLAS keeps its own setting).
    nonisolated(unsafe) public static var threadCount: Int = {
        if let s = ProcessInfo.processInfo.environment["LORA_THREADS"], let n = Int(s), n > 0 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Calls `body(i)` for every i in 0..<count, spread over `threadCount` threads.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        let threads = min(threadCount, count)
        if threads == 1 {
            for i in 0..<count { body(i) }
            return
        }
        run(parts: threads) { t in
            let start = count * t / threads, end = count * (t + 1) / threads
            for i in start..<end { body(i) }
        }
    }

    /// Calls `body(range)` for `threadCount` contiguous, disjoint ranges covering 0..<count.
    /// Use this when per-thread setup (a scratch buffer) should happen once per range.
    public static func forRanges(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let threads = max(1, min(threadCount, count / max(1, minChunk)))
        if threads == 1 { body(0..<count); return }
        run(parts: threads) { t in body((count * t / threads)..<(count * (t + 1) / threads)) }
    }

    /// Runs body(t) for t in 0..<parts on the worker pool, or on Dispatch where the pool cannot take
    /// the job (in use, too few workers, or a macOS before 15).
    private static func run(parts: Int, _ body: (Int) -> Void) {
        if #available(macOS 15.0, *), let pool = pool(for: parts), pool.run(parts: parts, body) { return }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: parts) { t in box.value(t) }
        }
    }

    /// The pool, made at first use with `threadCount − 1` workers; nil when a job has more parts than that.
    @available(macOS 15.0, *)
    private static func pool(for parts: Int) -> WorkerPool? {
        let pool = sharedPool.withLock { pool in
            if pool == nil && threadCount > 1 { pool = WorkerPool(workers: threadCount - 1) }
            return pool
        }
        guard let pool, parts <= pool.workers + 1 else { return nil }
        return pool
    }
}

@available(macOS 15.0, *)
private let sharedPool = Mutex<WorkerPool?>(nil)

/// Carries a non-Sendable value into a concurrent region whose disjoint-access discipline the caller guarantees.
package struct UncheckedBox<T>: @unchecked Sendable {
    package let value: T
    package init(_ value: T) { self.value = value }
}
