import Foundation

/// Everything one forward pass keeps for its backward, laid out once for a (batch, sequence) shape
/// and reused across steps. Only what cannot be recomputed cheaply is kept per block: the block
/// input, q/k/v after RoPE, the attention output and its log-sum-exp, the mid-block residual and
/// the MLP's gate and up projections. Normalized inputs and the SwiGLU product are recomputed.
///
/// Only the block inputs are kept for every block when all blocks share one `Block`: inference
/// runs no backward, and gradient checkpointing refills the shared `Block` from a block's input
/// right before that block's backward.
final class Activations: @unchecked Sendable {
    let batch: Int, seqLen: Int, rows: Int, training: Bool
    /// Whether every block uses blocks[0].
    let sharesBlock: Bool

    final class Block {
        let rstd1: Tensor, q: Tensor, k: Tensor, v: Tensor, attn: Tensor, lse: Tensor
        let x2: Tensor, rstd2: Tensor, gate: Tensor, up: Tensor
        /// Under bf16 precision, gate and up rounded to bfloat16 (`gateUpBits`), where the MLP keeps
        /// them between passes; gate and up are then Float32 scratch shared by every block
        /// (`Activations.sharedGateUp`) unless the Block is itself shared.
        let gateUp16: Tensor?
        /// Adapter buffers, one per linear layer in `TransformerBlock.linears` order (empty when none).
        let saved: [Tensor]
        init(_ c: ModelConfig, _ batch: Int, _ T: Int, savedFloatsPerRow: [Int], bf16: Bool, sharedGateUp: (Tensor, Tensor)?) {
            let n = batch * T, q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim, f = c.intermediateSize
            rstd1 = Tensor(shape: [n]); self.q = Tensor(shape: [n, q]); k = Tensor(shape: [n, kv])
            v = Tensor(shape: [n, kv]); attn = Tensor(shape: [n, q]); lse = Tensor(shape: [batch * c.numHeads * T])
            x2 = Tensor(shape: [n, c.hiddenSize]); rstd2 = Tensor(shape: [n])
            (gate, up) = sharedGateUp ?? (Tensor(shape: [n, f]), Tensor(shape: [n, f]))
            gateUp16 = bf16 ? Tensor(shape: [n * f]) : nil  // 2·n·f bfloat16 values in n·f floats' room
            saved = savedFloatsPerRow.map { Tensor(shape: [n * $0]) }
        }

        /// gate's and up's bfloat16 halves of `gateUp16`.
        var gateUpBits: (gate: UnsafeMutablePointer<UInt16>, up: UnsafeMutablePointer<UInt16>)? {
            guard let gateUp16 else { return nil }
            let bits = UnsafeMutableRawPointer(gateUp16.data).bindMemory(to: UInt16.self, capacity: 2 * gate.count)
            return (bits, bits + gate.count)
        }

        /// The tensors this Block alone holds.
        func tensors(sharingGateUp: Bool) -> [Tensor] {
            [rstd1, q, k, v, attn, lse, x2, rstd2] + (sharingGateUp ? [] : [gate, up]) + (gateUp16.map { [$0] } ?? []) + saved
        }
    }

    /// xs[l] is the input of block l; xs[L] the input of the final norm.
    let xs: [Tensor]
    /// One per model block, or a single one when `sharesBlock`; use `block(_:)`.
    let blocks: [Block]
    /// Whether the model's base products run in bf16, so that gate and up are rounded to bfloat16
    /// (as PyTorch's autocast leaves them) and kept so: half the MLP's activation memory.
    let roundsGateUp: Bool
    /// The Float32 gate and up every Block computes in, when each Block keeps its own only in bf16.
    let sharedGateUp: (Tensor, Tensor)?
    let rstdFinal: Tensor
    // Scratch shared by all blocks.
    let h: Tensor, a: Tensor, da: Tensor, dres: Tensor, dh: Tensor, dattn: Tensor, dq: Tensor, dk: Tensor, dv: Tensor
    let cos: [Float], sin: [Float]
    // The head's working set for `LlamaModel.headChunk` rows: inputs, logits, input gradient, adapter buffer.
    let headX: Tensor, headLogits: Tensor, headDx: Tensor, headSaved: Tensor

