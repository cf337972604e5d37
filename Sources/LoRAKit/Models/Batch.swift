/// A batch of right-padded token sequences and, per position, the token to predict next
/// (`ignoreIndex` where nothing is predicted: padding, masked prompts, the last position).
public struct Batch: Sendable {
    public static let ignoreIndex: Int32 = -100

    public let batchSize: Int
    public let seqLen: Int
    /// [batchSize × seqLen] token ids, row-major.
    public var tokens: [Int32]
    /// [batchSize × seqLen] next-token targets, `ignoreIndex` where no loss is taken.
    public var targets: [Int32]
    /// Tokens of the sequences themselves, padding excluded (all positions unless the maker says otherwise).
    public var tokenCount: Int

    public init(batchSize: Int, seqLen: Int, tokens: [Int32], targets: [Int32]) {
        precondition(tokens.count == batchSize * seqLen && targets.count == tokens.count, "batch shape mismatch")
        self.batchSize = batchSize
        self.seqLen = seqLen
        self.tokens = tokens
        self.targets = targets
        tokenCount = tokens.count
    }

    /// From Hugging Face-style `labels` (aligned with the inputs, −100 where ignored): position t
    /// predicts labels[t + 1], as transformers' causal-LM loss shifts them.
    public init(batchSize: Int, seqLen: Int, inputIds: [Int32], labels: [Int32]) {
        var targets = [Int32](repeating: Batch.ignoreIndex, count: labels.count)
        for b in 0..<batchSize {
            for t in 0..<(seqLen - 1) { targets[b * seqLen + t] = labels[b * seqLen + t + 1] }
        }
        self.init(batchSize: batchSize, seqLen: seqLen, tokens: inputIds, targets: targets)
    }

    /// Number of positions that contribute to the loss.
    public var targetCount: Int { targets.reduce(0) { $0 + ($1 == Batch.ignoreIndex ? 0 : 1) } }
}
