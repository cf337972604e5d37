import Foundation
import LoRAKit

/// `lora train` and `lora bench` under `mpirun -np N` (Open MPI): every rank reads the same global
/// batches and computes its share of each; rank 0 alone writes and prints. AdaLoRA's allocator runs on
/// the summed gradients on every rank alike; LoRA-Drop's probe runs whole on every rank (the same
/// selection), and rank 0 writes it.
enum DataParallelRun {
    /// The MPI job, when started by mpirun: its ranks on one machine share its cores (unless
    /// LORA_THREADS says otherwise), and ranks other than 0 print nothing on standard output.
    static func start() -> (any DataParallelGroup)? {
        guard let job = MPI.job else { return nil }
        if ProcessInfo.processInfo.environment["LORA_THREADS"] == nil {
            Parallel.threadCount = max(1, ProcessInfo.processInfo.activeProcessorCount / job.localSize)
        }
        if job.rank != 0 {
            let null = open("/dev/null", O_WRONLY)
            if null >= 0 { dup2(null, STDOUT_FILENO); close(null) }
        }
        return job
    }

    /// What data-parallel training does not cover yet, refused in one sentence each.
    static func check(_ group: any DataParallelGroup, batchSize: Int, dropout: Float) throws {
        guard batchSize % group.size == 0 else {
            throw LoRAError("--batch-size \(batchSize) does not split over \(group.size) MPI ranks; give a multiple of \(group.size)")
        }
        // Each rank would draw its rows' masks from the same generators: correlated, and not one process's masks.
        guard dropout == 0 else { throw LoRAError("--dropout does not run under mpirun yet (each rank would draw the same masks); use --dropout 0") }
    }
}