    init(model: LlamaModel, batch: Int, seqLen: Int, training: Bool) {
        let c = model.config, n = batch * seqLen
        self.batch = batch; self.seqLen = seqLen; self.rows = n; self.training = training
        sharesBlock = Self.sharesBlock(model, training: training)
        xs = (0...c.numLayers).map { _ in Tensor(shape: [n, c.hiddenSize]) }
        roundsGateUp = model.precision == .bf16
        sharedGateUp = roundsGateUp && !sharesBlock
            ? (Tensor(shape: [n, c.intermediateSize]), Tensor(shape: [n, c.intermediateSize])) : nil
        blocks = Self.savedFloatsPerRow(model, training: training).map { [sharedGateUp, roundsGateUp] in
            Block(c, batch, seqLen, savedFloatsPerRow: $0, bf16: roundsGateUp, sharedGateUp: sharedGateUp)
        }
        rstdFinal = Tensor(shape: [n])
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
        h = Tensor(shape: [n, c.hiddenSize]); a = Tensor(shape: [n, c.intermediateSize])
        da = Tensor(shape: training ? [n, c.intermediateSize] : [0])
        dres = Tensor(shape: training ? [n, c.hiddenSize] : [0]); dh = Tensor(shape: training ? [n, c.hiddenSize] : [0])
        dattn = Tensor(shape: training ? [n, q] : [0]); dq = Tensor(shape: training ? [n, q] : [0])
        dk = Tensor(shape: training ? [n, kv] : [0]); dv = Tensor(shape: training ? [n, kv] : [0])
        (cos, sin) = model.rope.tables(length: seqLen)
        let chunk = LlamaModel.headChunk
        headX = Tensor(shape: [chunk, c.hiddenSize]); headLogits = Tensor(shape: [chunk, c.vocabSize])
        headDx = Tensor(shape: training ? [chunk, c.hiddenSize] : [0])
        headSaved = Tensor(shape: [chunk * model.head.savedFloatsPerRow(training: training)])
    }

    static func sharesBlock(_ model: LlamaModel, training: Bool) -> Bool {
        !training || model.gradientCheckpointing
    }

    /// The adapter buffer sizes of each Block, per row; a shared Block takes the largest at each
    /// position, so that it fits every block.
    static func savedFloatsPerRow(_ model: LlamaModel, training: Bool) -> [[Int]] {
        let perBlock = model.blocks.map { $0.linears.map { $0.linear.savedFloatsPerRow(training: training) } }
        guard sharesBlock(model, training: training), let first = perBlock.first else { return perBlock }
        return [perBlock.reduce(first) { zip($0, $1).map { max($0, $1) } }]
    }

    func block(_ l: Int) -> Block { sharesBlock ? blocks[0] : blocks[l] }

    func fits(_ b: Int, _ t: Int, training: Bool, model: LlamaModel) -> Bool {
        b == batch && t == seqLen && training == self.training
            && sharesBlock == Self.sharesBlock(model, training: training) && roundsGateUp == (model.precision == .bf16)
            && headSaved.count == LlamaModel.headChunk * model.head.savedFloatsPerRow(training: training)
            && blocks.map { $0.saved.map(\.count) } == Self.savedFloatsPerRow(model, training: training).map { $0.map { rows * $0 } }
    }

    /// The floats the arena holds.
    var floatCount: Int {
        let tensors = xs + blocks.flatMap { $0.tensors(sharingGateUp: sharedGateUp != nil) }
            + (sharedGateUp.map { [$0.0, $0.1] } ?? [])
            + [rstdFinal, h, a, da, dres, dh, dattn, dq, dk, dv, headX, headLogits, headDx, headSaved]
        return tensors.reduce(cos.count + sin.count) { $0 + $1.count }
    }
}

