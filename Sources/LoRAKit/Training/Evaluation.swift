import Foundation

extension LlamaModel {
    /// Mean cross-entropy per predicted token over a data set (each example its own sequence, in
    /// batches of `batchSize`; the first `maxBatches` batches only, when given), and the token count.
    public func evaluate(_ set: DataSet, batchSize: Int, padId: Int32, maxBatches: Int? = nil) throws -> (loss: Double, tokens: Int) {
        var total = 0.0, count = 0
        for (i, batch) in set.batches(size: batchSize, padId: padId).enumerated() {
            if let maxBatches, i >= maxBatches { break }
            let (loss, n) = try self.loss(batch)
            total += loss * Double(n)
            count += n
        }
        return (count == 0 ? 0 : total / Double(count), count)
    }
}
