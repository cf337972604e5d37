import Foundation

/// One adapter method's settings, as PEFT keeps them in `adapter_config.json` under its `peft_type`.
/// A method implements this with its own config type (LoRA: `LoRAConfig`), builds its per-site
/// adapters, and is listed once in `AdapterMethods.formats`; `Adapter` does the rest (attaching,
/// saving, loading, merging) the same way for every method.
public protocol AdapterConfiguration: Sendable {
    /// PEFT's name for the method in adapter_config.json ("LORA").
    static var peftType: String { get }
    /// The method's name for people ("LoRA", "DoRA").
    var methodName: String { get }
    /// Reads a parsed adapter_config.json, refusing by name the options this engine does not implement.
    init(adapterConfigFile json: [String: Any], path: String) throws
    var targetModules: TargetModules { get }
    /// Only blocks with these indices are adapted (PEFT's `layers_to_transform`); nil means all.
    var layersToTransform: [Int]? { get set }
    var baseModelNameOrPath: String? { get set }
    /// Checks every number the config holds against its meaning; `source` names the file or flag.
    func validate(source: String) throws
    /// How many trainable parameters the adapter on `site` would have, overflow-checked (nil when it overflows).
    func parameterCount(site: LinearSite) -> Int?
    /// Fresh adapters, one per site in order, their parameters named with `keyPrefix` + the site's path.
    func makeAdapters(sites: [LinearSite], keyPrefix: String, random: inout SeededRandom) throws -> SiteAdapters
    /// The JSON PEFT writes for this config.
    func json() throws -> Data
}

extension AdapterConfiguration {
    /// `init(adapterConfigFile:path:)` through the metatype (an `any AdapterConfiguration.Type` cannot call an initializer).
    static func read(adapterConfigFile json: [String: Any], path: String) throws -> any AdapterConfiguration {
        try Self(adapterConfigFile: json, path: path)
    }

    /// Whether PEFT would put an adapter on the module at `path` ("model.layers.3.mlp.up_proj").
    public func targets(path: String) -> Bool {
        targetModules.matches(path: path, layersToTransform: layersToTransform)
    }
}

extension AdapterMethods {
    /// The `peft_type` an adapter folder's adapter_config.json names, "(missing)" when none.
    public static func peftType(folder: String) throws -> String {
        try configJSON(path: folder + "/adapter_config.json")["peft_type"] as? String ?? "(missing)"
    }

    static func configJSON(path: String) throws -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: path) else { throw LoRAError("cannot read \(path)") }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LoRAError("\(path) is not a JSON object")
        }
        return json
    }
}

/// What a config builds for its targeted sites: an adapter per site, and the frozen tensors they all
/// read (VeRA's shared projections), which the adapter file holds once.
public struct SiteAdapters {
    public var adapters: [any LinearAdapter]
    public var shared: [Parameter]

    public init(_ adapters: [any LinearAdapter], shared: [Parameter] = []) {
        self.adapters = adapters
        self.shared = shared
    }
}

/// The methods whose adapter files this engine reads and writes, by PEFT type.
public enum AdapterMethods {
    public static let formats: [any AdapterConfiguration.Type] = [LoRAConfig.self, VeRAConfig.self, AdaLoRAConfig.self]

    /// Reads `adapter_config.json` at `path` with the config type its `peft_type` names.
    public static func loadConfig(path: String) throws -> any AdapterConfiguration {
        let json = try configJSON(path: path)
        let type = json["peft_type"] as? String ?? "(missing)"
        for format in formats where format.peftType == type {
            return try format.read(adapterConfigFile: json, path: path)
        }
        let supported = formats.map { $0.peftType }.joined(separator: ", ")
        throw LoRAError("\(path): peft_type \(type) is not supported here (supported: \(supported))")
    }
}

/// Which linear layers get an adapter, as PEFT's `target_modules` says it.
public enum TargetModules: Sendable, Equatable, CustomStringConvertible {
    /// Module names matched exactly or as a dotted suffix ("q_proj" matches "model.layers.0.self_attn.q_proj").
    case names([String])
    /// A regular expression the whole module path must match.
    case regex(String)
    /// Every linear layer except the output head.
    case allLinear

    /// The module names "all-linear" expands to for Llama-family models (PEFT saves the expansion).
    public static let llamaLinearNames = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    /// Parses a command-line style value: "all-linear" or a comma-separated list of names.
    public init(commaSeparated text: String) {
        if text == "all-linear" { self = .allLinear; return }
        self = .names(text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
    }

    public var description: String {
        switch self {
        case .names(let names): return names.joined(separator: ",")
        case .regex(let pattern): return "regex \(pattern)"
        case .allLinear: return "all-linear"
        }
    }
}

extension TargetModules {
    /// PEFT's module matching: an exact path (which ignores layers_to_transform, as in PEFT), a
    /// name matched as a dotted suffix in the listed layers, or a regex over the whole path.
    public func matches(path: String, layersToTransform: [Int]?) -> Bool {
        let names: [String]
        switch self {
        case .regex(let pattern): return fullMatch(pattern, path)
        case .allLinear: names = TargetModules.llamaLinearNames
        case .names(let n): names = n
        }
        if names.contains(path) { return true }
        guard names.contains(where: { path.hasSuffix("." + $0) }) else { return false }
        guard let layers = layersToTransform, !layers.isEmpty else { return true }
        guard let layer = Self.layerIndex(of: path) else { return false }
        return layers.contains(layer)
    }

    /// The first numbered path segment, PEFT's default layer pattern.
    static func layerIndex(of path: String) -> Int? {
        let parts = path.split(separator: ".")
        return parts.dropFirst().lazy.compactMap { Int($0) }.first
    }
}

// MARK: adapter_config.json keys every method shares

extension TargetModules {
    /// adapter_config.json's `target_modules`: a list of names, "all-linear", or a regex string.
    init(adapterConfig value: Any?, path: String) throws {
        switch value {
        case let s as String: self = s == "all-linear" ? .allLinear : .regex(s)
        case let list as [String]: self = .names(list)
        default: throw LoRAError("\(path): target_modules must be a string or a list of strings")
        }
    }

    /// What PEFT saves: the names sorted (all-linear expanded), or the regex.
    var jsonValue: Any {
        switch self {
        case .names(let n): return n.sorted()
        case .regex(let r): return r
        case .allLinear: return TargetModules.llamaLinearNames.sorted()
        }
    }
}

/// adapter_config.json's `layers_to_transform`: a list of block indices, one index, or null.
func layersToTransformValue(_ value: Any?, path: String) throws -> [Int]? {
    func integer(_ v: Any) throws -> Int {
        guard let int = jsonInteger(v) else { throw LoRAError("\(path): layers_to_transform must be an integer") }
        return int
    }
    switch value {
    case let list as [Any]: return try list.map(integer)
    case nil, is NSNull: return nil
    case let n?: return [try integer(n)]
    }
}

/// adapter_config.json as PEFT writes it: keys sorted, indented by 2, slashes unescaped.
func adapterConfigJSON(_ dict: [String: Any]) throws -> Data {
    try JSONSerialization.data(withJSONObject: dict, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
}

/// Whether the regular expression matches all of `text` (an invalid one matches nothing).
func fullMatch(_ pattern: String, _ text: String) -> Bool {
    guard let re = try? NSRegularExpression(pattern: "^(?:\(pattern))$") else { return false }
    return re.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
}