/// Holds a model's activation arena between passes.
final class ActivationSlot: @unchecked Sendable {
    var value: Activations?
}

extension LlamaModel {
    var rope: RoPE {
        RoPE(headDim: config.headDim, theta: config.ropeTheta, llama3: config.ropeScaling, linearFactor: config.ropeLinearFactor,
             frequencyFactors: config.ropeFrequencyFactors)
    }
    var attention: CausalAttention {
        var attention = CausalAttention(heads: config.numHeads, kvHeads: config.numKVHeads, headDim: config.headDim)
        attention.precision = precision
        return attention
    }

    /// Rows of the head's output computed at a time, so the [tokens × vocab] logits never exist whole.
    static let headChunk = 128

    func activations(batch: Int, seqLen: Int, training: Bool) -> Activations {
        if let a = arena.value, a.fits(batch, seqLen, training: training, model: self) { return a }
        arena.value = nil  // free the old layout before allocating the new one
        let a = Activations(model: self, batch: batch, seqLen: seqLen, training: training)
        arena.value = a
        return a
    }

    /// Releases the activation arena (it is re-created on the next forward).
    public func releaseActivations() { arena.value = nil }

    private func checkBatch(_ batch: Batch) throws {
        if let w = config.slidingWindow, batch.seqLen > w {
            throw LoRAError("sequence length \(batch.seqLen) exceeds the model's sliding window \(w), which is not implemented")
        }
        if let bad = batch.tokens.first(where: { $0 < 0 || Int($0) >= config.vocabSize }) {
            throw LoRAError("token id \(bad) is outside the vocabulary (size \(config.vocabSize))")
        }
        if let bad = batch.targets.first(where: { $0 != Batch.ignoreIndex && ($0 < 0 || Int($0) >= config.vocabSize) }) {
            throw LoRAError("target id \(bad) is outside the vocabulary (size \(config.vocabSize))")
        }
    }

    // MARK: forward

    private func forwardBlocks(_ batch: Batch, _ act: Activations, abandonable: Bool = false) throws {
        let c = config, n = act.rows
        batch.tokens.withUnsafeBufferPointer { ids in
            Embedding.forward(table: embedding, ids: ids.baseAddress!, count: n, out: act.xs[0].data)
        }
        for l in blocks.indices {
            if abandonable { try checkAbandoned() }
            forwardBlock(l, act)
        }
        RMSNorm.forward(x: act.xs[c.numLayers].data, weight: norm.data, eps: c.rmsNormEps, rows: n, dim: c.hiddenSize,
                        y: act.h.data, rstd: act.rstdFinal.data)
    }

