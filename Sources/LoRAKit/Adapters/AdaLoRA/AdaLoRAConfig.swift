import Foundation

/// An AdaLoRA adapter's settings with PEFT's names, defaults and meaning (`AdaLoraConfig`, which
/// extends `LoraConfig`; its `r` is ignored). The rank schedule: every site starts with `initR`
/// triplets; after `tinit` warm-up steps the total budget falls on a cubic from Σ init_r to
/// `targetR` × sites at step `totalStep` − `tfinal`, re-allocated every `deltaT` steps.
public struct AdaLoRAConfig: AdapterConfiguration, Equatable {
    public static let peftType = "ADALORA"
    public var methodName: String { "AdaLoRA" }

    public var initR = 12
    /// The average rank the budget ends at.
    public var targetR = 8
    public var loraAlpha: Float = 8
    public var loraDropout: Float = 0
    public var targetModules: TargetModules = .names(["q_proj", "v_proj"])
    public var layersToTransform: [Int]? = nil
    public var tinit = 0
    public var tfinal = 0
    public var deltaT = 1
    /// The smoothing of the sensitivity (β1) and of its uncertainty (β2).
    /// Doubles, as PEFT's Python floats: 1 − β is formed in double precision before the Float32 products.
    public var beta1 = 0.85
    public var beta2 = 0.85
    public var orthRegWeight: Float = 0.5
    /// The run's length, which the schedule needs (PEFT requires it).
    public var totalStep: Int? = nil
    /// Which triplets each site kept, keyed by the site path (PEFT: "PATH.lora_E"); set by training
    /// and saved, nil while every site holds `initR` triplets.
    public var rankPattern: [String: [Bool]]? = nil
    public var baseModelNameOrPath: String? = nil

    public init(initR: Int = 12, targetR: Int = 8, loraAlpha: Float = 8, loraDropout: Float = 0,
                targetModules: TargetModules = .names(["q_proj", "v_proj"]), tinit: Int = 0, tfinal: Int = 0, deltaT: Int = 1,
                totalStep: Int? = nil) {
        self.initR = initR
        self.targetR = targetR
        self.loraAlpha = loraAlpha
        self.loraDropout = loraDropout
        self.targetModules = targetModules
        self.tinit = tinit
        self.tfinal = tfinal
        self.deltaT = deltaT
        self.totalStep = totalStep
    }

    public func validate(source: String) throws {
        guard (1...LoRAConfig.maximumRank).contains(initR) else {
            throw LoRAError("\(source): init_r must be positive and at most \(LoRAConfig.maximumRank) (got \(initR))")
        }
        guard (1...initR).contains(targetR) else { throw LoRAError("\(source): target_r must be between 1 and init_r = \(initR) (got \(targetR))") }
        guard loraAlpha.isFinite else { throw LoRAError("\(source): lora_alpha must be a finite number (got \(loraAlpha))") }
        guard (0..<1).contains(loraDropout) else {
            throw LoRAError("\(source): lora_dropout must be at least 0 and below 1 (got \(loraDropout))")
        }
        let steps = 0...TrainingSettings.maximumSteps
        guard steps.contains(tinit), steps.contains(tfinal) else {
            throw LoRAError("\(source): tinit and tfinal must be between 0 and \(TrainingSettings.maximumSteps) (got \(tinit) and \(tfinal))")
        }
        guard (1...TrainingSettings.maximumSteps).contains(deltaT) else {
            throw LoRAError("\(source): deltaT must be between 1 and \(TrainingSettings.maximumSteps) (got \(deltaT))")
        }
        for (name, beta) in [("beta1", beta1), ("beta2", beta2)] where !(beta > 0 && beta < 1) {
            throw LoRAError("\(source): \(name) must be above 0 and below 1 (got \(beta))")
        }
        guard orthRegWeight.isFinite && orthRegWeight > 0 else {
            throw LoRAError("\(source): orth_reg_weight must be a finite number above 0 (got \(orthRegWeight))")
        }
        if let totalStep {
            guard (1...TrainingSettings.maximumSteps).contains(totalStep) else {
                throw LoRAError("\(source): total_step must be between 1 and \(TrainingSettings.maximumSteps) (got \(totalStep))")
            }
            guard tinit < totalStep - tfinal else {
                throw LoRAError("\(source): tinit (\(tinit)) must be below total_step − tfinal (\(totalStep) − \(tfinal)): the budget needs steps to fall in")
            }
        }
        for (key, kept) in rankPattern ?? [:] where kept.count != initR {
            throw LoRAError("\(source): rank_pattern[\(String(reflecting: key))] has \(kept.count) entries, not init_r = \(initR)")
        }
    }

    /// The triplets the saved file holds for `path`: the kept ones of its rank pattern, else init_r.
    public func rank(path: String) -> Int {
        rankPattern?[path].map { $0.filter { $0 }.count } ?? initR
    }

    /// Q [r × in], Λ [r] and P [out × r].
    public func parameterCount(site: LinearSite) -> Int? {
        let (width, o1) = site.linear.inFeatures.addingReportingOverflow(site.linear.outFeatures + 1)
        let (count, o2) = rank(path: site.path).multipliedReportingOverflow(by: width)
        return o1 || o2 ? nil : count
    }

