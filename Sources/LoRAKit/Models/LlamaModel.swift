import Foundation

/// One decoder block: pre-norm attention and a SwiGLU MLP, each with a residual connection.
public final class TransformerBlock: @unchecked Sendable {
    public let attentionNorm: Tensor
    public let q: Linear, k: Linear, v: Linear, o: Linear
    public let mlpNorm: Tensor
    public let gate: Linear, up: Linear, down: Linear

    public init(attentionNorm: Tensor, q: Linear, k: Linear, v: Linear, o: Linear,
                mlpNorm: Tensor, gate: Linear, up: Linear, down: Linear) {
        self.attentionNorm = attentionNorm
        self.q = q; self.k = k; self.v = v; self.o = o
        self.mlpNorm = mlpNorm
        self.gate = gate; self.up = up; self.down = down
    }

    /// The block's linear layers with their Hugging Face module names, in forward order.
    public var linears: [(module: String, linear: Linear)] {
        [("self_attn.q_proj", q), ("self_attn.k_proj", k), ("self_attn.v_proj", v), ("self_attn.o_proj", o),
         ("mlp.gate_proj", gate), ("mlp.up_proj", up), ("mlp.down_proj", down)]
    }
}

/// A place where an adapter can attach: a linear layer and its Hugging Face module path.
public struct LinearSite: @unchecked Sendable {
    /// e.g. "model.layers.3.self_attn.q_proj" or "lm_head".
    public let path: String
    /// The short module name used by target_modules, e.g. "q_proj".
    public let name: String
    /// The block index, nil for the head.
    public let layer: Int?
    public let linear: Linear
}

/// A Llama-family causal language model (Llama 2/3, SmolLM, TinyLlama, Mistral, Qwen2) held in Float32.
public final class LlamaModel: @unchecked Sendable {
    public let config: ModelConfig
    /// The token embedding table, [vocab × hidden]; the head shares it when the model ties them.
    public let embedding: FrozenMatrix
    public let blocks: [TransformerBlock]
    public let norm: Tensor
    public let head: Linear
    /// The folder the model was read from, if any (tokenizer files are copied from it on export).
    public var sourcePath: String?
    /// The activation arena of the last forward pass, kept for reuse by the next one.
    let arena = ActivationSlot()
    /// Gradient checkpointing: when true, `forwardBackward` keeps only each block's input and runs a
    /// block's forward again right before its backward. It trades one more forward pass per step
    /// (roughly a third more time) for most of the training memory: the attention and MLP
    /// activations and adapter buffers (dropout masks included) are held for one block instead of
    /// every block. Losses and gradients are bitwise the same either way.
    public var gradientCheckpointing = false
    /// Asked between blocks of `forwardBackward`'s passes: when it says yes, the step in flight is
    /// given up (`StepAbandoned` is thrown, the gradients left partial), so that a process that has
    /// about a second left (mpirun's Ctrl-C) can still save the last finished step.
    public var abandonsStep: (() -> Bool)?

    public init(config: ModelConfig, embedding: FrozenMatrix, blocks: [TransformerBlock], norm: Tensor, head: Linear) {
        self.config = config
        self.embedding = embedding
        self.blocks = blocks
        self.norm = norm
        self.head = head
    }

    /// Every linear layer an adapter can attach to, blocks first, then the head.
    public var sites: [LinearSite] {
        var all: [LinearSite] = []
        for (l, block) in blocks.enumerated() {
            for (module, linear) in block.linears {
                all.append(LinearSite(path: "model.layers.\(l).\(module)", name: String(module.split(separator: ".").last!),
                                      layer: l, linear: linear))
            }
        }
        all.append(LinearSite(path: "lm_head", name: "lm_head", layer: nil, linear: head))
        return all
    }

    /// Every trainable parameter, in site order.
    public var trainableParameters: [Parameter] {
        sites.flatMap { $0.linear.adapter?.parameters ?? [] }
    }

    public var headIsTied: Bool { head.matrix === embedding }