    /// Runs block l from act.xs[l], filling act.block(l) and act.xs[l + 1].
    private func forwardBlock(_ l: Int, _ act: Activations) {
        let c = config, n = act.rows, d = c.hiddenSize
        let rope = self.rope, attention = self.attention, training = act.training
        let block = blocks[l], A = act.block(l), x = act.xs[l], h = act.h
        RMSNorm.forward(x: x.data, weight: block.attentionNorm.data, eps: c.rmsNormEps, rows: n, dim: d,
                        y: h.data, rstd: A.rstd1.data)
        block.q.forward(x: h.data, rows: n, y: A.q.data, saved: A.saved[0].data, training: training)
        block.k.forward(x: h.data, rows: n, y: A.k.data, saved: A.saved[1].data, training: training)
        block.v.forward(x: h.data, rows: n, y: A.v.data, saved: A.saved[2].data, training: training)
        rope.apply(A.q.data, rows: n, heads: c.numHeads, seqLen: act.seqLen, cos: act.cos, sin: act.sin)
        rope.apply(A.k.data, rows: n, heads: c.numKVHeads, seqLen: act.seqLen, cos: act.cos, sin: act.sin)
        attention.forward(q: A.q.data, k: A.k.data, v: A.v.data, batch: act.batch, seqLen: act.seqLen,
                          out: A.attn.data, lse: A.lse.data)
        A.x2.copy(from: x)
        block.o.forward(x: A.attn.data, rows: n, y: A.x2.data, beta: 1, saved: A.saved[3].data, training: training)
        RMSNorm.forward(x: A.x2.data, weight: block.mlpNorm.data, eps: c.rmsNormEps, rows: n, dim: d,
                        y: h.data, rstd: A.rstd2.data)
        block.gate.forward(x: h.data, rows: n, y: A.gate.data, saved: A.saved[4].data, training: training)
        block.up.forward(x: h.data, rows: n, y: A.up.data, saved: A.saved[5].data, training: training)
        if let bits = A.gateUpBits {
            // Rounded, and computed on from the rounded values, so that the backward (which reads
            // them back) differentiates the function the forward computed.
            BFloat16.round(A.gate.data, count: A.gate.count, into: bits.gate)
            BFloat16.round(A.up.data, count: A.up.count, into: bits.up)
            BFloat16.widen(bits.gate, count: A.gate.count, into: A.gate.data)
            BFloat16.widen(bits.up, count: A.up.count, into: A.up.data)
        }
        SwiGLU.forward(gate: A.gate.data, up: A.up.data, count: A.gate.count, out: act.a.data)
        act.xs[l + 1].copy(from: A.x2)
        block.down.forward(x: act.a.data, rows: n, y: act.xs[l + 1].data, beta: 1, saved: A.saved[6].data, training: training)
    }

    /// Logits for every position, [batch × seqLen × vocab].
    public func logits(_ batch: Batch) throws -> Tensor {
        try checkBatch(batch)
        let act = activations(batch: batch.batchSize, seqLen: batch.seqLen, training: false)
        try forwardBlocks(batch, act)
        let out = Tensor(shape: [batch.batchSize, batch.seqLen, config.vocabSize])
        let saved = Tensor(shape: [act.rows * head.savedFloatsPerRow(training: false)])
        head.forward(x: act.h.data, rows: act.rows, y: out.data, saved: saved.data, training: false)
        return out
    }

    /// Mean cross-entropy over the batch's targets, without gradients.
    public func loss(_ batch: Batch) throws -> (loss: Double, tokens: Int) {
        try checkBatch(batch)
        let act = activations(batch: batch.batchSize, seqLen: batch.seqLen, training: false)
        try forwardBlocks(batch, act)
        let (sum, count) = headLoss(batch, act, gradScale: nil)
        return (count == 0 ? 0 : sum / Double(count), count)
    }

    /// Forward and backward: returns the mean loss over the batch's targets and adds
    /// `gradScale` × its gradient to every adapter parameter's `grad`.
    @discardableResult
    public func forwardBackward(_ batch: Batch, gradScale: Float = 1) throws -> Double {
        try checkBatch(batch)
        let act = activations(batch: batch.batchSize, seqLen: batch.seqLen, training: true)
        // A block's LoRAs draw their dropout masks only in that block's forward, so the state of
        // their generators now is the one a recompute of the block must start from.
        let generators = act.sharesBlock ? dropoutGenerators() : []
        try forwardBlocks(batch, act, abandonable: true)
        let count = batch.targetCount
        guard count > 0 else { return 0 }
        act.dres.zero()
        let (sum, _) = headLoss(batch, act, gradScale: gradScale / Float(count))
        try backwardBlocks(act, generators)
        return sum / Double(count)
    }

    /// Thrown by `forwardBackward` when `abandonsStep` says yes.
    public struct StepAbandoned: Error {}

