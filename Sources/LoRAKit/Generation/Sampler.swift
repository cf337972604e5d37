import Foundation

/// How the next token is chosen, with transformers' `generate` meanings. temperature 0 is greedy.
public struct SamplingSettings: Sendable, Equatable {
    public var temperature: Float = 0
    /// Keep the smallest set of tokens whose probability reaches top_p (1 disables).
    public var topP: Float = 1
    /// Keep the k most likely tokens (0 disables).
    public var topK: Int = 0
    /// Drop tokens less likely than min_p × the most likely one's probability (0 disables).
    public var minP: Float = 0
    /// Divide positive (multiply negative) logits of tokens already in the sequence (1 disables).
    public var repetitionPenalty: Float = 1
    public var seed: UInt64 = 0

    public init(temperature: Float = 0, topP: Float = 1, topK: Int = 0, minP: Float = 0,
                repetitionPenalty: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.seed = seed
    }

    public var isGreedy: Bool { temperature <= 0 }
}

/// Picks tokens from logits: the repetition penalty, then temperature, top-k, top-p and min-p in
/// the order transformers applies its logits processors, then a draw from the seeded generator.
public struct Sampler: Sendable {
    public let settings: SamplingSettings
    private var random: SeededRandom

    public init(_ settings: SamplingSettings) {
        self.settings = settings
        self.random = SeededRandom(seed: settings.seed)
    }

    /// The next token, given the logits of the last position and the sequence so far.
    public mutating func next(logits: UnsafeBufferPointer<Float>, history: [Int32]) -> Int32 {
        var scores = Array(logits)
        let s = settings
        if s.repetitionPenalty != 1 {
            for t in Set(history) {
                let i = Int(t)
                scores[i] = scores[i] < 0 ? scores[i] * s.repetitionPenalty : scores[i] / s.repetitionPenalty
            }
        }
        if s.isGreedy { return Int32(Self.argmax(scores)) }
        for i in scores.indices { scores[i] /= s.temperature }
        // Candidates sorted by score, best first; each filter keeps a prefix.
        var order = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        if s.topK > 0 && s.topK < order.count {
            let kth = scores[order[s.topK - 1]]
            order = order.filter { scores[$0] >= kth }  // ties with the k-th survive, as in transformers
        }
        var probs = Self.softmax(order.map { scores[$0] })
        if s.topP < 1 {
            // transformers removes tokens whose ascending cumulative probability is ≤ 1 − top_p.
            var cumulative: Float = 0, removeBelow = order.count
            for j in stride(from: order.count - 1, through: 1, by: -1) {
                cumulative += probs[j]
                if cumulative <= 1 - s.topP { removeBelow = j } else { break }
            }
            order = Array(order[..<removeBelow])
            probs = Self.softmax(order.map { scores[$0] })
        }
        if s.minP > 0 {
            let threshold = s.minP * probs[0]
            let keep = max(1, probs.firstIndex { $0 < threshold } ?? probs.count)
            order = Array(order[..<keep])
            probs = Self.softmax(order.map { scores[$0] })
        }
        let u = Float(Double(random.next() >> 11) * 0x1p-53)
        var cumulative: Float = 0
        for (j, p) in probs.enumerated() {
            cumulative += p
            if u < cumulative { return Int32(order[j]) }
        }
        return Int32(order[order.count - 1])
    }

    static func argmax(_ v: [Float]) -> Int {
        var best = 0
        for i in v.indices where v[i] > v[best] { best = i }
        return best
    }

    static func softmax(_ v: [Float]) -> [Float] {
        let m = v.max() ?? 0
        let e = v.map { Foundation.exp($0 - m) }
        let sum = e.reduce(0, +)
        return e.map { $0 / sum }
    }
}
