/// Keys and values of every block for the tokens seen so far, so that decoding a new token costs
/// one row of work instead of re-running the whole sequence. Keys are stored after RoPE.
public final class KVCache: @unchecked Sendable {
    public let capacity: Int
    public private(set) var length = 0
    let keys: [Tensor]
    let values: [Tensor]
    let cos: [Float], sin: [Float]

    public init(model: LlamaModel, capacity: Int) {
        let kv = model.config.numKVHeads * model.config.headDim
        self.capacity = capacity
        keys = (0..<model.config.numLayers).map { _ in Tensor(shape: [capacity, kv]) }
        values = (0..<model.config.numLayers).map { _ in Tensor(shape: [capacity, kv]) }
        (cos, sin) = model.rope.tables(length: capacity)
    }

    /// Forgets every cached position (the buffers are reused).
    public func reset() { length = 0 }

    func advance(by n: Int) { length += n }
}