    private func checkAbandoned() throws {
        if let abandonsStep, abandonsStep() { throw StepAbandoned() }
    }

    /// Runs the head and cross-entropy over the rows that have a target, `headChunk` rows at a time.
    /// With a gradScale, also accumulates the head adapter's gradients and writes the gradient of the
    /// final norm's input into act.dres.
    private func headLoss(_ batch: Batch, _ act: Activations, gradScale: Float?) -> (Double, Int) {
        let d = config.hiddenSize, vocab = config.vocabSize
        let rows = batch.targets.indices.filter { batch.targets[$0] != Batch.ignoreIndex }
        let chunk = Self.headChunk, training = gradScale != nil
        let x = act.headX, logits = act.headLogits, dx = act.headDx, saved = act.headSaved
        var targets = [Int32](repeating: 0, count: chunk)
        var total = 0.0
        for start in stride(from: 0, to: rows.count, by: chunk) {
            let m = min(chunk, rows.count - start)
            for i in 0..<m {
                (x.data + i * d).update(from: act.h.data + rows[start + i] * d, count: d)
                targets[i] = batch.targets[rows[start + i]]
            }
            head.forward(x: x.data, rows: m, y: logits.data, saved: saved.data, training: training)
            total += targets.withUnsafeBufferPointer {
                CrossEntropy.forwardBackward(logits: logits.data, targets: $0.baseAddress!, rows: m, vocab: vocab,
                                             gradScale: gradScale)
            }
            guard training else { continue }
            head.backward(dy: logits.data, x: x.data, rows: m, saved: saved.data, dx: dx.data, accumulate: false)
            for i in 0..<m {
                let dst = act.dh.data + rows[start + i] * d, src = dx.data + i * d
                dst.update(from: src, count: d)
            }
        }
        if training {
            // Rows without a target get no gradient from the head.
            var hasTarget = [Bool](repeating: false, count: act.rows)
            for r in rows { hasTarget[r] = true }
            for r in 0..<act.rows where !hasTarget[r] { (act.dh.data + r * d).update(repeating: 0, count: d) }
            RMSNorm.backward(dy: act.dh.data, x: act.xs[config.numLayers].data, weight: norm.data,
                             rstd: act.rstdFinal.data, rows: act.rows, dim: d, dx: act.dres.data)
        }
        return (total, rows.count)
    }

    // MARK: backward

    /// The lowest block holding an active adapter; no input gradient is computed below it.
    var lowestAdaptedBlock: Int? {
        blocks.firstIndex { b in b.linears.contains { $0.linear.activeAdapter != nil } }
    }

    /// Each block's adapters with the current state of their random generators (dropout masks).
    private func dropoutGenerators() -> [[(adapter: any LinearAdapter, state: [SeededRandom])]] {
        blocks.map { $0.linears.compactMap { $0.linear.activeAdapter.map { ($0, $0.generators) } } }
    }

