import Foundation

/// The LoRA modules attached to a model under one config: what PEFT calls a LoRA adapter. It
/// attaches, saves and loads in PEFT's file format, and merges into (or out of) the base weights.
public final class LoRAAdapter: @unchecked Sendable {
    public let config: LoRAConfig
    public let model: LlamaModel
    /// The adapted sites, in model order, each with its LoRA.
    public let modules: [(site: LinearSite, lora: LoRA)]

    /// PEFT's prefix for keys of a causal LM (`PeftModel` → `LoraModel` → the transformers model).
    public static let keyPrefix = "base_model.model."

    private init(config: LoRAConfig, model: LlamaModel, modules: [(site: LinearSite, lora: LoRA)]) {
        self.config = config
        self.model = model
        self.modules = modules
    }

    /// The most parameters an adapter may have: 2^32 Float32 values are 16 GiB, and training keeps
    /// three more copies (gradients and AdamW's two moments).
    public static let maximumParameterCount = 1 << 32

    /// Puts a freshly initialized LoRA on every site the config targets (replacing any adapter there).
    public static func attach(to model: LlamaModel, config: LoRAConfig, seed: UInt64 = 0) throws -> LoRAAdapter {
        try config.validate(source: "the adapter config")
        var random = SeededRandom(seed: seed)
        let sites = model.sites.filter { config.targets(path: $0.path) }
        guard !sites.isEmpty else { throw LoRAError("target_modules \(config.targetModules) match no linear layer of this model") }
        // A is [r × in] and B [out × r]: sized with overflow checks before anything is allocated.
        var total = 0
        for site in sites {
            let rank = config.rank(path: site.path)
            let (width, o1) = site.linear.inFeatures.addingReportingOverflow(site.linear.outFeatures)
            let (count, o2) = rank.multipliedReportingOverflow(by: width)
            let (sum, o3) = total.addingReportingOverflow(count)
            guard !(o1 || o2 || o3), sum <= maximumParameterCount else {
                throw LoRAError("an adapter of rank \(rank) on \(site.path) and the other targeted layers would have more than \(maximumParameterCount) parameters; lower the rank or the targets")
            }
            total = sum
        }
        var modules: [(site: LinearSite, lora: LoRA)] = []
        for site in sites {
            if site.linear.isMerged { throw LoRAError("\(site.path) has a merged adapter; unmerge it before attaching another") }
            if site.linear === model.head && model.headIsTied { site.linear.untie() }
            let lora = LoRA(inFeatures: site.linear.inFeatures, outFeatures: site.linear.outFeatures,
                            rank: config.rank(path: site.path), alpha: config.alpha(path: site.path),
                            rsLoRA: config.useRSLoRA, dropout: config.loraDropout, initialization: config.initialization,
                            name: keyPrefix + site.path, random: &random)
            site.linear.adapter = lora
            modules.append((site, lora))
        }
        return LoRAAdapter(config: config, model: model, modules: modules)
    }

    public var parameters: [Parameter] { modules.flatMap { $0.lora.parameters } }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// Removes the adapter from the model (unmerging first if it is merged).
    public func detach() throws {
        for (site, lora) in modules where site.linear.adapter === lora {
            if site.linear.isMerged { try site.linear.unmerge() }
            site.linear.adapter = nil
        }
    }

    /// W ← W0 + s·B·A on every adapted layer. Like PEFT's safe_merge, first checks that every merged
    /// weight would be finite, and refuses, changing nothing, when one would not (W + NaN cannot be
    /// unmerged back to W).
    public func merge() throws {
        for m in modules {
            let w = m.site.linear.weight, delta = m.lora.deltaWeight()
            if let i = (0..<delta.count).first(where: { !(w[$0] + delta[$0]).isFinite }) {
                throw LoRAError("merging the adapter into \(m.site.path) would give a non-finite weight (NaN or Inf) at index \(i); the adapter or the base model is broken")
            }
        }
        for m in modules { try m.site.linear.merge() }
    }
    /// W ← W − s·B·A, restoring W0.
    public func unmerge() throws { for m in modules { try m.site.linear.unmerge() } }

    // MARK: PEFT files

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (metadata {"format": "pt"}, and
    /// the training step when given), each to a temporary name first and then renamed.
    public func save(to folder: String, trainingStep: Int? = nil) throws {
        try LoRAError.writing(folder) { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        var writer = SafetensorsWriter()
        writer.metadata = ["format": "pt"]
        if let trainingStep { writer.metadata[StepCommit.trainingStepKey] = "\(trainingStep)" }
        for (_, lora) in modules {
            writer.add(lora.a.name, shape: lora.a.value.shape, floats: UnsafeBufferPointer(lora.a.value.buffer))
            writer.add(lora.b.name, shape: lora.b.value.shape, floats: UnsafeBufferPointer(lora.b.value.buffer))
        }
        try writer.write(to: folder + "/adapter_model.safetensors")
        var config = self.config
        if config.baseModelNameOrPath == nil { config.baseModelNameOrPath = model.sourcePath }
        let path = folder + "/adapter_config.json", tmp = path + ".tmp-\(getpid())"
        try LoRAError.writing(path) { try config.json().write(to: URL(fileURLWithPath: tmp)) }
        if rename(tmp, path) != 0 { throw LoRAError("cannot rename \(tmp) to \(path): \(String(cString: strerror(errno)))") }
    }

    /// Reads a PEFT LoRA adapter folder and attaches it to `model`.
    public static func load(from folder: String, into model: LlamaModel) throws -> LoRAAdapter {
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
        let config = try LoRAConfig.load(path: folder + "/adapter_config.json")
        let file = try SafetensorsFile(path: weightsPath)
        let adapter = try attach(to: model, config: config)
        do {
            var expected = Set<String>()
            for (_, lora) in adapter.modules {
                for p in lora.parameters {
                    expected.insert(p.name)
                    guard let info = file.tensors[p.name] else { throw LoRAError("\(weightsPath) has no tensor \(p.name)") }
                    guard info.shape == p.value.shape else {
                        throw LoRAError("\(weightsPath): tensor \(p.name) has shape \(info.shape) but this model needs \(p.value.shape)")
                    }
                    try file.floats(p.name, into: p.value.data, count: p.value.count)
                }
            }
            // PEFT also saves a targeted head's base weight ("save_embedding_layers"); it is the base model's own.
            if let extra = file.names.first(where: { !expected.contains($0) && !$0.hasSuffix(".base_layer.weight") }) {
                throw LoRAError("\(weightsPath): tensor \(extra) matches no LoRA module of this model and config")
            }
        } catch {
            try? adapter.detach()
            throw error
        }
        return adapter
    }
}
