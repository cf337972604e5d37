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

extension Adapter {
    /// Reads a LoRA adapter in llama.cpp's GGUF format (what `llama-cli --lora FILE` takes, and what
    /// `saveLlamaCpp` and llama.cpp's convert_lora_to_gguf.py write) onto `model`, unmerged: each
    /// `blk.N.NAME.weight.lora_a` / `.lora_b` pair becomes a LoRA module with llama.cpp's scale,
    /// alpha / r (1 when the file has no alpha), and q and k rows of B back in Hugging Face's order.
    public static func loadLlamaCpp(from path: String, into model: LlamaModel) throws -> Adapter {
        let file = try GGUFFile(path: path)
        guard (try? file.string("general.type")) == "adapter", (try? file.string("adapter.type")) == "lora" else {
            throw LoRAError("\(path) is not a llama.cpp LoRA adapter (general.type adapter, adapter.type lora)")
        }
        guard file.architecture == model.ggufArchitecture else {
            throw LoRAError("\(path) is an adapter for architecture \(file.architecture ?? "(none)"), but the model is \(model.ggufArchitecture)")
        }
        let alpha = try file.float("adapter.lora.alpha", default: 0)
        guard alpha.isFinite && alpha >= 0 else { throw LoRAError("\(path): adapter.lora.alpha is \(alpha)") }
        let sitesByName = Dictionary(model.sites.compactMap { site in LlamaModel.llamaCppName(site.path).map { ($0, site) } },
                                     uniquingKeysWith: { first, _ in first })
        var pairs: [(site: LinearSite, a: GGUFTensorInfo, b: GGUFTensorInfo)] = []
        for name in file.tensorNames where name.hasSuffix(".weight.lora_a") {
            let module = String(name.dropLast(".weight.lora_a".count))
            guard let site = sitesByName[module] else { throw LoRAError("\(path): tensor \(name) names no linear layer of this model") }
            guard let b = file.tensors[module + ".weight.lora_b"] else { throw LoRAError("\(path): tensor \(name) has no \(module).weight.lora_b") }
            let a = try file.info(name), rank = a.rows
            guard (1...LoRAConfig.maximumRank).contains(rank), a.rowLength == site.linear.inFeatures,
                  b.rowLength == rank, b.rows == site.linear.outFeatures else {
                throw LoRAError("\(path): \(module)'s lora_a is \(a.rows)×\(a.rowLength) and lora_b \(b.rows)×\(b.rowLength), "
                                + "but this model's layer is \(site.linear.outFeatures)×\(site.linear.inFeatures)")
            }
            guard a.type.canDequantize && b.type.canDequantize else { throw LoRAError("\(path): \(module) is stored as \(a.type), which is not supported") }
            pairs.append((site, a, b))
        }
        for name in file.tensorNames where name.hasSuffix(".weight.lora_b") && file.tensors[String(name.dropLast(1)) + "a"] == nil {
            throw LoRAError("\(path): tensor \(name) has no lora_a")
        }
        guard !pairs.isEmpty else { throw LoRAError("\(path) holds no LoRA tensors") }
        // One LoRAConfig: its rank is the commonest, other ranks are a rank_pattern by exact path; without
        // an alpha llama.cpp adds B·A unscaled, which is alpha = r for every module.
        let ranks = pairs.map(\.a.rows)
        let commonRank = Dictionary(grouping: ranks, by: { $0 }).max { $0.value.count < $1.value.count }!.key
        var config = LoRAConfig(r: commonRank, loraAlpha: alpha > 0 ? alpha : Float(commonRank), targetModules: .names(pairs.map(\.site.path)))
        for (site, a, _) in pairs where a.rows != commonRank { config.rankPattern[site.path] = a.rows }
        if alpha == 0 { for (site, a, _) in pairs where a.rows != commonRank { config.alphaPattern[site.path] = Float(a.rows) } }
        config.initialization = .none
        let adapter = try attach(to: model, config: config)
        let loras = Dictionary(uniqueKeysWithValues: adapter.sites(of: LoRA.self).map { ($0.site.path, $0.adapter) })
        let c = model.config
        for (site, a, b) in pairs {
            guard let lora = loras[site.path], lora.rank == a.rows else { throw LoRAError("\(path): \(site.path) did not get its LoRA module") }
            try file.matrix(a.name).unpackAll(into: lora.a.value.data)
            var bRows: any PackedMatrix = try file.matrix(b.name)
            if model.ggufArchitecture == "llama" && (site.name == "q_proj" || site.name == "k_proj") {
                bRows = RopeRowOrder(bRows, heads: site.name == "q_proj" ? c.numHeads : c.numKVHeads, headDim: c.headDim)
            }
            bRows.unpack(rows: 0..<bRows.rows, into: lora.b.value.data)
        }
        if let bad = firstNonFinite(adapter.weights) {
            throw LoRAError("\(path): \(bad.name) is not finite at index \(bad.index)")
        }
        return adapter
    }
}