    /// With a shared Block, `generators` holds each block's dropout generators as they were before
    /// the forward pass (see `dropoutGenerators`).
    private func backwardBlocks(_ act: Activations, _ generators: [[(adapter: any LinearAdapter, state: [SeededRandom])]]) throws {
        guard let lowest = lowestAdaptedBlock else { return }
        let c = config, n = act.rows, d = c.hiddenSize
        let rope = self.rope, attention = self.attention
        let dres = act.dres, h = act.h
        for l in stride(from: blocks.count - 1, through: lowest, by: -1) {
            try checkAbandoned()
            let block = blocks[l], A = act.block(l), x = act.xs[l]
            // The shared Block still holds the top block from the forward pass; any other block is
            // run again from its input, drawing the same dropout masks, which also leaves its
            // generators where the forward pass left them. Rewriting xs[l + 1] with the same values
            // is harmless: only the backward of block l + 1, already done, reads it.
            if act.sharesBlock && l < blocks.count - 1 {
                for (adapter, state) in generators[l] { adapter.generators = state }
                forwardBlock(l, act)
            }
            let needInputGrad = l > lowest
            let attentionAdapted = [block.q, block.k, block.v, block.o].contains { $0.activeAdapter != nil }
            let needAttention = needInputGrad || attentionAdapted

            // MLP: dres holds ∂L/∂(block output).
            if let bits = A.gateUpBits, act.sharedGateUp != nil {
                BFloat16.widen(bits.gate, count: A.gate.count, into: A.gate.data)
                BFloat16.widen(bits.up, count: A.up.count, into: A.up.data)
            }
            // The recomputed inputs (SwiGLU product, normalized inputs) are read only by adapters' backward.
            if block.down.readsInputInBackward {
                SwiGLU.forward(gate: A.gate.data, up: A.up.data, count: A.gate.count, out: act.a.data)
            }
            block.down.backward(dy: dres.data, x: act.a.data, rows: n, saved: A.saved[6].data, dx: act.da.data, accumulate: false)
            SwiGLU.backward(da: act.da.data, gate: A.gate.data, up: A.up.data, count: A.gate.count,
                            dGate: A.gate.data, dUp: A.up.data)
            if block.gate.readsInputInBackward || block.up.readsInputInBackward {
                RMSNorm.recompute(x: A.x2.data, weight: block.mlpNorm.data, rstd: A.rstd2.data, rows: n, dim: d, y: h.data)
            }
            let dh2: UnsafeMutablePointer<Float>? = needAttention ? act.dh.data : nil
            block.gate.backward(dy: A.gate.data, x: h.data, rows: n, saved: A.saved[4].data, dx: dh2, accumulate: false)
            block.up.backward(dy: A.up.data, x: h.data, rows: n, saved: A.saved[5].data, dx: dh2, accumulate: true)
            guard needAttention else { continue }
            RMSNorm.backward(dy: act.dh.data, x: A.x2.data, weight: block.mlpNorm.data, rstd: A.rstd2.data,
                             rows: n, dim: d, dx: dres.data)

            // Attention: dres now holds ∂L/∂x2.
            block.o.backward(dy: dres.data, x: A.attn.data, rows: n, saved: A.saved[3].data, dx: act.dattn.data, accumulate: false)
            attention.backward(dOut: act.dattn.data, q: A.q.data, k: A.k.data, v: A.v.data, out: A.attn.data,
                               lse: A.lse.data, batch: act.batch, seqLen: act.seqLen,
                               dq: act.dq.data, dk: act.dk.data, dv: act.dv.data)
            rope.apply(act.dq.data, rows: n, heads: c.numHeads, seqLen: act.seqLen, cos: act.cos, sin: act.sin, inverse: true)
            rope.apply(act.dk.data, rows: n, heads: c.numKVHeads, seqLen: act.seqLen, cos: act.cos, sin: act.sin, inverse: true)
            if [block.q, block.k, block.v].contains(where: \.readsInputInBackward) {
                RMSNorm.recompute(x: x.data, weight: block.attentionNorm.data, rstd: A.rstd1.data, rows: n, dim: d, y: h.data)
            }
            let dh1: UnsafeMutablePointer<Float>? = needInputGrad ? act.dh.data : nil
            block.q.backward(dy: act.dq.data, x: h.data, rows: n, saved: A.saved[0].data, dx: dh1, accumulate: false)
            block.k.backward(dy: act.dk.data, x: h.data, rows: n, saved: A.saved[1].data, dx: dh1, accumulate: true)
            block.v.backward(dy: act.dv.data, x: h.data, rows: n, saved: A.saved[2].data, dx: dh1, accumulate: true)
            if needInputGrad {
                RMSNorm.backward(dy: act.dh.data, x: x.data, weight: block.attentionNorm.data, rstd: A.rstd1.data,
                                 rows: n, dim: d, dx: dres.data)
            }
        }
    }
}
