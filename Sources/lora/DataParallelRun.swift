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

    /// Settings the ranks cannot split, refused in one sentence each.
    static func check(_ group: any DataParallelGroup, batchSize: Int, dropout: Float, examples: Int) throws {
        guard batchSize % group.size == 0 else {
            throw LoRAError("--batch-size \(batchSize) does not split over \(group.size) MPI ranks; give a multiple of \(group.size)")
        }
        // A rank with no sequence of a batch cannot draw that batch's dropout masks in step with the others.
        let last = examples % batchSize
        if dropout > 0 && last > 0 && last < group.size {
            throw LoRAError("with --dropout under mpirun every rank needs a sequence of each batch, but an epoch's last batch has \(last) of the \(examples) examples for \(group.size) ranks; use --dropout 0 or another --batch-size")
        }
    }
}
