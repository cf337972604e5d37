import Foundation

/// What a PEFT VeRA adapter folder holds, read without any base model: its settings, the shared
/// projections' shapes, and per adapted site the sizes and norms of λ_d and λ_b. (‖ΔW‖ would need the
/// layer's input width, which only the model knows: each layer reads the first `in` columns of vera_A.)
public struct VeRASummary: Sendable {
    public struct Site: Sendable, Equatable {
        /// The module path without PEFT's prefix ("model.layers.0.self_attn.q_proj").
        public var path: String
        /// |λ_d| = r and |λ_b| = the layer's output width.
        public var rank: Int
        public var outFeatures: Int
        public var normD: Double
        public var normB: Double
    }

    public var folder: String
    public var config: VeRAConfig
    /// vera_A [r × widest input] and vera_B [widest output × r].
    public var projectionA: [Int]
    public var projectionB: [Int]
    public var sites: [Site]
    /// Bytes of adapter_config.json + adapter_model.safetensors.
    public var diskBytes: Int

    /// λ_d and λ_b of every site: PEFT's "trainable params" (the projections are buffers).
    public var parameterCount: Int { sites.reduce(0) { $0 + $1.rank + $1.outFeatures } }

    /// Reads `folder`/adapter_config.json (peft_type VERA) and the tensors of adapter_model.safetensors.
    public static func load(folder: String) throws -> VeRASummary {
        let configPath = folder + "/adapter_config.json", weightsPath = folder + "/adapter_model.safetensors"
        guard let config = try AdapterMethods.loadConfig(path: configPath) as? VeRAConfig else {
            throw LoRAError("\(configPath) is not a VeRA adapter config")
        }
        let file = try SafetensorsFile(path: weightsPath)
        func shape(_ name: String) throws -> [Int] {
            guard let info = file.tensors[name] else { throw LoRAError("\(weightsPath) has no tensor \(name)") }
            return info.shape
        }
        let a = try shape("base_model.vera_A"), b = try shape("base_model.vera_B")
        guard a.count == 2, b.count == 2, a[0] == config.r, b[1] == config.r else {
            throw LoRAError("\(weightsPath): vera_A \(a) and vera_B \(b) do not have the config's rank \(config.r)")
        }
        var sites: [Site] = []
        for name in file.names where name.hasSuffix(".vera_lambda_b") {
            var path = String(name.dropLast(".vera_lambda_b".count))
            let dName = path + ".vera_lambda_d"
            if path.hasPrefix(Adapter.keyPrefix) { path.removeFirst(Adapter.keyPrefix.count) }
            let lambdaB = try file.floats(name)
            guard file.tensors[dName] != nil else { throw LoRAError("\(weightsPath): module \(path) has no vera_lambda_d") }
            let lambdaD = try file.floats(dName)
            guard lambdaD.count == config.r, (1...b[0]).contains(lambdaB.count) else {
                throw LoRAError("\(weightsPath): module \(path) has λ_d of \(lambdaD.count) and λ_b of \(lambdaB.count) values, which do not fit rank \(config.r) and projections \(a), \(b)")
            }
            let norm = { (v: [Float]) in v.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }
            sites.append(Site(path: path, rank: lambdaD.count, outFeatures: lambdaB.count, normD: norm(lambdaD), normB: norm(lambdaB)))
        }
        guard !sites.isEmpty else { throw LoRAError("\(weightsPath) has no vera_lambda_b / vera_lambda_d tensors") }
        sites.sort { AdapterSummary.order($0.path, $1.path) }
        let size = { (p: String) in ((try? FileManager.default.attributesOfItem(atPath: p))?[.size] as? NSNumber)?.intValue ?? 0 }
        return VeRASummary(folder: folder, config: config, projectionA: a, projectionB: b, sites: sites,
                           diskBytes: size(configPath) + size(weightsPath))
    }
}
