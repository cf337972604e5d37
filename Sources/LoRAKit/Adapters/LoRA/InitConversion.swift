import Foundation

extension Adapter {
    /// A PiSSA or OLoRA adapter as PEFT saves it with `path_initial_model_for_weight_conversion`: a plain
    /// rank-2r LoRA that applies to the untouched base. The trained model is W_res + s·B·A with
    /// W_res = W − s·B₀·A₀, so ΔW = s·(B·A − B₀·A₀) = s'·[B, −B₀]·[A; A₀] with s' = s (r and alpha
    /// doubled; alpha·√2 under rsLoRA). Nil for adapters that need no conversion.
    func convertedToOriginalBase() throws -> (config: any AdapterConfiguration, tensors: [(name: String, value: Tensor)])? {
        guard var config = config as? LoRAConfig, config.initialization.isDataDriven else { return nil }
        if config.useRSLoRA && !(config.rankPattern.isEmpty && config.alphaPattern.isEmpty) {
            throw LoRAError("an rsLoRA adapter with rank or alpha patterns cannot be converted to the original base (PEFT refuses it too)")
        }
        var tensors: [(name: String, value: Tensor)] = []
        for (_, lora) in sites(of: LoRA.self) {
            guard let initial = lora.initial else { continue }
            let r = lora.rank, inF = lora.inFeatures, out = lora.outFeatures
            let a = Tensor(shape: [2 * r, inF]), b = Tensor(shape: [out, 2 * r])
            for i in 0..<(r * inF) { a[i] = lora.a.value[i]; a[r * inF + i] = initial.a[i] }
            for o in 0..<out {
                for i in 0..<r { b[o * 2 * r + i] = lora.b.value[o * r + i]; b[o * 2 * r + r + i] = -initial.b[o * r + i] }
            }
            tensors += [(lora.a.name, a), (lora.b.name, b)]
        }
        config.r *= 2
        config.loraAlpha *= config.useRSLoRA ? Float(2).squareRoot() : 2
        config.rankPattern = config.rankPattern.mapValues { $0 * 2 }
        config.alphaPattern = config.alphaPattern.mapValues { $0 * 2 }
        config.initialization = .kaiming
        return (config, tensors)
    }
}