    public func makeAdapters(sites: [LinearSite], keyPrefix: String, random: inout SeededRandom) throws -> SiteAdapters {
        if let pattern = rankPattern, let stray = pattern.keys.sorted().first(where: { key in !sites.contains { $0.path == key } }) {
            throw LoRAError("the AdaLoRA rank_pattern names \(stray), which is not a targeted layer of this model")
        }
        return SiteAdapters(sites.map { site in
            AdaLoRA(inFeatures: site.linear.inFeatures, outFeatures: site.linear.outFeatures, rank: rank(path: site.path),
                    initialRank: initR, alpha: loraAlpha, dropout: loraDropout, name: keyPrefix + site.path, random: &random)
        })
    }
}

// MARK: adapter_config.json

extension AdaLoRAConfig {
    /// A parsed adapter_config.json whose peft_type is ADALORA.
    public init(adapterConfigFile j: [String: Any], path: String) throws {
        if let bias = j["bias"] as? String, bias != "none" { throw LoRAError("\(path): bias \"\(bias)\" is not supported (only \"none\")") }
        if let m = j["modules_to_save"] as? [Any], !m.isEmpty { throw LoRAError("\(path): modules_to_save is not supported") }
        if j["fan_in_fan_out"] as? Bool == true { throw LoRAError("\(path): fan_in_fan_out is only for GPT-2 Conv1D layers, which Llama-family models do not have") }
        var c = AdaLoRAConfig()
        func integer(_ key: String) throws -> Int? {
            guard let value = j[key], !(value is NSNull) else { return nil }
            guard let int = jsonInteger(value) else { throw LoRAError("\(path): \(key) must be an integer") }
            return int
        }
        func real(_ key: String) throws -> Double? {
            guard let value = j[key], !(value is NSNull) else { return nil }
            guard let n = value as? NSNumber, jsonInteger(value) != nil || String(cString: n.objCType) == "d" else {
                throw LoRAError("\(path): \(key) must be a number")
            }
            return n.doubleValue
        }
        func number(_ key: String) throws -> Float? { try real(key).map(Float.init) }
        c.initR = try integer("init_r") ?? c.initR
        c.targetR = try integer("target_r") ?? c.targetR
        c.loraAlpha = try number("lora_alpha") ?? c.loraAlpha
        c.loraDropout = try number("lora_dropout") ?? c.loraDropout
        c.tinit = try integer("tinit") ?? c.tinit
        c.tfinal = try integer("tfinal") ?? c.tfinal
        c.deltaT = try integer("deltaT") ?? c.deltaT
        c.beta1 = try real("beta1") ?? c.beta1
        c.beta2 = try real("beta2") ?? c.beta2
        c.orthRegWeight = try number("orth_reg_weight") ?? c.orthRegWeight
        c.totalStep = try integer("total_step")
        c.targetModules = try TargetModules(adapterConfig: j["target_modules"], path: path)
        c.layersToTransform = try layersToTransformValue(j["layers_to_transform"], path: path)
        switch j["rank_pattern"] {
        case nil, is NSNull: break
        case let pattern as [String: Any]:
            var sites: [String: [Bool]] = [:]
            for (key, value) in pattern {
                guard let list = value as? [Any], let kept = Optional(list.compactMap { $0 as? Bool }), kept.count == list.count else {
                    throw LoRAError("\(path): rank_pattern[\(String(reflecting: key))] must be a list of true/false")
                }
                sites[Self.sitePath(rankPatternKey: key)] = kept
            }
            c.rankPattern = sites.isEmpty ? nil : sites
        default: throw LoRAError("\(path): rank_pattern must be an object of lists of true/false")
        }
        c.baseModelNameOrPath = j["base_model_name_or_path"] as? String
        try c.validate(source: path)
        self = c
    }

    /// "model.layers.0.self_attn.q_proj.lora_E" (PEFT's key, sometimes with the adapter name or the
    /// PEFT model's prefix) → "model.layers.0.self_attn.q_proj".
    static func sitePath(rankPatternKey key: String) -> String {
        var path = Substring(key)
        if path.hasPrefix(Adapter.keyPrefix) { path = path.dropFirst(Adapter.keyPrefix.count) }
        if path.hasSuffix(".default") { path = path.dropLast(".default".count) }
        if path.hasSuffix(".lora_E") { path = path.dropLast(".lora_E".count) }
        return String(path)
    }

    /// The JSON PEFT writes for this config: LoraConfig's keys with AdaLoRA's added.
    public func json() throws -> Data {
        var dict = LoRAConfig(loraAlpha: loraAlpha, loraDropout: loraDropout, targetModules: targetModules,
                              layersToTransform: layersToTransform).jsonDictionary
        let null = NSNull()
        dict["peft_type"] = Self.peftType
        dict["base_model_name_or_path"] = baseModelNameOrPath ?? null
        dict["init_r"] = initR
        dict["target_r"] = targetR
        dict["tinit"] = tinit
        dict["tfinal"] = tfinal
        dict["deltaT"] = deltaT
        dict["beta1"] = beta1
        dict["beta2"] = beta2
        dict["orth_reg_weight"] = Double(orthRegWeight)
        dict["total_step"] = totalStep ?? null
        dict["rank_pattern"] = rankPattern.map { Dictionary(uniqueKeysWithValues: $0.map { ($0.key + ".lora_E", $0.value) }) } ?? null
        return try adapterConfigJSON(dict)
    }
}
