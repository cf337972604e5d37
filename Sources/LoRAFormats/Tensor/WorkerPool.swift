import Foundation
import Synchronization

/// `Parallel`'s threads: persistent workers that, between jobs, spin a short while before they sleep.
/// Token-by-token generation runs a few hundred small parallel products per token, each a few tens
/// of microseconds; waking Dispatch's sleeping workers for each cost more than the products on two
/// cores (measured: 2 threads generated slower than 1). llama.cpp's thread pool spins the same way.
/// A job is split into parts; part 0 runs on the calling thread, part p on worker p − 1.
@available(macOS 15.0, *)
final class WorkerPool: @unchecked Sendable {
    /// How long an idle worker spins before it sleeps: longer than the gaps between a decoding step's
    /// products, short enough that an idle process stops using the CPU at once.
    static let spinNanoseconds: UInt64 = 200_000

    let workers: Int
    /// Bumped for every job; workers run a job when they see it change.
    private let generation = Atomic<Int>(0)
    /// Workers still running the current job.
    private let remaining = Atomic<Int>(0)
    /// Workers sleeping on `condition` (they check `generation` again after counting themselves).
    private let sleepers = Atomic<Int>(0)
    /// Whether a caller holds the pool; a second caller (a nested or concurrent job) runs on Dispatch.
    private let busy = Atomic<Bool>(false)
    private let condition = NSCondition()
    /// The current job and its part count: written before `generation` is bumped, read after.
    nonisolated(unsafe) private var job: ((Int) -> Void)? = nil
    nonisolated(unsafe) private var parts = 0

    init(workers: Int) {
        self.workers = workers
        for index in 0..<workers {
            let thread = Thread { [unowned self] in work(part: index + 1) }
            thread.name = "LoRAKit worker \(index + 1)"
            thread.start()
        }
    }

    /// Runs body(p) for every p in 0..<parts (at most workers + 1), returning when all are done; false,
    /// running nothing, when the pool is in use.
    func run(parts: Int, _ body: (Int) -> Void) -> Bool {
        precondition(parts >= 1 && parts <= workers + 1, "WorkerPool: \(parts) parts for \(workers) workers")
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { body in
            job = body
            self.parts = parts
            remaining.store(workers, ordering: .sequentiallyConsistent)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock()
                condition.broadcast()
                condition.unlock()
            }
            body(0)
            while remaining.load(ordering: .acquiring) > 0 {}
            job = nil
        }
        return true
    }

    private func work(part: Int) {
        var seen = 0
        while true {
            let start = DispatchTime.now().uptimeNanoseconds
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                guard spins % 256 == 0, DispatchTime.now().uptimeNanoseconds - start > Self.spinNanoseconds else { continue }
                condition.lock()
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen { condition.wait() }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                condition.unlock()
            }
            seen = generation.load(ordering: .acquiring)
            if part < parts, let job { job(part) }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}
