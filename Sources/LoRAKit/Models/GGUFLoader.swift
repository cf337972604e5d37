import Foundation

extension LlamaModel {
    /// GGUF architectures this engine reads (llama.cpp writes Mistral and SmolLM as "llama").
    public static let ggufArchitectures = ["llama", "qwen2"]

    /// Reads a llama- or qwen2-architecture GGUF file. Linear layers and the embedding stay in their
    /// quantized (or F16) form and are expanded a panel at a time during products; `dequantize`
    /// expands everything to Float32 at load instead. llama.cpp's converter reorders the q and k
    /// projection rows of llama models for its RoPE layout; they are read back in Hugging Face's
    /// order, so the model equals the transformers model of the same weights.
    public static func load(gguf path: String, dequantize: Bool = false) throws -> LlamaModel {
        let file = try GGUFFile(path: path)
        let arch = file.architecture ?? "(none)"
        guard ggufArchitectures.contains(arch) else {
            throw LoRAError("\(path): GGUF architecture \(arch) is not supported (supported: \(ggufArchitectures.joined(separator: ", ")))")
        }
        let config = try ggufConfig(file, arch: arch)
        let c = config, hd = c.headDim

        func matrix(_ name: String, rows: Int, columns: Int, permuteHeads: Int? = nil) throws -> FrozenMatrix {
            let info = try file.info(name)
            guard info.rows == rows && info.rowLength == columns else {
                throw LoRAError("\(path): tensor \(name) is \(info.rows)×\(info.rowLength), expected \(rows)×\(columns) from the metadata")
            }
            guard info.type.canDequantize else { throw LoRAError("\(path): tensor \(name) has type \(info.type), which is not supported") }
            var packed: any PackedMatrix = try file.matrix(name)
            if let heads = permuteHeads { packed = RopeRowOrder(packed, heads: heads, headDim: hd) }
            let m = FrozenMatrix(packed: packed)
            if dequantize || info.type == .F32 { return FrozenMatrix(m.expanded()) }
            return m
        }
        func vector(_ name: String, _ count: Int) throws -> Tensor {
            let values = try file.floats(name)
            guard values.count == count else { throw LoRAError("\(path): tensor \(name) has \(values.count) values, expected \(count)") }
            return Tensor(shape: [count], values: values)
        }
        func optionalVector(_ name: String, _ count: Int) throws -> Tensor? {
            file.tensors[name] == nil ? nil : try vector(name, count)
        }
        let permute = arch == "llama"
        let q = c.numHeads * hd, kv = c.numKVHeads * hd, d = c.hiddenSize, f = c.intermediateSize
        let embedding = try matrix("token_embd.weight", rows: c.vocabSize, columns: d)
        var blocks: [TransformerBlock] = []
        for l in 0..<c.numLayers {
            let p = "blk.\(l)."
            blocks.append(TransformerBlock(
                attentionNorm: try vector(p + "attn_norm.weight", d),
                q: Linear(matrix: try matrix(p + "attn_q.weight", rows: q, columns: d, permuteHeads: permute ? c.numHeads : nil),
                          bias: try optionalVector(p + "attn_q.bias", q)),
                k: Linear(matrix: try matrix(p + "attn_k.weight", rows: kv, columns: d, permuteHeads: permute ? c.numKVHeads : nil),
                          bias: try optionalVector(p + "attn_k.bias", kv)),
                v: Linear(matrix: try matrix(p + "attn_v.weight", rows: kv, columns: d), bias: try optionalVector(p + "attn_v.bias", kv)),
                o: Linear(matrix: try matrix(p + "attn_output.weight", rows: d, columns: q), bias: try optionalVector(p + "attn_output.bias", d)),
                mlpNorm: try vector(p + "ffn_norm.weight", d),
                gate: Linear(matrix: try matrix(p + "ffn_gate.weight", rows: f, columns: d)),
                up: Linear(matrix: try matrix(p + "ffn_up.weight", rows: f, columns: d)),
                down: Linear(matrix: try matrix(p + "ffn_down.weight", rows: d, columns: f))))
        }
        let norm = try vector("output_norm.weight", d)
        let head = file.tensors["output.weight"] == nil
            ? Linear(matrix: embedding) : Linear(matrix: try matrix("output.weight", rows: c.vocabSize, columns: d))
        let model = LlamaModel(config: config, embedding: embedding, blocks: blocks, norm: norm, head: head)
        model.sourcePath = path
        return model
    }

