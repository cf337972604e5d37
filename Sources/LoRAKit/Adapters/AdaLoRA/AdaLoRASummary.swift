import Foundation

/// What a PEFT AdaLoRA adapter folder holds, read without any base model: its settings and, per
/// adapted site, the rank it ended with (the rows of lora_A PEFT kept) and ‖Λ‖.
public struct AdaLoRASummary: Sendable {
    public struct Site: Sendable, Equatable {
        /// The module path without PEFT's prefix ("model.layers.0.self_attn.q_proj").
        public var path: String
        public var rank: Int
        public var inFeatures: Int
        public var outFeatures: Int
        public var normE: Double
        public var parameterCount: Int { rank * (inFeatures + outFeatures + 1) }
    }

    public var folder: String
    public var config: AdaLoRAConfig
    public var sites: [Site]
    /// Bytes of adapter_config.json + adapter_model.safetensors.
    public var diskBytes: Int
    public var parameterCount: Int { sites.reduce(0) { $0 + $1.parameterCount } }

    /// Reads `folder`/adapter_config.json (peft_type ADALORA) and the shapes of adapter_model.safetensors.
    public static func load(folder: String) throws -> AdaLoRASummary {
        let configPath = folder + "/adapter_config.json", weightsPath = folder + "/adapter_model.safetensors"
        guard let config = try AdapterMethods.loadConfig(path: configPath) as? AdaLoRAConfig else {
            throw LoRAError("\(configPath) is not an AdaLoRA adapter config")
        }
        let file = try SafetensorsFile(path: weightsPath)
        var sites: [Site] = []
        for name in file.names where name.hasSuffix(".lora_E") {
            let key = String(name.dropLast(".lora_E".count))
            let path = key.hasPrefix(Adapter.keyPrefix) ? String(key.dropFirst(Adapter.keyPrefix.count)) : key
            guard let a = file.tensors[key + ".lora_A"]?.shape, let b = file.tensors[key + ".lora_B"]?.shape,
                  let e = file.tensors[name]?.shape, a.count == 2, b.count == 2, e.count == 2 else {
                throw LoRAError("\(weightsPath): module \(path) lacks a two-dimensional lora_A, lora_E or lora_B")
            }
            guard a[0] == e[0], b[1] == e[0], e[1] == 1, e[0] <= config.initR, e[0] == config.rank(path: path) else {
                throw LoRAError("\(weightsPath): module \(path) has lora_A \(a), lora_E \(e) and lora_B \(b), which do not fit init_r \(config.initR) and its rank pattern")
            }
            let values = try file.floats(name)
            sites.append(Site(path: path, rank: e[0], inFeatures: a[1], outFeatures: b[0],
                              normE: values.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()))
        }
        guard !sites.isEmpty else { throw LoRAError("\(weightsPath) has no lora_E tensors") }
        sites.sort { AdapterSummary.order($0.path, $1.path) }
        let size = { (p: String) in ((try? FileManager.default.attributesOfItem(atPath: p))?[.size] as? NSNumber)?.intValue ?? 0 }
        return AdaLoRASummary(folder: folder, config: config, sites: sites, diskBytes: size(configPath) + size(weightsPath))
    }
}
