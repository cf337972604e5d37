import Foundation

/// The processes a data-parallel run is spread over: each computes the gradients of its share of
/// every global batch, and sums make them one process's gradients (MPI under `mpirun`).
public protocol DataParallelGroup: AnyObject, Sendable {
    var rank: Int { get }
    var size: Int { get }
    /// Replaces each value by its sum over every rank.
    func sum(_ values: UnsafeMutableBufferPointer<Float>) throws
    func sum(_ values: UnsafeMutableBufferPointer<Double>) throws
}

extension DataParallelGroup {
    /// Whether any rank says yes (a stop request seen on one rank stops them all at the same step).
    public func any(_ flag: Bool) throws -> Bool {
        var value: [Double] = [flag ? 1 : 0]
        try value.withUnsafeMutableBufferPointer { try sum($0) }
        return value[0] > 0
    }

    /// Waits until every rank gets here.
    public func barrier() throws { _ = try any(false) }
}

extension Batch {
    /// This rank's share of the batch: its contiguous run of sequences, rows size·rank/size ..< the next
    /// rank's first (equal shares when the ranks divide the batch; an epoch's short last batch splits
    /// as evenly as it can, and a rank may get none).
    public func share(rank: Int, of size: Int) -> Batch {
        precondition(size >= 1 && (0..<size).contains(rank), "rank \(rank) of \(size)")
        let first = batchSize * rank / size, end = batchSize * (rank + 1) / size
        let from = first * seqLen, to = end * seqLen
        return Batch(batchSize: end - first, seqLen: seqLen, tokens: Array(tokens[from..<to]), targets: Array(targets[from..<to]))
    }
}
