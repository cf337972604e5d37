import Foundation

extension LlamaModel {
    /// Reads a Hugging Face model folder: `config.json` and `model.safetensors`, or shards listed in
    /// `model.safetensors.index.json`. F32, F16 and BF16 tensors are converted to Float32.
    public static func load(folder: String) throws -> LlamaModel {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw LoRAError("model folder \(folder) does not exist")
        }
        let config = try ModelConfig.load(path: folder + "/config.json")
        let weights = try WeightFiles(folder: folder)
        let c = config
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim, d = c.hiddenSize, f = c.intermediateSize

        func tensor(_ name: String, _ shape: [Int]) throws -> Tensor { try weights.tensor(name, shape: shape) }
        func linear(_ name: String, _ out: Int, _ inp: Int, bias: Bool) throws -> Linear {
            Linear(weight: try tensor(name + ".weight", [out, inp]), bias: bias ? try tensor(name + ".bias", [out]) : nil)
        }
        let embedding = FrozenMatrix(try tensor("model.embed_tokens.weight", [c.vocabSize, d]))
        var blocks: [TransformerBlock] = []
        for l in 0..<c.numLayers {
            let p = "model.layers.\(l)."
            blocks.append(TransformerBlock(
                attentionNorm: try tensor(p + "input_layernorm.weight", [d]),
                q: try linear(p + "self_attn.q_proj", q, d, bias: c.qkvBias),
                k: try linear(p + "self_attn.k_proj", kv, d, bias: c.qkvBias),
                v: try linear(p + "self_attn.v_proj", kv, d, bias: c.qkvBias),
                o: try linear(p + "self_attn.o_proj", d, q, bias: c.oBias),
                mlpNorm: try tensor(p + "post_attention_layernorm.weight", [d]),
                gate: try linear(p + "mlp.gate_proj", f, d, bias: c.mlpBias),
                up: try linear(p + "mlp.up_proj", f, d, bias: c.mlpBias),
                down: try linear(p + "mlp.down_proj", d, f, bias: c.mlpBias)))
        }
        let norm = try tensor("model.norm.weight", [d])
        // transformers ties the head to the embedding whenever tie_word_embeddings is set.
        let head = c.tieWordEmbeddings ? Linear(matrix: embedding) : try linear("lm_head", c.vocabSize, d, bias: false)
        let model = LlamaModel(config: c, embedding: embedding, blocks: blocks, norm: norm, head: head)
        model.sourcePath = folder
        return model
    }
}

/// The safetensors file(s) of a model folder, with a name → file map for sharded checkpoints.
struct WeightFiles {
    let files: [String: SafetensorsFile]
    let fileOf: [String: String]

    init(folder: String) throws {
        let fm = FileManager.default
        let index = folder + "/model.safetensors.index.json", single = folder + "/model.safetensors"
        if fm.fileExists(atPath: index) {
            guard let data = fm.contents(atPath: index),
                  let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let map = json["weight_map"] as? [String: String] else {
                throw LoRAError("\(index) has no \"weight_map\" object")
            }
            var files: [String: SafetensorsFile] = [:]
            for shard in Set(map.values) {
                guard !shard.contains("/") else { throw LoRAError("\(index) names a shard outside the folder: \(shard)") }
                files[shard] = try SafetensorsFile(path: folder + "/" + shard)
            }
            self.files = files
            self.fileOf = map
        } else if fm.fileExists(atPath: single) {
            let file = try SafetensorsFile(path: single)
            files = ["model.safetensors": file]
            fileOf = Dictionary(uniqueKeysWithValues: file.names.map { ($0, "model.safetensors") })
        } else if fm.fileExists(atPath: folder + "/pytorch_model.bin") {
            throw LoRAError("\(folder) holds only pytorch_model.bin, a pickle file, which is never executed here; convert it to safetensors first")
        } else {
            throw LoRAError("\(folder) has neither model.safetensors nor model.safetensors.index.json")
        }
    }

    func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        guard let fileName = fileOf[name], let file = files[fileName], let info = file.tensors[name] else {
            throw LoRAError("the model has no tensor \(name)")
        }
        guard info.shape == shape else {
            throw LoRAError("tensor \(name) has shape \(info.shape), expected \(shape) from config.json")
        }
        let t = Tensor(shape: shape)
        try file.floats(name, into: t.data, count: t.count)
        return t
    }
}
