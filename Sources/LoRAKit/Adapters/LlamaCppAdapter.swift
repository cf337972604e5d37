import Foundation

extension Adapter {
    /// Writes the adapter in llama.cpp's LoRA format (`llama-cli --lora FILE`): general.type
    /// "adapter", adapter.type "lora", adapter.lora.alpha, and tensors `blk.N.attn_q.weight.lora_a`
    /// ([r × in]) and `.lora_b` ([out × r]) in F32. llama.cpp scales every module by alpha / r with
    /// one alpha for the file, so a module whose own scaling differs (rsLoRA, rank or alpha
    /// patterns) has the difference folded into its B; q and k rows of B follow llama.cpp's RoPE order.
    public func saveLlamaCpp(to path: String) throws {
        let loras = sites(of: LoRA.self)
        guard loras.count == modules.count, let first = loras.first else {
            throw LoRAError("llama.cpp's LoRA GGUF holds plain LoRA adapters only (this one is \(config.methodName)); merge it into the model with lora merge instead")
        }
        let alpha = first.adapter.scaling * Float(first.adapter.rank)
        let arch = model.ggufArchitecture, c = model.config
        var w = GGUFWriter()
        w.set("general.architecture", .string(arch))
        w.set("general.type", .string("adapter"))
        w.set("adapter.type", .string("lora"))
        w.set("adapter.lora.alpha", .float32(alpha))
        for (site, lora) in loras {
            guard let name = LlamaModel.llamaCppName(site.path) else {
                throw LoRAError("module \(site.path) has no llama.cpp tensor name")
            }
            let fold = lora.scaling * Float(lora.rank) / alpha
            var b = lora.b.value.copy()
            if fold != 1 { for i in 0..<b.count { b[i] *= fold } }
            if arch == "llama" && (site.name == "q_proj" || site.name == "k_proj") {
                b = LlamaModel.ropeRowsToLlamaCpp(b, heads: site.name == "q_proj" ? c.numHeads : c.numKVHeads, headDim: c.headDim)
            }
            try w.addTensor(name + ".weight.lora_a", rows: lora.rank, columns: lora.inFeatures,
                            values: UnsafeBufferPointer(lora.a.value.buffer), as: .F32)
            try w.addTensor(name + ".weight.lora_b", rows: lora.outFeatures, columns: lora.rank,
                            values: UnsafeBufferPointer(b.buffer), as: .F32)
        }
        try w.write(to: path)
    }
}
