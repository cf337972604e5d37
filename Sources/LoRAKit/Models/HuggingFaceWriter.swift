import Foundation

/// Storage type of an exported model's tensors.
public enum ExportDType: String, Sendable, CaseIterable {
    case f32, f16, bf16
    var safetensors: SafetensorsDType { switch self { case .f32: .F32; case .f16: .F16; case .bf16: .BF16 } }
    var torchName: String { switch self { case .f32: "float32"; case .f16: "float16"; case .bf16: "bfloat16" } }
}

extension LlamaModel {
    /// Tokenizer files copied along when a model is exported (generation_config.json is rewritten).
    static let companionFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                                 "vocab.json", "merges.txt", "chat_template.jinja"]

    /// Writes the model as a Hugging Face folder (config.json, generation_config.json, model.safetensors
    /// and the source folder's tokenizer files, or a GGUF source's tokenizer as tokenizer.json +
    /// tokenizer_config.json) that transformers loads. Both JSON files carry the bos/eos token ids. Adapters must be merged first to be included.
    /// The folder is assembled under a temporary name and renamed, so it is never left half-written;
    /// an existing non-empty folder is refused rather than overwritten.
    public func saveHuggingFace(to output: String, dtype: ExportDType = .f32) throws {
        let fm = FileManager.default
        if let items = try? fm.contentsOfDirectory(atPath: output), !items.isEmpty {
            throw LoRAError("output folder \(output) already exists and is not empty")
        }
        let folder = output + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: folder)
        try LoRAError.writing(output) {
            try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
            do {
                try writeHuggingFace(folder: folder, dtype: dtype)
                if fm.fileExists(atPath: output) { try fm.removeItem(atPath: output) }  // an empty folder
                try fm.moveItem(atPath: folder, toPath: output)
            } catch {
                try? fm.removeItem(atPath: folder)
                throw error
            }
        }
    }

    private func writeHuggingFace(folder: String, dtype: ExportDType) throws {
        let fm = FileManager.default
        guard config.ropeFrequencyFactors == nil else {
            throw LoRAError("this model stores its RoPE scaling as rope_freqs.weight, which config.json cannot express yet")
        }
        var writer = SafetensorsWriter()
        writer.metadata = ["format": "pt"]
        for (name, t) in namedWeights() {
            writer.add(name, shape: t.shape, floats: UnsafeBufferPointer(t.buffer), as: dtype.safetensors)
        }
        try writer.write(to: folder + "/model.safetensors")

        var json = sourceJSON("config.json") ?? configJSON()
        json["tie_word_embeddings"] = headIsTied
        json["torch_dtype"] = dtype.torchName
        if json["dtype"] != nil { json["dtype"] = dtype.torchName }
        var generation = sourceJSON("generation_config.json") ?? [:]
        // The base's own ids win; transformers reads them from both files.
        let ids = specialTokenIds(config: json, generation: generation)
        json.merge(ids) { own, _ in own }
        generation.merge(ids) { own, _ in own }
        for (name, contents) in [("config.json", json), ("generation_config.json", generation)] where !contents.isEmpty {
            try JSONSerialization.data(withJSONObject: contents, options: [.prettyPrinted, .sortedKeys])
                .write(to: URL(fileURLWithPath: folder + "/" + name))
        }

        if let src = sourcePath, src.hasSuffix(".gguf") {
            // A GGUF carries its tokenizer in the metadata: write it out as transformers' files.
            for (name, contents) in try Tokenizer.huggingFaceFiles(gguf: GGUFFile(path: src)) {
                try contents.write(to: URL(fileURLWithPath: folder + "/" + name))
            }
        } else if let src = sourcePath {
            for name in Self.companionFiles where fm.fileExists(atPath: src + "/" + name) {
                try fm.copyItem(atPath: src + "/" + name, toPath: folder + "/" + name)
            }
        }
    }

    /// A JSON object file of the folder the model was read from, if it has one.
    private func sourceJSON(_ name: String) -> [String: Any]? {
        guard let src = sourcePath, let data = FileManager.default.contents(atPath: src + "/" + name) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    /// bos_token_id and eos_token_id: from the base's config.json, then its generation_config.json, then
    /// its tokenizer (a GGUF's tokenizer.ggml.bos_token_id / eos_token_id, a folder's tokenizer files).
    /// An id nobody states is left out.
    private func specialTokenIds(config: [String: Any], generation: [String: Any]) -> [String: Any] {
        var ids: [String: Any] = [:]
        for key in ["bos_token_id", "eos_token_id"] {
            if let id = config[key] ?? generation[key], !(id is NSNull) { ids[key] = id }
        }
        if ids.count < 2, let src = sourcePath,
           let tokenizer = try? (src.hasSuffix(".gguf") ? Tokenizer.load(gguf: GGUFFile(path: src)) : Tokenizer.load(path: src)) {
            if ids["bos_token_id"] == nil, let id = tokenizer.bosTokenId { ids["bos_token_id"] = id }
            if ids["eos_token_id"] == nil, let id = tokenizer.eosTokenId { ids["eos_token_id"] = id }
        }
        return ids
    }

    /// A config.json for a model that was not read from a folder.
    func configJSON() -> [String: Any] {
        let c = config
        var j: [String: Any] = [
            "architectures": [c.architecture], "hidden_size": c.hiddenSize, "intermediate_size": c.intermediateSize,
            "num_hidden_layers": c.numLayers, "num_attention_heads": c.numHeads, "num_key_value_heads": c.numKVHeads,
            "head_dim": c.headDim, "vocab_size": c.vocabSize, "rms_norm_eps": Double("\(c.rmsNormEps)") ?? Double(c.rmsNormEps),
            "rope_theta": Double("\(c.ropeTheta)") ?? Double(c.ropeTheta), "max_position_embeddings": c.maxPositionEmbeddings,
            "hidden_act": "silu", "model_type": c.architecture == "Qwen2ForCausalLM" ? "qwen2"
                : c.architecture == "MistralForCausalLM" ? "mistral" : "llama",
        ]
        if c.architecture == "LlamaForCausalLM" { j["attention_bias"] = c.qkvBias; j["mlp_bias"] = c.mlpBias }
        if let s = c.ropeScaling {
            j["rope_scaling"] = ["rope_type": "llama3", "factor": Double(s.factor), "low_freq_factor": Double(s.lowFreqFactor),
                                 "high_freq_factor": Double(s.highFreqFactor),
                                 "original_max_position_embeddings": Double(s.originalMaxPositions)]
        }
        return j
    }
}
