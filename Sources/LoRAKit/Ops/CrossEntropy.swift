import Foundation

/// Softmax cross-entropy over rows of logits, with its gradient, for the rows that have a target.
public enum CrossEntropy {
    /// For each of `rows` rows of `vocab` logits: returns Σ (logsumexp − logit[target]) and, when
    /// `gradScale` is non-nil, overwrites the logits with gradScale · (softmax − onehot(target)).
    public static func forwardBackward(logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
                                       rows: Int, vocab: Int, gradScale: Float?) -> Double {
        let losses = UnsafeMutablePointer<Double>.allocate(capacity: rows)
        defer { losses.deallocate() }
        Parallel.forRanges(rows) { range in
            for r in range {
                let row = logits + r * vocab, target = Int(targets[r])
                var mx = -Float.infinity
                for j in 0..<vocab { mx = max(mx, row[j]) }
                var sum: Float = 0
                for j in 0..<vocab { sum += exp(row[j] - mx) }
                let lse = mx + log(sum)
                losses[r] = Double(lse - row[target])
                if let g = gradScale {
                    for j in 0..<vocab { row[j] = g * exp(row[j] - lse) }
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
    public static func forward(table: UnsafePointer<Float>, ids: UnsafePointer<Int32>, count: Int, dim: Int,
                               out: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(count, minChunk: 64) { range in
            for n in range { (out + n * dim).update(from: table + Int(ids[n]) * dim, count: dim) }
        }
    }
}
