import Foundation

/// A VeRA adapter's settings with PEFT's names, defaults and meaning (`VeraConfig`).
public struct VeRAConfig: AdapterConfiguration, Equatable {
    public static let peftType = "VERA"
    public var methodName: String { "VeRA" }

    /// The shared projections' rank (PEFT's default is far above LoRA's: only two vectors per layer train).
    public var r = 256
    public var targetModules: TargetModules = .names(["q_proj", "v_proj"])
    public var layersToTransform: [Int]? = nil
    /// Seeds the shared projections (PEFT draws them from torch's generator with this seed; this
    /// engine from its own, and, like PEFT by default, saves them in the adapter file).
    public var projectionPRNGKey: UInt64 = 0
    /// λ_d's initial value.
    public var dInitial: Float = 0.1
    public var veraDropout: Float = 0
    public var baseModelNameOrPath: String? = nil

    public init(r: Int = 256, targetModules: TargetModules = .names(["q_proj", "v_proj"]), layersToTransform: [Int]? = nil,
                projectionPRNGKey: UInt64 = 0, dInitial: Float = 0.1) {
        self.r = r
        self.targetModules = targetModules
        self.layersToTransform = layersToTransform
        self.projectionPRNGKey = projectionPRNGKey
        self.dInitial = dInitial
    }

    public static let maximumRank = LoRAConfig.maximumRank

    public func validate(source: String) throws {
        guard (1...Self.maximumRank).contains(r) else {
            throw LoRAError("\(source): r must be positive and at most \(Self.maximumRank) (got \(r))")
        }
        guard dInitial.isFinite else { throw LoRAError("\(source): d_initial must be a finite number (got \(dInitial))") }
        guard (0..<1).contains(veraDropout) else {
            throw LoRAError("\(source): vera_dropout must be at least 0 and below 1 (got \(veraDropout))")
        }
    }

    /// λ_d [r] and λ_b [out]; the shared projections are frozen.
    public func parameterCount(site: LinearSite) -> Int? {
        let (count, overflow) = r.addingReportingOverflow(site.linear.outFeatures)
        return overflow ? nil : count
    }

    /// One projection pair as large as the largest targeted layer needs (PEFT's `_find_dim`),
    /// kaiming-uniform with a = 0 as PEFT draws them: U(±√(6 / fan_in)), vera_A first.
    public func makeAdapters(sites: [LinearSite], keyPrefix: String, random: inout SeededRandom) throws -> SiteAdapters {
        let maxIn = sites.map(\.linear.inFeatures).max() ?? 0, maxOut = sites.map(\.linear.outFeatures).max() ?? 0
        let (sizeA, o1) = r.multipliedReportingOverflow(by: maxIn), (sizeB, o2) = r.multipliedReportingOverflow(by: maxOut)
        let (size, o3) = sizeA.addingReportingOverflow(sizeB)
        guard !(o1 || o2 || o3), size <= Adapter.maximumParameterCount else {
            throw LoRAError("VeRA projections of rank \(r) for layers of width \(max(maxIn, maxOut)) would exceed \(Adapter.maximumParameterCount) values; lower r")
        }
        let a = Parameter(name: "base_model.vera_A", value: Tensor(shape: [r, maxIn]))
        let b = Parameter(name: "base_model.vera_B", value: Tensor(shape: [maxOut, r]))
        var projections = SeededRandom(seed: projectionPRNGKey)
        for (t, fanIn) in [(a.value, maxIn), (b.value, r)] {
            let bound = (6 / Float(fanIn)).squareRoot()
            for i in 0..<t.count { t[i] = projections.uniform(-bound, bound) }
        }
        let adapters: [any LinearAdapter] = sites.map { site in
            VeRA(inFeatures: site.linear.inFeatures, outFeatures: site.linear.outFeatures, projectionA: a, projectionB: b,
                 dInitial: dInitial, dropout: veraDropout, name: keyPrefix + site.path, random: &random)
        }
        return SiteAdapters(adapters, shared: [a, b])
    }
}

// MARK: adapter_config.json

extension VeRAConfig {
    /// A parsed adapter_config.json whose peft_type is VERA.
    public init(adapterConfigFile j: [String: Any], path: String) throws {
        var c = VeRAConfig()
        if let r = j["r"] {
            guard let int = jsonInteger(r) else { throw LoRAError("\(path): r must be an integer") }
            c.r = int
        }
        c.targetModules = try TargetModules(adapterConfig: j["target_modules"], path: path)
        c.layersToTransform = try layersToTransformValue(j["layers_to_transform"], path: path)
        if let key = j["projection_prng_key"] {
            guard let int = jsonInteger(key), int >= 0 else { throw LoRAError("\(path): projection_prng_key must be an integer of at least 0") }
            c.projectionPRNGKey = UInt64(int)
        }
        if let d = j["d_initial"] as? NSNumber { c.dInitial = d.floatValue }
        if let d = j["vera_dropout"] as? NSNumber { c.veraDropout = d.floatValue }
        if j["save_projection"] as? Bool == false {
            throw LoRAError("\(path): save_projection is false, so the projections are not in the file; PEFT then regenerates them with torch's generator, which this engine does not reproduce")
        }
        if let bias = j["bias"] as? String, bias != "none" { throw LoRAError("\(path): bias \"\(bias)\" is not supported (only \"none\")") }
        if let m = j["modules_to_save"] as? [Any], !m.isEmpty { throw LoRAError("\(path): modules_to_save is not supported") }
        c.baseModelNameOrPath = j["base_model_name_or_path"] as? String
        try c.validate(source: path)
        self = c
    }

    /// The JSON PEFT 0.21 writes for this config: every key of `VeraConfig`, sorted, indented by 2.
    public func json() throws -> Data {
        let null = NSNull()
        let dict: [String: Any] = [
            "auto_mapping": null, "base_model_name_or_path": baseModelNameOrPath ?? null, "bias": "none",
            "d_initial": Double(dInitial), "fan_in_fan_out": false, "inference_mode": true, "init_weights": true,
            "layers_pattern": null, "layers_to_transform": layersToTransform ?? null, "modules_to_save": null,
            "peft_type": "VERA", "peft_version": "0.21.2", "projection_prng_key": projectionPRNGKey, "r": r,
            "revision": null, "save_projection": true, "target_modules": targetModules.jsonValue, "task_type": "CAUSAL_LM",
            "vera_dropout": Double(veraDropout),
        ]
        return try adapterConfigJSON(dict)
    }
}
