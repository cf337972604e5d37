import Foundation

/// What a model file or folder holds, read from its headers and metadata only (no weight is read or
/// dequantized): the hyperparameters, the parameter count from the tensor shapes, and the storage
/// types of the tensors. Architectures LoRAKit cannot run are described too (`supported` is false).
public struct ModelSummary: Sendable {
    public enum Format: String, Sendable {
        case huggingFace = "Hugging Face folder"
        case gguf = "GGUF file"
    }

    public var path: String
    public var format: Format
    /// GGUF: the format version.
    public var formatVersion: Int?
    /// GGUF: `general.type` ("model", or "adapter" for a llama.cpp LoRA adapter).
    public var ggufType: String?
    /// `model_type` of config.json, or GGUF's `general.architecture` ("llama", "qwen2", ...).
    public var architecture: String
    /// config.json's `architectures[0]` ("LlamaForCausalLM").
    public var architectureClass: String?
    /// GGUF's `general.name`.
    public var name: String?
    /// Whether LoRAKit can load and run it.
    public var supported: Bool
    public var layers: Int?
    public var hiddenSize: Int?
    public var heads: Int?
    public var kvHeads: Int?
    public var headDim: Int?
    public var intermediateSize: Int?
    public var vocabSize: Int?
    public var contextLength: Int?
    public var ropeTheta: Double?
    /// A RoPE scaling other than none ("llama3", "linear", ...).
    public var ropeScaling: String?
    public var tiedEmbeddings: Bool?
    /// config.json's declared `torch_dtype` / `dtype`; GGUF's `general.file_type` by llama.cpp's name.
    public var declaredType: String?
    /// llama.cpp adapters: `adapter.lora.alpha`.
    public var adapterAlpha: Double?
    /// The tokenizer: "tokenizer.json", or a GGUF's `tokenizer.ggml.model`; nil when there is none.
    public var tokenizer: String?
    public var hasChatTemplate: Bool
    /// Elements over all tensors.
    public var parameterCount: Int
    public var tensorCount: Int
    /// Storage types (safetensors dtypes or GGML types) with how many tensors have each, most first.
    public var tensorTypes: [(name: String, count: Int)]
    /// Bytes of the file, or of every file in the folder.
    public var diskBytes: Int

