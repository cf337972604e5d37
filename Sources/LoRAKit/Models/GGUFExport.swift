import Foundation

extension LlamaModel {
    /// Writes the model (with any merged adapter) as a GGUF file that llama.cpp loads: tensors in
    /// llama.cpp's names and q/k row order, norms in F32, matrices as `type`, or with `type` nil each
    /// as its tensor in the base GGUF, so the merged file keeps the base's size. A type LoRAKit cannot
    /// write (Q2_K, Q3_K, the IQ types) becomes Q4_K; rows that do not split into a type's blocks take
    /// llama-quantize's fallback (`GGMLType.fallback`). The metadata, tokenizer included, is carried
    /// over from the GGUF the model was read from.
    public func saveGGUF(to path: String, type: GGMLType?) throws {
        if let type, !type.canQuantize {
            throw LoRAError("GGUF export writes \(GGMLType.quantizable.map(\.name).joined(separator: ", ")), not \(type)")
        }
        guard let source = sourcePath, source.hasSuffix(".gguf") else {
            throw LoRAError("GGUF export needs a GGUF base model (its tokenizer metadata is carried over); this model was read from \(sourcePath ?? "memory")")
        }
        let original = try GGUFFile(path: source)
        let arch = original.architecture ?? "llama"
        var w = GGUFWriter()
        w.alignment = original.alignment
        for key in original.metadataKeys where key != "general.alignment" { w.set(key, original.metadata[key]!) }
        if let type { w.set("general.file_type", .uint32(Self.llamaFileType(type))) }
        w.set("general.quantization_version", .uint32(2))

        let c = config
        func matrix(_ name: String, _ m: FrozenMatrix, permuteHeads: Int? = nil) throws {
            var t = m.expanded()
            if let heads = permuteHeads { t = Self.ropeRowsToLlamaCpp(t, heads: heads, headDim: c.headDim) }
            var stored = try type ?? original.info(name).type
            if !stored.canQuantize { stored = .Q4_K }
            try w.addTensor(name, rows: m.rows, columns: m.columns, values: UnsafeBufferPointer(t.buffer),
                            as: stored.fallback(forRowLength: m.columns))
        }
        func vector(_ name: String, _ t: Tensor) throws {
            try w.addTensor(name, rows: nil, columns: t.count, values: UnsafeBufferPointer(t.buffer), as: .F32)
        }
        let permute = arch == "llama"
        try matrix("token_embd.weight", embedding)
        for (l, b) in blocks.enumerated() {
            let p = "blk.\(l)."
            try vector(p + "attn_norm.weight", b.attentionNorm)
            try matrix(p + "attn_q.weight", b.q.matrix, permuteHeads: permute ? c.numHeads : nil)
            try matrix(p + "attn_k.weight", b.k.matrix, permuteHeads: permute ? c.numKVHeads : nil)
            try matrix(p + "attn_v.weight", b.v.matrix)
            try matrix(p + "attn_output.weight", b.o.matrix)
            for (name, linear) in [("attn_q", b.q), ("attn_k", b.k), ("attn_v", b.v), ("attn_output", b.o)] {
                if let bias = linear.bias { try vector(p + name + ".bias", bias) }
            }
            try vector(p + "ffn_norm.weight", b.mlpNorm)
            try matrix(p + "ffn_gate.weight", b.gate.matrix)
            try matrix(p + "ffn_up.weight", b.up.matrix)
            try matrix(p + "ffn_down.weight", b.down.matrix)
        }
        try vector("output_norm.weight", norm)
        if !headIsTied { try matrix("output.weight", head.matrix) }
        if let factors = c.ropeFrequencyFactors {
            try factors.withUnsafeBufferPointer { try w.addTensor("rope_freqs.weight", rows: nil, columns: factors.count, values: $0, as: .F32) }
        }
        try w.write(to: path)
    }

    /// llama.cpp's general.file_type (enum llama_ftype) for a file whose matrices are all `type`;
    /// an all-K-quant file is the "_S" (small) variant.
    static func llamaFileType(_ type: GGMLType) -> UInt32 {
        switch type {
        case .F32: 0
        case .F16: 1
        case .Q4_0: 2
        case .Q4_1: 3
        case .Q8_0: 7
        case .Q5_0: 8
        case .Q5_1: 9
        case .Q4_K: 14
        case .Q5_K: 16
        case .Q6_K: 18
        case .BF16: 32
        default: preconditionFailure("\(type) is not a type GGUF export writes")
        }
    }

    /// llama.cpp's name for a Hugging Face module path ("model.layers.3.mlp.up_proj" → "blk.3.ffn_up").
    static func llamaCppName(_ path: String) -> String? {
        if path == "lm_head" { return "output" }
        let parts = path.split(separator: ".")
        guard parts.count == 5, parts[0] == "model", parts[1] == "layers", let l = Int(parts[2]) else { return nil }
        let names = ["q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                     "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"]
        return names[String(parts[4])].map { "blk.\(l).\($0)" }
    }

    /// The GGUF architecture name of this model.
    var ggufArchitecture: String { config.architecture == "Qwen2ForCausalLM" ? "qwen2" : "llama" }

    /// Hugging Face q/k rows to llama.cpp's order (the inverse of `RopeRowOrder`).
    static func ropeRowsToLlamaCpp(_ t: Tensor, heads: Int, headDim: Int) -> Tensor {
        let rows = t.shape[0], cols = t.shape[1], half = headDim / 2
        let out = Tensor(shape: t.shape)
        for r in 0..<rows {
            let h = r / headDim, within = r % headDim
            let dst = h * headDim + 2 * (within % half) + within / half
            (out.data + dst * cols).update(from: t.data + r * cols, count: cols)
        }
        return out
    }
}
