import Foundation

/// Autoregressive decoding with a KV cache: the prompt runs once, then one token per step.
public struct Generator {
    public let model: LlamaModel

    public init(model: LlamaModel) { self.model = model }

    public struct Result: Sendable {
        public let tokens: [Int32]
        /// Why decoding ended: a stop token, the caller's stop, or the token limit.
        public let stoppedBy: String
        public let promptSeconds: Double
        public let generationSeconds: Double
    }

    /// Generates up to `maxTokens` tokens after `prompt`. `onToken` sees each new token and returns
    /// false to stop (for stop strings); a token in `stopTokens` ends decoding and is not returned.
    public func generate(prompt: [Int32], maxTokens: Int, sampling: SamplingSettings = SamplingSettings(),
                         stopTokens: Set<Int32> = [], onToken: (Int32) -> Bool = { _ in true }) throws -> Result {
        guard !prompt.isEmpty else { throw LoRAError("the prompt has no tokens") }
        let capacity = min(prompt.count + maxTokens, model.config.maxPositionEmbeddings)
        guard prompt.count < capacity else {
            throw LoRAError("the prompt's \(prompt.count) tokens fill the model's context of \(model.config.maxPositionEmbeddings)")
        }
        let cache = KVCache(model: model, capacity: capacity)
        var sampler = Sampler(sampling)
        var history = prompt, generated: [Int32] = []
        let t0 = DispatchTime.now().uptimeNanoseconds
        var logits = try model.forward(tokens: prompt, cache: cache)
        let t1 = DispatchTime.now().uptimeNanoseconds
        var reason = "max tokens"
        while generated.count < maxTokens {
            let token = logits.buffer.withMemoryRebound(to: Float.self) { sampler.next(logits: UnsafeBufferPointer($0), history: history) }
            if stopTokens.contains(token) { reason = "stop token"; break }
            generated.append(token)
            history.append(token)
            if !onToken(token) { reason = "stop string"; break }
            if generated.count == maxTokens || cache.length == cache.capacity { break }
            logits = try model.forward(tokens: [token], cache: cache)
        }
        if generated.count < maxTokens && cache.length == cache.capacity && reason == "max tokens" { reason = "context full" }
        let t2 = DispatchTime.now().uptimeNanoseconds
        return Result(tokens: generated, stoppedBy: reason, promptSeconds: Double(t1 - t0) / 1e9,
                      generationSeconds: Double(t2 - t1) / 1e9)
    }
}