    /// A Hugging Face folder (config.json + safetensors) or a .gguf file.
    public static func load(path: String) throws -> ModelSummary {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw LoRAError("\(path) does not exist") }
        return isDir.boolValue ? try load(folder: path) : try load(gguf: path)
    }

    public static func load(folder: String) throws -> ModelSummary {
        let fm = FileManager.default
        let configPath = folder + "/config.json"
        guard let data = fm.contents(atPath: configPath) else { throw LoRAError("\(folder) has no readable config.json") }
        guard let j = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LoRAError("\(configPath) is not a JSON object")
        }
        let weights = try WeightFiles(folder: folder)
        func int(_ key: String) -> Int? { (j[key] as? NSNumber)?.intValue }
        let cls = (j["architectures"] as? [String])?.first
        let rope = (j["rope_parameters"] as? [String: Any]) ?? (j["rope_scaling"] as? [String: Any])
        let ropeType = (rope?["rope_type"] as? String) ?? (rope?["type"] as? String)
        let theta = (j["rope_theta"] as? NSNumber) ?? ((j["rope_parameters"] as? [String: Any])?["rope_theta"] as? NSNumber)

        var parameters = 0, count = 0, types: [String: Int] = [:]
        var names = Set<String>()
        for file in weights.files.values {
            for info in file.tensors.values {
                parameters += info.elementCount
                count += 1
                types[info.dtype.rawValue, default: 0] += 1
                names.insert(info.name)
            }
        }
        let heads = int("num_attention_heads"), hidden = int("hidden_size")
        var tokenizerConfig: [String: Any] = [:]
        if let d = fm.contents(atPath: folder + "/tokenizer_config.json"),
           let t = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] { tokenizerConfig = t }
        let template = tokenizerConfig["chat_template"] != nil || fm.fileExists(atPath: folder + "/chat_template.jinja")
            || fm.fileExists(atPath: folder + "/chat_template.json")
        return ModelSummary(
            path: folder, format: .huggingFace, architecture: j["model_type"] as? String ?? "(no model_type)",
            architectureClass: cls, supported: cls.map(ModelConfig.supportedArchitectures.contains) ?? false,
            layers: int("num_hidden_layers"), hiddenSize: hidden, heads: heads,
            kvHeads: int("num_key_value_heads") ?? heads,
            headDim: int("head_dim") ?? hidden.flatMap { h in heads.flatMap { $0 > 0 ? h / $0 : nil } },
            intermediateSize: int("intermediate_size"), vocabSize: int("vocab_size"),
            contextLength: int("max_position_embeddings"), ropeTheta: theta?.doubleValue,
            ropeScaling: ropeType == "default" ? nil : ropeType,
            tiedEmbeddings: (j["tie_word_embeddings"] as? Bool) ?? !names.contains("lm_head.weight"),
            declaredType: (j["torch_dtype"] as? String) ?? (j["dtype"] as? String),
            tokenizer: fm.fileExists(atPath: folder + "/tokenizer.json") ? "tokenizer.json" : nil,
            hasChatTemplate: template, parameterCount: parameters, tensorCount: count,
            tensorTypes: sortedCounts(types), diskBytes: folderBytes(folder))
    }

    public static func load(gguf path: String) throws -> ModelSummary {
        let file = try GGUFFile(path: path)
        let arch = file.architecture ?? "(no general.architecture)"
        let k = arch + "."
        func int(_ key: String) -> Int? { file.metadata[key]?.intValue }
        var parameters = 0, types: [String: Int] = [:], allReadable = true
        for info in file.tensors.values {
            parameters += info.elementCount
            types[info.type.name, default: 0] += 1
            if !info.type.canDequantize { allReadable = false }
        }
        let type = file.metadata["general.type"]?.stringValue
        let heads = int(k + "attention.head_count"), hidden = int(k + "embedding_length")
        let vocab = int(k + "vocab_size") ?? file.tensors["token_embd.weight"]?.rows
            ?? file.metadata["tokenizer.ggml.tokens"]?.arrayValue?.count
        let scaling = file.metadata[k + "rope.scaling.type"]?.stringValue
        let isModel = type == nil || type == "model"
        let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
        return ModelSummary(
            path: path, format: .gguf, formatVersion: file.version, ggufType: type, architecture: arch,
            name: file.metadata["general.name"]?.stringValue,
            supported: isModel && LlamaModel.ggufArchitectures.contains(arch) && allReadable,
            layers: int(k + "block_count"), hiddenSize: hidden, heads: heads,
            kvHeads: int(k + "attention.head_count_kv") ?? heads,
            headDim: int(k + "attention.key_length") ?? int(k + "rope.dimension_count")
                ?? hidden.flatMap { h in heads.flatMap { $0 > 0 ? h / $0 : nil } },
            intermediateSize: int(k + "feed_forward_length"), vocabSize: vocab, contextLength: int(k + "context_length"),
            ropeTheta: file.metadata[k + "rope.freq_base"]?.doubleValue,
            ropeScaling: scaling == "none" ? nil : scaling,
            tiedEmbeddings: isModel && file.tensors["token_embd.weight"] != nil ? file.tensors["output.weight"] == nil : nil,
            declaredType: int("general.file_type").map(fileTypeName),
            adapterAlpha: file.metadata["adapter.lora.alpha"]?.doubleValue,
            tokenizer: file.metadata["tokenizer.ggml.model"]?.stringValue,
            hasChatTemplate: file.metadata["tokenizer.chat_template"] != nil,
            parameterCount: parameters, tensorCount: file.tensors.count, tensorTypes: sortedCounts(types), diskBytes: size)
    }

    /// llama.cpp's name for a `general.file_type` value (`LLAMA_FTYPE_*`, as gguf-py's LlamaFileType).
    public static func fileTypeName(_ value: Int) -> String {
        let names = [0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 7: "MOSTLY_Q8_0", 8: "MOSTLY_Q5_0",
                     9: "MOSTLY_Q5_1", 10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S", 12: "MOSTLY_Q3_K_M", 13: "MOSTLY_Q3_K_L",
                     14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M", 16: "MOSTLY_Q5_K_S", 17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K",
                     19: "MOSTLY_IQ2_XXS", 20: "MOSTLY_IQ2_XS", 21: "MOSTLY_Q2_K_S", 22: "MOSTLY_IQ3_XS", 23: "MOSTLY_IQ3_XXS",
                     24: "MOSTLY_IQ1_S", 25: "MOSTLY_IQ4_NL", 26: "MOSTLY_IQ3_S", 27: "MOSTLY_IQ3_M", 28: "MOSTLY_IQ2_S",
                     29: "MOSTLY_IQ2_M", 30: "MOSTLY_IQ4_XS", 31: "MOSTLY_IQ1_M", 32: "MOSTLY_BF16", 36: "MOSTLY_TQ1_0",
                     37: "MOSTLY_TQ2_0", 38: "MOSTLY_MXFP4_MOE", 39: "MOSTLY_NVFP4", 40: "MOSTLY_Q1_0", 1024: "GUESSED"]
        return names[value] ?? "file_type \(value)"
    }

    static func sortedCounts(_ counts: [String: Int]) -> [(name: String, count: Int)] {
        counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Bytes of the regular files under `folder`.
    static func folderBytes(_ folder: String) -> Int {
        guard let e = FileManager.default.enumerator(at: URL(fileURLWithPath: folder), includingPropertiesForKeys: [.fileSizeKey, .isRegularFileKey])
        else { return 0 }
        var total = 0
        for case let url as URL in e {
            // A Hub snapshot's files are symlinks to its blobs: what counts is what they point at.
            guard let v = try? url.resolvingSymlinksInPath().resourceValues(forKeys: [.fileSizeKey, .isRegularFileKey]), v.isRegularFile == true else { continue }
            total += v.fileSize ?? 0
        }
        return total
    }
}
