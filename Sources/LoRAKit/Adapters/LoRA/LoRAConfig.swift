import Foundation

/// A LoRA adapter's settings with PEFT's names, defaults and meaning (`LoraConfig`).
public struct LoRAConfig: AdapterConfiguration, Equatable {
    public static let peftType = "LORA"
    public var methodName: String { useDoRA ? "DoRA" : "LoRA" }

    public var r: Int = 8
    public var loraAlpha: Float = 8
    public var loraDropout: Float = 0
    public var targetModules: TargetModules = .names(["q_proj", "v_proj"])
    public var useRSLoRA = false
    /// DoRA: a trainable magnitude per output row on top of the low-rank update (PEFT's `use_dora`).
    public var useDoRA = false
    public var initialization: LoRAInit = .kaiming
    /// Only blocks with these indices are adapted (PEFT's `layers_to_transform`); nil means all.
    public var layersToTransform: [Int]? = nil
    /// Per-module rank and alpha overrides: a key matches a module path that ends in it (regex allowed).
    public var rankPattern: [String: Int] = [:]
    public var alphaPattern: [String: Float] = [:]
    public var baseModelNameOrPath: String? = nil

    public init(r: Int = 8, loraAlpha: Float = 8, loraDropout: Float = 0, targetModules: TargetModules = .names(["q_proj", "v_proj"]),
                useRSLoRA: Bool = false, useDoRA: Bool = false, initialization: LoRAInit = .kaiming, layersToTransform: [Int]? = nil,
                rankPattern: [String: Int] = [:], alphaPattern: [String: Float] = [:]) {
        self.r = r
        self.loraAlpha = loraAlpha
        self.loraDropout = loraDropout
        self.targetModules = targetModules
        self.useRSLoRA = useRSLoRA
        self.useDoRA = useDoRA
        self.initialization = initialization
        self.layersToTransform = layersToTransform
        self.rankPattern = rankPattern
        self.alphaPattern = alphaPattern
    }

    public func rank(path: String) -> Int { patternValue(rankPattern, path) ?? r }
    public func alpha(path: String) -> Float { patternValue(alphaPattern, path) ?? loraAlpha }

    /// PEFT's `get_pattern_key`: the key matches when the path ends in it, after a dot or whole.
    /// (PEFT takes the first match in the file's key order; keys are tried here in sorted order.)
    private func patternValue<V>(_ pattern: [String: V], _ path: String) -> V? {
        for key in pattern.keys.sorted() where fullMatch("(.*\\.)?(\(key))", path) { return pattern[key] }
        return nil
    }
    /// A is [r × in] and B [out × r]; DoRA adds m [out].
    public func parameterCount(site: LinearSite) -> Int? {
        let (width, o1) = site.linear.inFeatures.addingReportingOverflow(site.linear.outFeatures)
        let (count, o2) = rank(path: site.path).multipliedReportingOverflow(by: width)
        let (total, o3) = count.addingReportingOverflow(useDoRA ? site.linear.outFeatures : 0)
        return o1 || o2 || o3 ? nil : total
    }

    /// PiSSA and OLoRA also replace each targeted layer's W by the residual they leave (as PEFT does).
    public func makeAdapters(sites: [LinearSite], keyPrefix: String, random: inout SeededRandom) -> SiteAdapters {
        SiteAdapters(sites.map { site in
            let lora = LoRA(inFeatures: site.linear.inFeatures, outFeatures: site.linear.outFeatures,
                            rank: rank(path: site.path), alpha: alpha(path: site.path), rsLoRA: useRSLoRA, dropout: loraDropout,
                            initialization: initialization, name: keyPrefix + site.path, random: &random)
            if initialization.isDataDriven {
                site.linear.replaceWeight(lora.initialize(from: site.linear.weight, method: initialization, random: &random))
            }
            return useDoRA ? DoRA(lora: lora, layer: site.linear, name: keyPrefix + site.path) : lora
        })
    }
}

// MARK: adapter_config.json

extension LoRAConfig {
    /// Reads PEFT's `adapter_config.json` of a LoRA adapter.
    public static func load(path: String) throws -> LoRAConfig {
        let config = try AdapterMethods.loadConfig(path: path)
        guard let lora = config as? LoRAConfig else {
            throw LoRAError("\(path): peft_type \(type(of: config).peftType) is not LORA")
        }
        return lora
    }

    /// A parsed adapter_config.json whose peft_type is LORA. LoRA options this engine does not
    /// implement (DoRA, bias training, fan_in_fan_out) are refused by name.
    public init(adapterConfigFile j: [String: Any], path: String) throws {
        if let bias = j["bias"] as? String, bias != "none" { throw LoRAError("\(path): bias \"\(bias)\" is not supported (only \"none\")") }
        if j["fan_in_fan_out"] as? Bool == true { throw LoRAError("\(path): fan_in_fan_out is only for GPT-2 Conv1D layers, which Llama-family models do not have") }
        if let m = j["modules_to_save"] as? [Any], !m.isEmpty { throw LoRAError("\(path): modules_to_save is not supported") }
        if j["lora_bias"] as? Bool == true { throw LoRAError("\(path): lora_bias is not supported") }
        // These inits change the base weight in ways that cannot be redone here (quantization, data);
        // the adapter only fits PEFT's changed base.
        if let initName = j["init_lora_weights"] as? String,
           ["corda", "loftq"].contains(initName) {
            throw LoRAError("\(path): init_lora_weights \(initName) changed the base model in PEFT; save the adapter with path_initial_model_for_weight_conversion to use it with the original base")
        }
        try self.init(adapterConfig: j, path: path)
    }

