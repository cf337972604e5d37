import Foundation

/// What a PEFT LoRA adapter folder holds, read without any base model: the settings of
/// `adapter_config.json` and, per adapted site, the shapes of A and B, the scaling s and the
/// Frobenius norm of the update ΔW = s·B·A.
///
/// The norm is computed at r×r cost: ‖B·A‖²_F = trace(Aᵀ·Bᵀ·B·A) = trace((BᵀB)(AAᵀ)) = Σᵢⱼ (BᵀB)ᵢⱼ (AAᵀ)ᵢⱼ,
/// both Gram matrices being symmetric; the out×in product is never formed.
public struct AdapterSummary: Sendable {
    /// One adapted linear layer (or embedding).
    public struct Site: Sendable, Equatable {
        /// The module path without PEFT's prefix ("model.layers.0.self_attn.q_proj").
        public var path: String
        public var rank: Int
        /// A: [r, in]; B: [out, r] (for an embedding, PEFT's lora_embedding_A: [r, vocab], _B: [dim, r]).
        public var shapeA: [Int]
        public var shapeB: [Int]
        /// Values of A and B, plus DoRA's magnitude vector when there is one.
        public var parameterCount: Int
        /// s = alpha / r, or alpha / √r with rsLoRA, with rank_pattern / alpha_pattern applied.
        public var scaling: Double
        /// ‖s·B·A‖_F.
        public var deltaNorm: Double
        /// ‖A‖_F and ‖B‖_F (B is zero right after the default initialisation).
        public var normA: Double
        public var normB: Double
        /// The first site whose A and B hold exactly these values (a pair LoRA-Drop shares), else nil.
        public var sharesWith: String? = nil
    }

    public var folder: String
    /// `peft_type` ("LORA").
    public var peftType: String
    /// The parsed settings (rank and alpha patterns included); options LoRAKit cannot train are not refused here.
    public var config: LoRAConfig
    public var useDoRA: Bool
    /// `init_lora_weights` as written (true, false, "gaussian", "pissa", ...).
    public var initialization: String
    /// `target_modules` as written: the sorted names, or the regular expression.
    public var targetModules: [String]
    public var taskType: String?
    public var peftVersion: String?
    /// The adapted sites, sorted by layer number and then by path.
    public var sites: [Site]
    /// The dtypes of the tensors in adapter_model.safetensors with how many tensors have each, most first.
    public var dtypes: [(name: String, count: Int)]
    /// Bytes of adapter_config.json + adapter_model.safetensors.
    public var diskBytes: Int
    /// Tensors that are not trainable LoRA parameters (PEFT's saved base weight of a targeted head).
    public var otherTensors: [String]
    /// Things that look wrong (a rank that disagrees with the config, ...), one sentence each.
    public var warnings: [String]

    /// Every value of every LoRA tensor: PEFT's "trainable params".
    public var parameterCount: Int { sites.reduce(0) { $0 + $1.parameterCount } }

    /// Reads `folder`/adapter_config.json and the tensors of `folder`/adapter_model.safetensors.
    public static func load(folder: String) throws -> AdapterSummary {
        let fm = FileManager.default
        let configPath = folder + "/adapter_config.json", weightsPath = folder + "/adapter_model.safetensors"
        guard let data = fm.contents(atPath: configPath) else { throw LoRAError("\(folder) has no readable adapter_config.json") }
        guard let j = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LoRAError("\(configPath) is not a JSON object")
        }
        let peftType = j["peft_type"] as? String ?? "(missing)"
        guard peftType == "LORA" else {
            throw LoRAError("\(configPath): peft_type \(peftType) is not a LoRA adapter (only LORA adapters can be inspected)")
        }
        guard fm.fileExists(atPath: weightsPath) else {
            if fm.fileExists(atPath: folder + "/adapter_model.bin") {
                throw LoRAError("\(folder)/adapter_model.bin is a pickle file, which is never executed here; save the adapter with safe_serialization=True")
            }
            throw LoRAError("\(folder) has no adapter_model.safetensors")
        }
        let config = try LoRAConfig(adapterConfig: j, path: configPath)
        let file = try SafetensorsFile(path: weightsPath)

