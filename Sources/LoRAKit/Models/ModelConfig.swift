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
        self.headDim = headDim ?? hiddenSize / numHeads
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
            guard let v = j[key] as? NSNumber else { throw LoRAError("\(source): missing or non-numeric \"\(key)\"") }
            return v.intValue
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
        var window: Int? = (j["sliding_window"] as? NSNumber)?.intValue
        if isQwen2 && !((j["use_sliding_window"] as? Bool) ?? false) { window = nil }
        self.init(architecture: architecture, hiddenSize: hidden, intermediateSize: try int("intermediate_size"),
                  numLayers: try int("num_hidden_layers"), numHeads: heads,
                  numKVHeads: (j["num_key_value_heads"] as? NSNumber)?.intValue ?? heads,
                  headDim: (j["head_dim"] as? NSNumber)?.intValue, vocabSize: try int("vocab_size"),
                  rmsNormEps: float("rms_norm_eps", 1e-6), ropeTheta: theta, ropeScaling: llama3,
                  tieWordEmbeddings: (j["tie_word_embeddings"] as? Bool) ?? false,
                  qkvBias: isQwen2 || attentionBias, oBias: attentionBias && !isQwen2,
                  mlpBias: (j["mlp_bias"] as? Bool) ?? false, slidingWindow: window,
                  maxPositionEmbeddings: (j["max_position_embeddings"] as? NSNumber)?.intValue ?? 2048)
        ropeLinearFactor = linearFactor
        guard numHeads % numKVHeads == 0 else {
            throw LoRAError("\(source): num_attention_heads \(numHeads) is not a multiple of num_key_value_heads \(numKVHeads)")
        }
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
