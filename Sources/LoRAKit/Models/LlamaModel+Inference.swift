import Foundation

extension LlamaModel {
    /// Runs `tokens` at positions cache.length ..< cache.length + tokens.count of one sequence,
    /// appending their keys and values to the cache. Returns the logits of the last token
    /// ([vocab]), or of every new token ([tokens × vocab]) with `allLogits`. Adapters apply
    /// unmerged, without dropout.
    public func forward(tokens: [Int32], cache: KVCache, allLogits: Bool = false) throws -> Tensor {
        let c = config, n = tokens.count, p0 = cache.length, d = c.hiddenSize
        guard n > 0 else { throw LoRAError("no tokens to run") }
        guard p0 + n <= cache.capacity else {
            throw LoRAError("the sequence would reach \(p0 + n) tokens, past the cache's capacity of \(cache.capacity)")
        }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= c.vocabSize }) {
            throw LoRAError("token id \(bad) is outside the vocabulary (size \(c.vocabSize))")
        }
        let qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim, f = c.intermediateSize
        let x = Tensor(shape: [n, d]), h = Tensor(shape: [n, d]), rstd = Tensor(shape: [n])
        let q = Tensor(shape: [n, qd]), attn = Tensor(shape: [n, qd])
        let gate = Tensor(shape: [n, f]), up = Tensor(shape: [n, f]), a = Tensor(shape: [n, f])
        let savedPerRow = sites.map { $0.linear.savedFloatsPerRow(training: false) }.max() ?? 0
        let saved = Tensor(shape: [n * savedPerRow])
        let rope = self.rope
        tokens.withUnsafeBufferPointer { ids in
            Embedding.forward(table: embedding, ids: ids.baseAddress!, count: n, out: x.data)
        }
        for (l, block) in blocks.enumerated() {
            let kRows = cache.keys[l].data + p0 * kvd, vRows = cache.values[l].data + p0 * kvd
            RMSNorm.forward(x: x.data, weight: block.attentionNorm.data, eps: c.rmsNormEps, rows: n, dim: d, y: h.data, rstd: rstd.data)
            block.q.forward(x: h.data, rows: n, y: q.data, saved: saved.data, training: false)
            block.k.forward(x: h.data, rows: n, y: kRows, saved: saved.data, training: false)
            block.v.forward(x: h.data, rows: n, y: vRows, saved: saved.data, training: false)
            rope.apply(q.data, rows: n, heads: c.numHeads, seqLen: n, firstPosition: p0, cos: cache.cos, sin: cache.sin)
            rope.apply(kRows, rows: n, heads: c.numKVHeads, seqLen: n, firstPosition: p0, cos: cache.cos, sin: cache.sin)
            cachedAttention(q: q.data, keys: cache.keys[l].data, values: cache.values[l].data, rows: n, firstPosition: p0, out: attn.data)
            block.o.forward(x: attn.data, rows: n, y: x.data, beta: 1, saved: saved.data, training: false)
            RMSNorm.forward(x: x.data, weight: block.mlpNorm.data, eps: c.rmsNormEps, rows: n, dim: d, y: h.data, rstd: rstd.data)
            block.gate.forward(x: h.data, rows: n, y: gate.data, saved: saved.data, training: false)
            block.up.forward(x: h.data, rows: n, y: up.data, saved: saved.data, training: false)
            SwiGLU.forward(gate: gate.data, up: up.data, count: n * f, out: a.data)
            block.down.forward(x: a.data, rows: n, y: x.data, beta: 1, saved: saved.data, training: false)
        }
        cache.advance(by: n)
        let first = allLogits ? 0 : n - 1, rows = n - first
        RMSNorm.forward(x: x.data + first * d, weight: norm.data, eps: c.rmsNormEps, rows: rows, dim: d, y: h.data, rstd: rstd.data)
        let logits = Tensor(shape: allLogits ? [n, c.vocabSize] : [c.vocabSize])
        head.forward(x: h.data, rows: rows, y: logits.data, saved: saved.data, training: false)
        return logits
    }

    /// Attention of `rows` new queries (at positions firstPosition + i) over every cached key up to
    /// their own position.
    private func cachedAttention(q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                 rows n: Int, firstPosition p0: Int, out: UnsafeMutablePointer<Float>) {
        let c = config, hd = c.headDim, qd = c.numHeads * hd, kvd = c.numKVHeads * hd
        let group = c.numHeads / c.numKVHeads, total = p0 + n, scale = 1 / Float(hd).squareRoot()
        Gemm.singleThreaded {
            Parallel.forRanges(c.numHeads) { heads in
                let s = UnsafeMutablePointer<Float>.allocate(capacity: n * total)
                defer { s.deallocate() }
                for h in heads {
                    let kb = keys + (h / group) * hd, vb = values + (h / group) * hd
                    if n <= Linear.decodeRows {
                        // A token at a time: plain dot products and sums, where packing for a product
                        // of one row cost more than the product (a tenth of a decoding step).
                        for i in 0..<n {
                            let row = s + i * total, qi = q + i * qd + h * hd, o = out + i * qd + h * hd
                            for t in 0..<total { row[t] = scale * dot(qi, kb + t * kvd, hd) }
                            _ = causalSoftmaxRow(row, valid: p0 + i + 1, count: total)
                            o.initialize(repeating: 0, count: hd)
                            for t in 0..<(p0 + i + 1) where row[t] != 0 {
                                let p = row[t], v = vb + t * kvd
                                for d in 0..<hd { o[d] += p * v[d] }
                            }
                        }
                        continue
                    }
                    Gemm.sgemm(transA: false, transB: true, m: n, n: total, k: hd, alpha: scale,
                               a: q + h * hd, lda: qd, b: kb, ldb: kvd, beta: 0, c: s, ldc: total)
                    for i in 0..<n { _ = causalSoftmaxRow(s + i * total, valid: p0 + i + 1, count: total) }
                    Gemm.sgemm(transA: false, transB: false, m: n, n: hd, k: total, alpha: 1,
                               a: s, lda: total, b: vb, ldb: kvd, beta: 0, c: out + h * hd, ldc: qd)
                }
            }
        }
    }
}
