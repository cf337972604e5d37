import Foundation

/// The adapters one config puts on a model, one per targeted linear layer: what PEFT calls an
/// adapter. The same for every method: it attaches, saves and loads in PEFT's file format (keys
/// are the adapters' parameter names), and merges into (or out of) the base weights.
public final class Adapter: @unchecked Sendable {
    public let config: any AdapterConfiguration
    public let model: LlamaModel
    /// The adapted sites, in model order, each with its adapter.
    public let modules: [Module]
    /// Frozen tensors every module reads (VeRA's projections), saved once.
    public let shared: [Parameter]

    public struct Module: @unchecked Sendable {
        public let site: LinearSite
        public let adapter: any LinearAdapter
    }

    /// PEFT's prefix for keys of a causal LM (`PeftModel` → the tuner model → the transformers model).
    public static let keyPrefix = "base_model.model."

    private init(config: any AdapterConfiguration, model: LlamaModel, modules: [Module], shared: [Parameter]) {
        self.config = config
        self.model = model
        self.modules = modules
        self.shared = shared
    }

    /// The most parameters an adapter may have: 2^32 Float32 values are 16 GiB, and training keeps
    /// three more copies (gradients and AdamW's two moments).
    public static let maximumParameterCount = 1 << 32

    /// Puts freshly initialized adapters on every site the config targets (replacing any adapter there).
    /// `sharing` lists groups of site paths whose LoRA adapters read one pair of matrices (LoRA-Drop);
    /// each group's first site owns it.
    public static func attach(to model: LlamaModel, config: any AdapterConfiguration, seed: UInt64 = 0,
                              sharing: [[String]] = []) throws -> Adapter {
        try config.validate(source: "the adapter config")
        var random = SeededRandom(seed: seed)
        let sites = model.sites.filter { config.targets(path: $0.path) }
        guard !sites.isEmpty else { throw LoRAError("target_modules \(config.targetModules) match no linear layer of this model") }
        // Sized with overflow checks before anything is allocated.
        var total = 0
        for site in sites {
            let count = config.parameterCount(site: site)
            let (sum, overflow) = total.addingReportingOverflow(count ?? .max)
            guard count != nil, !overflow, sum <= maximumParameterCount else {
                throw LoRAError("an adapter with these settings on \(site.path) and the other targeted layers would have more than \(maximumParameterCount) parameters; lower the rank or the targets")
            }
            total = sum
        }
        if let merged = sites.first(where: { $0.linear.isMerged }) {
            throw LoRAError("\(merged.path) has a merged adapter; unmerge it before attaching another")
        }
        let made = try config.makeAdapters(sites: sites, keyPrefix: keyPrefix, random: &random)
        for group in sharing where group.count > 1 {
            let loras = group.map { path in zip(sites, made.adapters).first { $0.0.path == path }?.1 as? LoRA }
            guard let owner = loras.first ?? nil, loras.allSatisfy({ $0 != nil }) else {
                throw LoRAError("the shared group \(group.joined(separator: ", ")) names a layer that has no LoRA adapter")
            }
            for lora in loras.dropFirst() {
                guard lora!.inFeatures == owner.inFeatures && lora!.outFeatures == owner.outFeatures && lora!.rank == owner.rank else {
                    throw LoRAError("the shared group \(group.joined(separator: ", ")) mixes layers of other shapes")
                }
                lora!.share(owner)
            }
        }
        var modules: [Module] = []
        for (site, adapter) in zip(sites, made.adapters) {
            if site.linear === model.head && model.headIsTied { site.linear.untie() }
            site.linear.adapter = adapter
            modules.append(Module(site: site, adapter: adapter))
        }
        return Adapter(config: config, model: model, modules: modules, shared: made.shared)
    }

