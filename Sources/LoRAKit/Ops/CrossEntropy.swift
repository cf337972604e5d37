import Foundation

/// Softmax cross-entropy over rows of logits, with its gradient, for the rows that have a target.
public enum CrossEntropy {
    /// For each of `rows` rows of `vocab` logits: returns Σ (logsumexp − logit[target]) and
    /// overwrites the logits with gradScale · (softmax − onehot(target)) when `gradScale` is
    /// non-nil, or with unnormalized probabilities when it is nil.
    public static func forwardBackward(logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
                                       rows: Int, vocab: Int, gradScale: Float?) -> Double {
        let losses = UnsafeMutablePointer<Double>.allocate(capacity: rows)
        defer { losses.deallocate() }
        Parallel.forRanges(rows) { range in
            for r in range {
                let row = logits + r * vocab, target = Int(targets[r])
                let mx = rowMax(row, count: vocab), targetLogit = row[target]
                let sum = expShiftedSum(row, count: vocab, shift: mx)  // row now holds exp(logit − max)
                losses[r] = Double(mx + log(sum) - targetLogit)
                if let g = gradScale {
                    scaleRow(row, count: vocab, by: g / sum)
                    row[target] -= g
                }
            }
        }
        var total = 0.0
        for r in 0..<rows { total += losses[r] }
        return total
    }
}

/// Token embedding lookup: out[n] = table[ids[n]]. The table is frozen, so there is no backward.
public enum Embedding {
    public static func forward(table: FrozenMatrix, ids: UnsafePointer<Int32>, count: Int,
                               out: UnsafeMutablePointer<Float>) {
        let dim = table.columns
        switch table.storage {
        case .dense(let t):
            Parallel.forRanges(count, minChunk: 64) { range in
                for n in range { (out + n * dim).update(from: t.data + Int(ids[n]) * dim, count: dim) }
            }
        case .packed(let p):
            Parallel.forRanges(count, minChunk: 64) { range in
                for n in range { p.unpack(rows: Int(ids[n])..<(Int(ids[n]) + 1), into: out + n * dim) }
            }
        }
    }
}
