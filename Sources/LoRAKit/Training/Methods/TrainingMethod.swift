import Foundation

/// How a run trains its adapter: the optimizer and its parameter groups. LoRA+ and LoRA-FA train
/// plain LoRA adapters (saved as PEFT LoRA files), so they are methods of training, not file formats.
public enum TrainingMethod: String, Codable, Sendable, CaseIterable {
    /// AdamW over every adapter parameter.
    case lora
    /// LoRA+ (Hayou et al. 2024): B learns `loraPlusRatio` times faster than A, in the parameter
    /// groups PEFT's `create_loraplus_optimizer` makes.
    case loraPlus = "lora-plus"
    /// LoRA-FA (Zhang et al. 2023): A frozen, B trained by PEFT's `LoraFAOptimizer`.
    case loraFA = "lora-fa"

    /// Which adapter a `--method` name trains.
    public enum AdapterKind: Sendable { case lora, dora, vera, adalora, loraDrop }

    /// What `--method NAME` selects: a training method, or an adapter method trained plainly
    /// (dora: a LoRA adapter with use_dora; vera; adalora, whose allocator the loop adds; lora-drop,
    /// a LoRA adapter whose layers a probe run selects).
    public static func named(_ name: String) throws -> (method: TrainingMethod, adapter: AdapterKind) {
        switch name {
        case "dora": return (.lora, .dora)
        case "vera": return (.lora, .vera)
        case "adalora": return (.lora, .adalora)
        case "lora-drop": return (.lora, .loraDrop)
        default:
            guard let method = TrainingMethod(rawValue: name) else {
                throw LoRAError("--method must be \(allCases.map(\.rawValue).joined(separator: ", ")), dora, vera, adalora or lora-drop (got \(name))")
            }
            return (method, .lora)
        }
    }

    /// The optimizer for `adapter` under `settings` (for LoRA-FA, this freezes every A).
    public func makeOptimizer(adapter: Adapter, settings: TrainingSettings) throws -> any Optimizer {
        switch self {
        case .lora:
            return AdamW(parameters: adapter.parameters, learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        case .loraPlus:
            return AdamW(groups: try Self.loraPlusGroups(adapter.parameters, ratio: settings.loraPlusRatio, weightDecay: settings.weightDecay),
                         learningRate: settings.learningRate)
        case .loraFA:
            let loras = adapter.sites(of: LoRA.self).map(\.adapter)
            guard loras.count == adapter.modules.count else {
                throw LoRAError("lora-fa trains LoRA adapters only (this one is \(adapter.config.methodName))")
            }
            return try LoRAFAOptimizer(loras: loras, learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        }
    }

    /// PEFT's LoRA+ groups: lora_B matrices and 1-D parameters at lr·ratio, everything else at lr,
    /// all with the given weight decay (PEFT's `loraplus_weight_decay`; its 1-D biases and norms,
    /// which get none, do not occur in these adapters). A group left empty is not made.
    static func loraPlusGroups(_ parameters: [Parameter], ratio: Float, weightDecay: Float) throws -> [AdamW.Group] {
        let isB = { (p: Parameter) in p.name.contains("lora_B") || p.value.shape.count == 1 }
        guard parameters.contains(where: isB) else { throw LoRAError("lora-plus needs an adapter with lora_B matrices") }
        return [AdamW.Group(parameters: parameters.filter { !isB($0) }, weightDecay: weightDecay),
                AdamW.Group(parameters: parameters.filter(isB), learningRateScale: ratio, weightDecay: weightDecay)]
            .filter { !$0.parameters.isEmpty }
    }
}
