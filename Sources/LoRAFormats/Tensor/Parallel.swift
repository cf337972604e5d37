import Foundation

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
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let start = count * t / threads, end = count * (t + 1) / threads
                for i in start..<end { box.value(i) }
            }
        }
    }

    /// Calls `body(range)` for `threadCount` contiguous, disjoint ranges covering 0..<count.
    /// Use this when per-thread setup (a scratch buffer) should happen once per range.
    public static func forRanges(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let threads = max(1, min(threadCount, count / max(1, minChunk)))
        if threads == 1 { body(0..<count); return }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                box.value((count * t / threads)..<(count * (t + 1) / threads))
            }
        }
    }
}

/// Carries a non-Sendable value into a concurrent region whose disjoint-access discipline the caller guarantees.
package struct UncheckedBox<T>: @unchecked Sendable {
    package let value: T
    package init(_ value: T) { self.value = value }
}
