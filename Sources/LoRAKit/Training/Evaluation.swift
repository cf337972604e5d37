import Foundation

extension LlamaModel {
    /// Mean cross-entropy per predicted token over a data set (each example its own sequence, in
    /// batches of `batchSize`; the first `maxBatches` batches only, when given), and the token count.
    /// With a data-parallel group each rank evaluates every size-th batch and the sums are shared.
    public func evaluate(_ set: DataSet, batchSize: Int, padId: Int32, maxBatches: Int? = nil,
                         group: (any DataParallelGroup)? = nil) throws -> (loss: Double, tokens: Int) {
        var sums = [0.0, 0.0]  // Σ loss × tokens, Σ tokens
        for (i, batch) in set.batches(size: batchSize, padId: padId).enumerated() {
            if let maxBatches, i >= maxBatches { break }
            if let group, i % group.size != group.rank { continue }
            let (loss, n) = try self.loss(batch)
            sums[0] += loss * Double(n)
            sums[1] += Double(n)
        }
        if let group { try sums.withUnsafeMutableBufferPointer { try group.sum($0) } }
        return (sums[1] == 0 ? 0 : sums[0] / sums[1], Int(sums[1]))
    }
}