    /// The settings of a parsed `adapter_config.json`, without refusing the options this engine does
    /// not implement (`load` refuses them; `AdapterSummary` only describes the adapter).
    public init(adapterConfig j: [String: Any], path: String) throws {
        var c = LoRAConfig()
        func integer(_ value: Any, _ name: String) throws -> Int {
            guard let int = jsonInteger(value) else { throw LoRAError("\(path): \(name) must be an integer") }
            return int
        }
        func number(_ value: Any, _ name: String) throws -> Float {
            guard let n = value as? NSNumber, jsonInteger(value) != nil || String(cString: n.objCType) == "d" else {
                throw LoRAError("\(path): \(name) must be a number")
            }
            return n.floatValue
        }
        if let r = j["r"] { c.r = try integer(r, "r") }
        if let a = j["lora_alpha"] { c.loraAlpha = try number(a, "lora_alpha") }
        if let d = j["lora_dropout"] { c.loraDropout = try number(d, "lora_dropout") }
        if let s = j["use_rslora"] as? Bool { c.useRSLoRA = s }
        if let d = j["use_dora"] as? Bool { c.useDoRA = d }
        c.targetModules = try TargetModules(adapterConfig: j["target_modules"], path: path)
        switch j["init_lora_weights"] {
        case let b as Bool: c.initialization = b ? .kaiming : .none
        case let s as String where LoRAInit(name: s) != nil: c.initialization = LoRAInit(name: s)!
        case nil: break
        default: break  // data-driven inits (pissa, olora, ...) only matter before training; the weights are in the file
        }
        c.layersToTransform = try layersToTransformValue(j["layers_to_transform"], path: path)
        if let p = j["rank_pattern"] as? [String: Any] {
            c.rankPattern = try p.mapValues { try integer($0, "rank_pattern") }
        }
        if let p = j["alpha_pattern"] as? [String: Any] {
            c.alphaPattern = try p.mapValues { try number($0, "alpha_pattern") }
        }
        c.baseModelNameOrPath = j["base_model_name_or_path"] as? String
        try c.validate(source: path)
        self = c
    }

    /// The largest rank accepted: the hidden size of a 70B model, far above any useful rank (one
    /// beyond the layer's width adds nothing), and small enough that the rank × rank products
    /// `lora inspect` forms stay under 1 GiB.
    public static let maximumRank = 8192

    /// Checks the numbers a config holds: r and every rank_pattern value in 1...maximumRank, alphas
    /// finite and positive, dropout in [0, 1).
    public func validate(source: String) throws {
        func rankOK(_ r: Int) -> Bool { (1...Self.maximumRank).contains(r) }
        func alphaOK(_ a: Float) -> Bool { a.isFinite && a > 0 }
        guard rankOK(r) else { throw LoRAError("\(source): r must be positive and at most \(Self.maximumRank) (got \(r))") }
        if let (key, bad) = rankPattern.sorted(by: { $0.key < $1.key }).first(where: { !rankOK($0.value) }) {
            throw LoRAError("\(source): rank_pattern[\(String(reflecting: key))] must be positive and at most \(Self.maximumRank) (got \(bad))")
        }
        guard alphaOK(loraAlpha) else { throw LoRAError("\(source): lora_alpha must be a finite number above 0 (got \(loraAlpha))") }
        if let (key, bad) = alphaPattern.sorted(by: { $0.key < $1.key }).first(where: { !alphaOK($0.value) }) {
            throw LoRAError("\(source): alpha_pattern[\(String(reflecting: key))] must be a finite number above 0 (got \(bad))")
        }
        if initialization.isDataDriven && useDoRA {
            throw LoRAError("\(source): init_lora_weights \(initialization.name) with use_dora is not supported")
        }
        guard (0..<1).contains(loraDropout) else {
            throw LoRAError("\(source): lora_dropout must be at least 0 and below 1 (got \(loraDropout))")
        }

    }

    /// The JSON PEFT 0.21 writes for this config: every key of `LoraConfig`, sorted, indented by 2.
    public func json() throws -> Data { try adapterConfigJSON(jsonDictionary) }

    /// Every key of PEFT's `LoraConfig` with this config's values (AdaLoRA's config extends it).
    var jsonDictionary: [String: Any] {
        let initValue: Any
        switch initialization {
        case .kaiming: initValue = true
        case .none: initValue = false
        default: initValue = initialization.name
        }
        let null = NSNull()
        let dict: [String: Any] = [
            "alora_invocation_tokens": null, "alpha_pattern": alphaPattern.mapValues { Double($0) },
            "arrow_config": null, "auto_mapping": null, "base_model_name_or_path": baseModelNameOrPath ?? null,
            "bias": "none", "corda_config": null, "ensure_weight_tying": false, "eva_config": null,
            "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": initValue,
            "kasa_config": null, "layer_replication": null, "layers_pattern": null,
            "layers_to_transform": layersToTransform ?? null, "loftq_config": [String: Any](),
            "lora_alpha": Double(loraAlpha), "lora_bias": false, "lora_dropout": Double(loraDropout),
            "lora_ga_config": null, "megatron_config": null, "megatron_core": "megatron.core",
            "modules_to_save": null, "monteclora_config": null, "peft_type": "LORA", "peft_version": "0.21.2",
            "qalora_group_size": 16, "r": r, "rank_pattern": rankPattern, "revision": null,
            "target_modules": targetModules.jsonValue, "target_parameters": null, "task_type": "CAUSAL_LM",
            "trainable_token_indices": null, "use_bdlora": null, "use_dora": useDoRA, "use_qalora": false,
            "use_rslora": useRSLoRA, "velora_config": null,
        ]
        return dict
    }
}