    /// Every trainable parameter, in site order (each site's in its adapter's order); a tensor several
    /// sites share (LoRA-Drop) once, under its first site's name.
    public var parameters: [Parameter] {
        var seen = Set<ObjectIdentifier>()
        return modules.flatMap { $0.adapter.parameters }.filter { seen.insert(ObjectIdentifier($0.value)).inserted }
    }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }
    /// Every tensor of the adapter file, trained or frozen: the shared ones, then each site's in order
    /// (a pair LoRA-Drop shares, under each sharing site's names).
    public var weights: [Parameter] { shared + modules.flatMap { $0.adapter.weights } }
    public var weightCount: Int { weights.reduce(0) { $0 + $1.value.count } }

    /// The sites whose adapter is of type `T`, with it (e.g. `sites(of: LoRA.self)`).
    public func sites<T: LinearAdapter>(of type: T.Type) -> [(site: LinearSite, adapter: T)] {
        modules.compactMap { m in (m.adapter as? T).map { (m.site, $0) } }
    }

    /// Every adapter's random generators, in site order: what a checkpoint keeps.
    public var generators: [[SeededRandom]] {
        get { modules.map(\.adapter.generators) }
        set { for (m, g) in zip(modules, newValue) { m.adapter.generators = g } }
    }

    /// Removes the adapter from the model (unmerging first if it is merged).
    public func detach() throws {
        for m in modules where m.site.linear.adapter === m.adapter {
            if m.site.linear.isMerged { try m.site.linear.unmerge() }
            m.site.linear.adapter = nil
        }
    }

    /// Puts every adapted layer's merged weight in place. Like PEFT's safe_merge, first checks that
    /// every merged weight would be finite, and refuses, changing nothing, when one would not (W + NaN
    /// cannot be unmerged back to W).
    public func merge() throws {
        for m in modules {
            let merged = try m.site.linear.mergedWeight()
            if let i = firstNonFinite(UnsafeBufferPointer(merged.buffer)) {
                throw LoRAError("merging the adapter into \(m.site.path) would give a non-finite weight (NaN or Inf) at index \(i); the adapter or the base model is broken")
            }
        }
        for m in modules { try m.site.linear.merge() }
    }

    /// Restores every base weight W0.
    public func unmerge() throws { for m in modules { try m.site.linear.unmerge() } }

    // MARK: PEFT files

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (metadata {"format": "pt"}, and
    /// the training step when given), each to a temporary name first and then renamed. A PiSSA or
    /// OLoRA adapter is written converted, so that it applies to the untouched base model.
    public func save(to folder: String, trainingStep: Int? = nil) throws {
        try LoRAError.writing(folder) { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        var writer = SafetensorsWriter()
        writer.metadata = ["format": "pt"]
        if let trainingStep { writer.metadata[StepCommit.trainingStepKey] = "\(trainingStep)" }
        let converted = try convertedToOriginalBase() ?? prunedAdaLoRA()
        for (name, value) in converted?.tensors ?? weights.map({ ($0.name, $0.value) }) {
            writer.add(name, shape: value.shape, floats: UnsafeBufferPointer(value.buffer))
        }
        try writer.write(to: folder + "/adapter_model.safetensors")
        var config: any AdapterConfiguration = converted?.config ?? self.config
        if config.baseModelNameOrPath == nil { config.baseModelNameOrPath = model.sourcePath }
        let path = folder + "/adapter_config.json", tmp = path + ".tmp-\(getpid())"
        try LoRAError.writing(path) { try config.json().write(to: URL(fileURLWithPath: tmp)) }
        if rename(tmp, path) != 0 { throw LoRAError("cannot rename \(tmp) to \(path): \(String(cString: strerror(errno)))") }
    }

    /// Reads a PEFT adapter folder of any supported method and attaches it to `model`.
    public static func load(from folder: String, into model: LlamaModel) throws -> Adapter {
        try StepCommit.recover(folder)  // a training run killed while saving into this folder
        let fm = FileManager.default
        let weightsPath = folder + "/adapter_model.safetensors"
        guard fm.fileExists(atPath: folder + "/adapter_config.json") else {
            throw LoRAError("\(folder) has no adapter_config.json")
        }
        guard fm.fileExists(atPath: weightsPath) else {
            if fm.fileExists(atPath: folder + "/adapter_model.bin") {
                throw LoRAError("\(folder)/adapter_model.bin is a pickle file, which is never executed here; save the adapter with safe_serialization=True")
            }
            throw LoRAError("\(folder) has no adapter_model.safetensors")
        }
        let config = try AdapterMethods.loadConfig(path: folder + "/adapter_config.json")
        let file = try SafetensorsFile(path: weightsPath)
        let adapter = try attach(to: model, config: config)
        do {
            var expected = Set<String>()
            for p in adapter.weights {
                expected.insert(p.name)
                guard let info = file.tensors[p.name] else { throw LoRAError("\(weightsPath) has no tensor \(p.name)") }
                guard info.shape == p.value.shape else {
                    throw LoRAError("\(weightsPath): tensor \(p.name) has shape \(info.shape) but this model needs \(p.value.shape)")
                }
                try file.floats(p.name, into: p.value.data, count: p.value.count)
            }
            // PEFT also saves a targeted head's base weight ("save_embedding_layers"); it is the base model's own.
            if let extra = file.names.first(where: { !expected.contains($0) && !$0.hasSuffix(".base_layer.weight") }) {
                throw LoRAError("\(weightsPath): tensor \(extra) matches no adapter module of this model and config")
            }
        } catch {
            try? adapter.detach()
            throw error
        }
        return adapter
    }
}