    /// The number format of every linear layer's base products, the head's included (see `Precision`).
    /// Setting bf16 also stores the dense base weights in bfloat16 from then on, half their memory
    /// (a head tied to the embedding stays Float32 for the embedding's sake; quantized weights stay
    /// as they are). Setting bf16 on a CPU without it is a programming error: check
    /// `Precision.bf16.isAvailable`.
    public var precision: Precision {
        get { head.precision }
        set {
            precondition(newValue.isAvailable, "LlamaModel.precision: this CPU cannot run \(newValue) products")
            for site in sites {
                site.linear.precision = newValue
                if newValue == .bf16 && !(site.linear === head && headIsTied) { site.linear.storeWeightInBF16() }
            }
        }
    }

    /// Whether decoding rounds the activations entering quantized weights' products to 8 bits per
    /// block of 32, as llama.cpp does (see `Linear.quantizesDecodeActivations`). Off by default: with
    /// it on, the logits are no longer those of the dequantized model in fp32.
    public var quantizesDecodeActivations: Bool {
        get { head.quantizesDecodeActivations }
        set { for site in sites { site.linear.quantizesDecodeActivations = newValue } }
    }

    /// Whether any linear layer would decode with 8-bit activations (`quantizesDecodeActivations`).
    public var hasQ8DecodeProducts: Bool { sites.contains { $0.linear.hasQ8DecodeProducts } }

    /// The base weights under their Hugging Face names (the head only when untied), for export.
    public func namedWeights() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = [("model.embed_tokens.weight", embedding.expanded())]
        for (l, b) in blocks.enumerated() {
            let p = "model.layers.\(l)."
            out.append((p + "input_layernorm.weight", b.attentionNorm))
            out.append((p + "post_attention_layernorm.weight", b.mlpNorm))
            for (module, linear) in b.linears {
                out.append((p + module + ".weight", linear.weight))
                if let bias = linear.bias { out.append((p + module + ".bias", bias)) }
            }
        }
        out.append(("model.norm.weight", norm))
        if !headIsTied { out.append(("lm_head.weight", head.weight)) }
        return out
    }

    /// A model with random weights (normal, std 0.02; norms 1) of the given shapes, for benchmarks and tests.
    public static func random(config c: ModelConfig, seed: UInt64 = 0) -> LlamaModel {
        var rng = SeededRandom(seed: seed)
        func normal(_ shape: [Int]) -> Tensor {
            let t = Tensor(shape: shape)
            // Fill in parallel from per-chunk generators: fast for 100M-parameter models, still seeded.
            let chunks = 64, n = t.count, base = rng.next(), p = t.data
            Parallel.forEach(chunks) { ch in
                var r = SeededRandom(seed: base &+ UInt64(ch))
                for i in (n * ch / chunks)..<(n * (ch + 1) / chunks) { p[i] = 0.02 * r.normal() }
            }
            return t
        }
        func ones(_ n: Int) -> Tensor { Tensor(shape: [n], values: [Float](repeating: 1, count: n)) }
        func linear(_ out: Int, _ inp: Int, bias: Bool) -> Linear {
            Linear(weight: normal([out, inp]), bias: bias ? normal([out]) : nil)
        }
        let d = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim, f = c.intermediateSize
        let embedding = FrozenMatrix(normal([c.vocabSize, d]))
        let blocks = (0..<c.numLayers).map { _ in
            TransformerBlock(attentionNorm: ones(d), q: linear(q, d, bias: c.qkvBias), k: linear(kv, d, bias: c.qkvBias),
                             v: linear(kv, d, bias: c.qkvBias), o: linear(d, q, bias: c.oBias), mlpNorm: ones(d),
                             gate: linear(f, d, bias: c.mlpBias), up: linear(f, d, bias: c.mlpBias),
                             down: linear(d, f, bias: c.mlpBias))
        }
        let head = c.tieWordEmbeddings ? Linear(matrix: embedding) : linear(c.vocabSize, d, bias: false)
        return LlamaModel(config: c, embedding: embedding, blocks: blocks, norm: ones(d), head: head)
    }
}