    static func ggufConfig(_ file: GGUFFile, arch: String) throws -> ModelConfig {
        let k = arch + "."
        let heads = try file.int(k + "attention.head_count")
        let hidden = try file.int(k + "embedding_length")
        let embd = try file.info("token_embd.weight")
        var c = ModelConfig(
            architecture: arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM",
            hiddenSize: hidden, intermediateSize: try file.int(k + "feed_forward_length"),
            numLayers: try file.int(k + "block_count"), numHeads: heads,
            numKVHeads: try file.int(k + "attention.head_count_kv", default: heads),
            headDim: try file.int(k + "rope.dimension_count", default: heads > 0 ? hidden / heads : 0),
            vocabSize: embd.rows, rmsNormEps: try file.float(k + "attention.layer_norm_rms_epsilon", default: 1e-5),
            ropeTheta: try file.float(k + "rope.freq_base", default: 10000),
            tieWordEmbeddings: file.tensors["output.weight"] == nil,
            qkvBias: file.tensors["blk.0.attn_q.bias"] != nil, oBias: file.tensors["blk.0.attn_output.bias"] != nil,
            maxPositionEmbeddings: try file.int(k + "context_length", default: 2048))
        if file.tensors["rope_freqs.weight"] != nil { c.ropeFrequencyFactors = try file.floats("rope_freqs.weight") }
        if let type = file.metadata[k + "rope.scaling.type"]?.stringValue, type == "linear" {
            c.ropeLinearFactor = try file.float(k + "rope.scaling.factor", default: 1)
        } else if let type = file.metadata[k + "rope.scaling.type"]?.stringValue, type != "none" {
            throw LoRAError("\(file.path): rope scaling \"\(type)\" is not supported")
        }
        // The metadata's own names in messages; vocab_size comes from token_embd.weight's rows.
        let keys = ["hidden_size": k + "embedding_length", "intermediate_size": k + "feed_forward_length",
                    "num_hidden_layers": k + "block_count", "num_attention_heads": k + "attention.head_count",
                    "num_key_value_heads": k + "attention.head_count_kv", "head_dim": k + "rope.dimension_count",
                    "vocab_size": "the row count of token_embd.weight", "rms_norm_eps": k + "attention.layer_norm_rms_epsilon",
                    "rope_theta": k + "rope.freq_base", "rope_scaling.factor": k + "rope.scaling.factor",
                    "max_position_embeddings": k + "context_length"]
        try c.validate(source: file.path, keys: keys)
        return c
    }
}

/// Rows of a llama.cpp q/k projection read in Hugging Face's order. Within each head llama.cpp
/// interleaves the two rotary halves (row 2i + j holds Hugging Face row j·headDim/2 + i).
final class RopeRowOrder: PackedMatrix, @unchecked Sendable {
    let base: any PackedMatrix
    let headDim: Int
    var rows: Int { base.rows }
    var columns: Int { base.columns }
    var byteCount: Int { base.byteCount }

    init(_ base: any PackedMatrix, heads: Int, headDim: Int) {
        precondition(heads * headDim == base.rows && headDim % 2 == 0, "q/k rows do not split into heads")
        self.base = base
        self.headDim = headDim
    }

    /// The llama.cpp row holding Hugging Face row r.
    func sourceRow(_ r: Int) -> Int {
        let half = headDim / 2, h = r / headDim, within = r % headDim
        return h * headDim + 2 * (within % half) + within / half
    }

    func unpack(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        for r in range {
            let s = sourceRow(r)
            base.unpack(rows: s..<(s + 1), into: destination + (r - range.lowerBound) * columns)
        }
    }

    var hasDotProducts: Bool { base.hasDotProducts }
    var hasQ8DotProducts: Bool { base.hasQ8DotProducts }

    func dotProducts(first: Int, step: Int, count: Int, x: UnsafePointer<Float>, ldx: Int, nx: Int, beta: Float,
                     y: UnsafeMutablePointer<Float>, ldy: Int) {
        forEachRun(first: first, step: step, count: count) { source, run, offset in
            base.dotProducts(first: source, step: 2, count: run, x: x, ldx: ldx, nx: nx, beta: beta, y: y + offset, ldy: ldy)
        }
    }

    func dotProducts(first: Int, step: Int, count: Int, x: Q8Vectors, beta: Float, y: UnsafeMutablePointer<Float>, ldy: Int) {
        forEachRun(first: first, step: step, count: count) { source, run, offset in
            base.dotProducts(first: source, step: 2, count: run, x: x, beta: beta, y: y + offset, ldy: ldy)
        }
    }

    /// Each half of a head is every other llama.cpp row: one strided run (its first source row, its
    /// length, its offset from `first`) per half-head.
    private func forEachRun(first: Int, step: Int, count: Int, _ body: (Int, Int, Int) -> Void) {
        precondition(step == 1, "RopeRowOrder: dot products of consecutive rows only")
        let half = headDim / 2
        var r = first
        while r < first + count {
            let head = r / headDim * headDim, within = r % headDim
            let end = min(first + count, head + (within < half ? half : headDim))
            body(sourceRow(r), end - r, r - first)
            r = end
        }
    }
}
