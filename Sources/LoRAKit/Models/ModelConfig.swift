import Foundation

/// The hyperparameters of a Llama-family decoder, read from a Hugging Face `config.json`.
public struct ModelConfig: Sendable, Equatable {
    /// Architectures whose forward pass this engine computes exactly.
    public static let supportedArchitectures = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]

    public var architecture: String
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var ropeTheta: Float
    public var ropeScaling: Llama3RopeScaling?
    /// rope_scaling of type "linear": positions divided by this factor.
    public var ropeLinearFactor: Float?
    /// Per-frequency divisors from a GGUF's `rope_freqs.weight` (how llama.cpp stores Llama 3.1's scaling).
    public var ropeFrequencyFactors: [Float]?
    public var tieWordEmbeddings: Bool
    /// Biases on q/k/v projections (Qwen2 always; Llama with attention_bias).
    public var qkvBias: Bool
    /// Bias on o_proj (Llama with attention_bias).
    public var oBias: Bool
    public var mlpBias: Bool
    public var slidingWindow: Int?
    public var maxPositionEmbeddings: Int

    public init(architecture: String = "LlamaForCausalLM", hiddenSize: Int, intermediateSize: Int, numLayers: Int,
                numHeads: Int, numKVHeads: Int, headDim: Int? = nil, vocabSize: Int, rmsNormEps: Float = 1e-5,
                ropeTheta: Float = 10000, ropeScaling: Llama3RopeScaling? = nil, tieWordEmbeddings: Bool = false,
                qkvBias: Bool = false, oBias: Bool = false, mlpBias: Bool = false, slidingWindow: Int? = nil,
                maxPositionEmbeddings: Int = 2048) {
        self.architecture = architecture
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        // With no heads there is no head size to derive; `validate` refuses such a config.
        self.headDim = headDim ?? (numHeads > 0 ? hiddenSize / numHeads : 0)
        self.vocabSize = vocabSize
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.tieWordEmbeddings = tieWordEmbeddings
        self.qkvBias = qkvBias
        self.oBias = oBias
        self.mlpBias = mlpBias
        self.slidingWindow = slidingWindow
        self.maxPositionEmbeddings = maxPositionEmbeddings
    }

    /// SmolLM2-135M's shapes (the benchmark model).
    public static let smolLM2_135M = ModelConfig(
        hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKVHeads: 3, vocabSize: 49152,
        ropeTheta: 100000, tieWordEmbeddings: true, maxPositionEmbeddings: 8192)

    /// Parses `config.json` at `path`.
    public static func load(path: String) throws -> ModelConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoRAError("cannot read model config \(path)")
        }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LoRAError("\(path) is not a JSON object")
        }
        return try ModelConfig(json: json, source: path)
    }

    public init(json j: [String: Any], source: String) throws {
        let architecture = (j["architectures"] as? [String])?.first ?? "(none)"
        guard Self.supportedArchitectures.contains(architecture) else {
            throw LoRAError("\(source): architecture \(architecture) is not supported (supported: \(Self.supportedArchitectures.joined(separator: ", ")))")
        }
        func int(_ key: String) throws -> Int {
            guard let v = try optionalInt(key) else { throw LoRAError("\(source): missing or non-numeric \"\(key)\"") }
            return v
        }
        func optionalInt(_ key: String) throws -> Int? {
            guard let v = j[key], !(v is NSNull) else { return nil }
            guard let int = jsonInteger(v) else { throw LoRAError("\(source): \"\(key)\" must be an integer") }
            return int
        }
        func float(_ key: String, _ fallback: Float, in dict: [String: Any]? = nil) -> Float {
            ((dict ?? j)[key] as? NSNumber)?.floatValue ?? fallback
        }
        let hidden = try int("hidden_size"), heads = try int("num_attention_heads")
        // transformers ≥ 5 writes rope settings as "rope_parameters"; older configs use rope_theta/rope_scaling.
        let rope = (j["rope_parameters"] as? [String: Any]) ?? (j["rope_scaling"] as? [String: Any])
        let ropeType = (rope?["rope_type"] as? String) ?? (rope?["type"] as? String) ?? "default"
        let theta = float("rope_theta", float("rope_theta", 10000, in: j["rope_parameters"] as? [String: Any]))
        var llama3: Llama3RopeScaling? = nil
        var linearFactor: Float? = nil
        switch ropeType {
        case "default": break
        case "llama3":
            llama3 = Llama3RopeScaling(factor: float("factor", 8, in: rope), lowFreqFactor: float("low_freq_factor", 1, in: rope),
                                       highFreqFactor: float("high_freq_factor", 4, in: rope),
                                       originalMaxPositions: float("original_max_position_embeddings", 8192, in: rope))
        case "linear": linearFactor = float("factor", 1, in: rope)
        default:
            throw LoRAError("\(source): rope type \"\(ropeType)\" is not supported (supported: default, llama3, linear)")
        }
        let isQwen2 = architecture == "Qwen2ForCausalLM"
        let attentionBias = (j["attention_bias"] as? Bool) ?? false
        var window = try optionalInt("sliding_window")
        if isQwen2 && !((j["use_sliding_window"] as? Bool) ?? false) { window = nil }
        self.init(architecture: architecture, hiddenSize: hidden, intermediateSize: try int("intermediate_size"),
                  numLayers: try int("num_hidden_layers"), numHeads: heads,
                  numKVHeads: try optionalInt("num_key_value_heads") ?? heads,
                  headDim: try optionalInt("head_dim"), vocabSize: try int("vocab_size"),
                  rmsNormEps: float("rms_norm_eps", 1e-6), ropeTheta: theta, ropeScaling: llama3,
                  tieWordEmbeddings: (j["tie_word_embeddings"] as? Bool) ?? false,
                  qkvBias: isQwen2 || attentionBias, oBias: attentionBias && !isQwen2,
                  mlpBias: (j["mlp_bias"] as? Bool) ?? false, slidingWindow: window,
                  maxPositionEmbeddings: try optionalInt("max_position_embeddings") ?? 2048)
        ropeLinearFactor = linearFactor
        try validate(source: source)
    }

    // MARK: Validation

    /// Limits far above any released model's (Llama 3.1 405B: hidden 16,384, 126 layers, 128 heads,
    /// vocabulary 128,256) that keep every size computed from a config well inside Int.
    public static let maximumDimension = 1 << 20
    public static let maximumLayers = 4096
    public static let maximumHeads = 4096
    public static let maximumVocabulary = 1 << 24
    /// 2^40 (about 1.1 trillion) parameters.
    public static let maximumParameters = 1 << 40

    /// Checks every number against its meaning: sizes positive and bounded, heads dividing into KV
    /// groups, an even head size (RoPE rotates pairs), finite positive epsilon and rope settings, and
    /// a parameter count that fits. Both loaders call it; `keys` renames a config.json key in the
    /// messages to the file's own (a GGUF's metadata keys).
    public func validate(source: String, keys: [String: String] = [:]) throws {
        func key(_ name: String) -> String { keys[name] ?? name }
        func fail(_ name: String, _ value: Any, _ rule: String) -> LoRAError {
            LoRAError("\(source): \(key(name)) is \(value); it must be \(rule)")
        }
        func bounded(_ name: String, _ value: Int, _ range: ClosedRange<Int>) throws {
            guard range.contains(value) else {
                throw fail(name, value, range.upperBound == .max ? "at least \(range.lowerBound)" : "between \(range.lowerBound) and \(range.upperBound)")
            }
        }
        func positive(_ name: String, _ value: Float) throws {
            guard value.isFinite && value > 0 else { throw fail(name, value, "a finite number above 0") }
        }
        try bounded("hidden_size", hiddenSize, 1...Self.maximumDimension)
        try bounded("intermediate_size", intermediateSize, 1...Self.maximumDimension)
        try bounded("num_hidden_layers", numLayers, 1...Self.maximumLayers)
        try bounded("num_attention_heads", numHeads, 1...Self.maximumHeads)
        try bounded("num_key_value_heads", numKVHeads, 1...numHeads)
        guard numHeads % numKVHeads == 0 else {
            throw LoRAError("\(source): \(key("num_attention_heads")) \(numHeads) is not a multiple of \(key("num_key_value_heads")) \(numKVHeads)")
        }
        try bounded("head_dim", headDim, 2...Self.maximumDimension)
        guard headDim % 2 == 0 else { throw fail("head_dim", headDim, "even (rotary embeddings turn pairs of values)") }
        let (attentionWidth, overflow) = numHeads.multipliedReportingOverflow(by: headDim)
        guard !overflow && attentionWidth <= Self.maximumDimension else {
            throw LoRAError("\(source): \(key("num_attention_heads")) × \(key("head_dim")) = \(numHeads) × \(headDim) is more than \(Self.maximumDimension)")
        }
        try bounded("vocab_size", vocabSize, 1...Self.maximumVocabulary)
        try bounded("max_position_embeddings", maxPositionEmbeddings, 1...Int.max)
        if let slidingWindow { try bounded("sliding_window", slidingWindow, 1...Int.max) }
        try positive("rms_norm_eps", rmsNormEps)
        try positive("rope_theta", ropeTheta)
        if let s = ropeScaling {
            try positive("rope_scaling.factor", s.factor)
            try positive("rope_scaling.low_freq_factor", s.lowFreqFactor)
            try positive("rope_scaling.high_freq_factor", s.highFreqFactor)
            try positive("rope_scaling.original_max_position_embeddings", s.originalMaxPositions)
            guard s.lowFreqFactor < s.highFreqFactor else {
                throw fail("rope_scaling.high_freq_factor", s.highFreqFactor, "above low_freq_factor \(s.lowFreqFactor)")
            }
        }
        if let factor = ropeLinearFactor { try positive("rope_scaling.factor", factor) }
        if let factors = ropeFrequencyFactors {
            guard factors.count == headDim / 2 else {
                throw LoRAError("\(source): rope_freqs.weight has \(factors.count) values; the head size \(headDim) needs \(headDim / 2)")
            }
            if let bad = factors.first(where: { !($0.isFinite && $0 > 0) }) {
                throw fail("a value of rope_freqs.weight", bad, "a finite number above 0")
            }
        }
        guard let count = checkedParameterCount, count <= Self.maximumParameters else {
            throw LoRAError("\(source): the model's sizes make more than \(Self.maximumParameters) parameters")
        }
    }

    /// `parameterCount` with overflow-checked arithmetic; nil when it does not fit in Int.
    private var checkedParameterCount: Int? {
        func product(_ factors: Int...) -> Int? {
            var result = 1
            for f in factors {
                let (p, overflow) = result.multipliedReportingOverflow(by: f)
                if overflow { return nil }
                result = p
            }
            return result
        }
        func sum(_ terms: Int?...) -> Int? {
            var result = 0
            for t in terms {
                guard let t else { return nil }
                let (s, overflow) = result.addingReportingOverflow(t)
                if overflow { return nil }
                result = s
            }
            return result
        }
        guard let q = product(numHeads, headDim), let kv = product(numKVHeads, headDim) else { return nil }
        let d = hiddenSize, f = intermediateSize
        guard let perLayer = sum(product(2, d, q), product(2, d, kv), product(3, d, f), product(2, d),
                                 qkvBias ? sum(q, product(2, kv)) : 0, oBias ? d : 0, mlpBias ? sum(product(2, f), d) : 0)
        else { return nil }
        return sum(product(vocabSize, d, tieWordEmbeddings ? 1 : 2), product(numLayers, perLayer), d)
    }

    /// Parameter count of the base model.
    public var parameterCount: Int {
        let q = numHeads * headDim, kv = numKVHeads * headDim, d = hiddenSize, f = intermediateSize
        var perLayer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d
        if qkvBias { perLayer += q + 2 * kv }
        if oBias { perLayer += d }
        if mlpBias { perLayer += 2 * f + d }
        return vocabSize * d * (tieWordEmbeddings ? 1 : 2) + numLayers * perLayer + d
    }
}