        // Group the tensors by module: NAME.lora_A.weight / NAME.lora_B.weight (linear layers),
        // NAME.lora_embedding_A / _B (embeddings), NAME.lora_magnitude_vector (DoRA).
        let kinds: [(suffix: String, part: Character)] = [
            (".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_embedding_A", "A"), (".lora_embedding_B", "B"),
            (".lora_magnitude_vector.weight", "M"), (".lora_magnitude_vector", "M"),
        ]
        var parts: [String: [Character: String]] = [:]
        var other: [String] = []
        for name in file.names {
            guard let kind = kinds.first(where: { name.hasSuffix($0.suffix) }) else { other.append(name); continue }
            var module = String(name.dropLast(kind.suffix.count))
            if module.hasPrefix(Adapter.keyPrefix) { module.removeFirst(Adapter.keyPrefix.count) }
            parts[module, default: [:]][kind.part] = name
        }
        var warnings: [String] = []
        var sites: [Site] = []
        for (path, p) in parts {
            guard let aName = p["A"], let bName = p["B"] else {
                throw LoRAError("\(weightsPath): module \(path) has \(p["A"] == nil ? "no lora_A" : "no lora_B") tensor")
            }
            let a = try file.info(aName), b = try file.info(bName)
            guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == b.shape[1], a.shape[0] > 0 else {
                throw LoRAError("\(weightsPath): module \(path) has A of shape \(a.shape) and B of shape \(b.shape), which do not multiply as B·A")
            }
            guard a.dtype.isFloatingPoint, b.dtype.isFloatingPoint else {
                throw LoRAError("\(weightsPath): module \(path) has a non-floating-point LoRA tensor")
            }
            let rank = a.shape[0]
            guard rank <= LoRAConfig.maximumRank else {
                throw LoRAError("\(weightsPath): module \(path) has rank \(rank), more than the \(LoRAConfig.maximumRank) LoRAKit accepts")
            }
            let configRank = config.rank(path: path)
            if configRank != rank {
                warnings.append("\(path) has rank \(rank) in the file but adapter_config.json gives it r = \(configRank)")
            }
            let alpha = Double(config.alpha(path: path))
            let scaling = config.useRSLoRA ? alpha / Double(configRank).squareRoot() : alpha / Double(configRank)
            var count = a.elementCount + b.elementCount
            if let m = p["M"] { count += try file.info(m).elementCount }
            let norms = Self.norms(a: try file.floats(aName), b: try file.floats(bName), rank: rank,
                                   inFeatures: a.shape[1], outFeatures: b.shape[0])
            sites.append(Site(path: path, rank: rank, shapeA: a.shape, shapeB: b.shape, parameterCount: count,
                              scaling: scaling, deltaNorm: abs(scaling) * norms.ba, normA: norms.a, normB: norms.b))
        }
        guard !sites.isEmpty else { throw LoRAError("\(weightsPath) has no lora_A / lora_B tensors") }
        sites.sort { Self.order($0.path, $1.path) }
        // Equal pairs: compared by their bits, after a cheap match of shapes and norms.
        for i in sites.indices {
            for j in 0..<i where sites[j].sharesWith == nil && sites[j].shapeA == sites[i].shapeA && sites[j].shapeB == sites[i].shapeB
                && sites[j].normA == sites[i].normA && sites[j].normB == sites[i].normB {
                func bits(_ path: String, _ m: String) -> [UInt32]? {
                    try? file.floats(Adapter.keyPrefix + path + ".\(m).weight").map(\.bitPattern)
                }
                if let a = bits(sites[i].path, "lora_A"), let b = bits(sites[i].path, "lora_B"),
                   a == bits(sites[j].path, "lora_A"), b == bits(sites[j].path, "lora_B") {
                    sites[i].sharesWith = sites[j].path
                    break
                }
            }
        }

        var dtypeCounts: [String: Int] = [:]
        for info in file.tensors.values { dtypeCounts[info.dtype.rawValue, default: 0] += 1 }
        let size = { (p: String) in ((try? fm.attributesOfItem(atPath: p))?[.size] as? NSNumber)?.intValue ?? 0 }

        let initialization: String
        switch j["init_lora_weights"] {
        case let b as Bool: initialization = b ? "true" : "false"
        case let s as String: initialization = s
        case nil: initialization = "true"
        case let other?: initialization = "\(other)"
        }
        let targets: [String]
        switch j["target_modules"] {
        case let s as String: targets = [s]
        case let list as [String]: targets = list.sorted()
        default: targets = []
        }
        return AdapterSummary(
            folder: folder, peftType: peftType, config: config, useDoRA: j["use_dora"] as? Bool ?? false,
            initialization: initialization, targetModules: targets, taskType: j["task_type"] as? String,
            peftVersion: j["peft_version"] as? String, sites: sites,
            dtypes: dtypeCounts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map { ($0.key, $0.value) },
            diskBytes: size(configPath) + size(weightsPath), otherTensors: other, warnings: warnings)
    }

    /// ‖A‖_F, ‖B‖_F and ‖B·A‖_F for A [rank × in] and B [out × rank], row-major, in Double.
    public static func norms(a: [Float], b: [Float], rank r: Int, inFeatures: Int, outFeatures: Int)
        -> (a: Double, b: Double, ba: Double) {
        precondition(a.count == r * inFeatures && b.count == outFeatures * r, "A and B do not have the given shapes")
        var gramA = [Double](repeating: 0, count: r * r), gramB = [Double](repeating: 0, count: r * r)
        a.withUnsafeBufferPointer { a in
            for i in 0..<r {
                for j in i..<r {
                    var s = 0.0
                    for k in 0..<inFeatures { s += Double(a[i * inFeatures + k]) * Double(a[j * inFeatures + k]) }
                    gramA[i * r + j] = s
                    gramA[j * r + i] = s
                }
            }
        }
        b.withUnsafeBufferPointer { b in
            for o in 0..<outFeatures {
                let row = b.baseAddress! + o * r
                for i in 0..<r {
                    let bi = Double(row[i])
                    for j in i..<r { gramB[i * r + j] += bi * Double(row[j]) }
                }
            }
        }
        var trace = 0.0, traceA = 0.0, traceB = 0.0
        for i in 0..<r {
            traceA += gramA[i * r + i]
            traceB += gramB[i * r + i]
            for j in 0..<r { trace += (i <= j ? gramB[i * r + j] : gramB[j * r + i]) * gramA[i * r + j] }
        }
        return (traceA.squareRoot(), traceB.squareRoot(), max(0, trace).squareRoot())
    }

    /// Paths in model order: numbered segments compare as numbers ("layers.2" before "layers.10"),
    /// a block's modules in the order the forward pass uses them, the head last.
    static func order(_ x: String, _ y: String) -> Bool {
        let a = x.split(separator: "."), b = y.split(separator: ".")
        for (p, q) in zip(a, b) where p != q {
            if let m = Int(p), let n = Int(q) { return m < n }
            if let m = moduleOrder[String(p)], let n = moduleOrder[String(q)] { return m < n }
            return p < q
        }
        return a.count < b.count
    }

    private static let moduleOrder: [String: Int] = [
        "model": 0, "lm_head": 1, "embed_tokens": 0, "layers": 1, "norm": 2,
        "self_attn": 0, "mlp": 1, "q_proj": 0, "k_proj": 1, "v_proj": 2, "o_proj": 3, "gate_proj": 4, "up_proj": 5, "down_proj": 6,
    ]
}
