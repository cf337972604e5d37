import Foundation

/// AdaLoRA (Zhang et al. 2023) at one layer, in PEFT's SVD form: y += s · P·(Λ ⊙ (Q·dropout(x))),
/// with Q = lora_A [r × in] (right singular vectors), Λ = lora_E [r × 1] (singular values) and
/// P = lora_B [out × r] (left singular vectors), s = lora_alpha / (init_r + 1e-5). Training prunes
/// triplets (Qᵢ, Λᵢ, Pᵢ) by zeroing Λᵢ (`AdaLoRAAllocator`); `keptTriplets` says which survive, and
/// the saved file holds only those rows, as PEFT writes it.
public final class AdaLoRA: AdditiveAdapter, @unchecked Sendable {
    public let a: Parameter
    public let e: Parameter
    public let b: Parameter
    public let inFeatures: Int
    public let outFeatures: Int
    /// The triplets this layer holds: init_r while training, the kept ones in a loaded pruned adapter.
    public var rank: Int { e.value.count }
    /// s = lora_alpha / (ranknum + 1e-5), where ranknum stays init_r however many triplets are pruned.
    public let scaling: Float
    public let dropout: Float
    /// Which triplets the last allocation kept, nil before any (every triplet then counts).
    public var keptTriplets: [Bool]?
    /// Draws the dropout masks; seeded so that training is repeatable.
    public var random: SeededRandom

    /// PEFT's init: Q and P normal with std 0.02, Λ zero (so the adapter starts as a no-op).
    init(inFeatures: Int, outFeatures: Int, rank: Int, initialRank: Int, alpha: Float, dropout: Float, name: String,
         random: inout SeededRandom) {
        precondition(rank >= 0 && initialRank > 0, "AdaLoRA ranks out of range")
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.dropout = dropout
        // PEFT: scaling = lora_alpha if lora_alpha > 0 else r, divided by ranknum + 1e-5 at every use.
        scaling = (alpha > 0 ? alpha : Float(initialRank)) / (Float(initialRank) + 1e-5)
        a = Parameter(name: name + ".lora_A", value: Tensor(shape: [rank, inFeatures]))
        e = Parameter(name: name + ".lora_E", value: Tensor(shape: [rank, 1]))
        b = Parameter(name: name + ".lora_B", value: Tensor(shape: [outFeatures, rank]))
        self.random = SeededRandom(seed: random.next())
        for t in [a.value, b.value] { for i in 0..<t.count { t[i] = 0.02 * random.normal() } }
    }

    public var parameters: [Parameter] { [a, e, b] }
    public var generators: [SeededRandom] {
        get { [random] }
        set { if let first = newValue.first { random = first } }
    }

    /// Per row: u = Q·x̃ (r floats) and, with dropout in training, the mask.
    public func savedFloatsPerRow(training: Bool) -> Int { rank + (training && dropout > 0 ? inFeatures : 0) }

    /// v = u ⊙ Λ per row, [rows × r].
    private func scaled(_ u: UnsafePointer<Float>, rows: Int) -> UnsafeMutablePointer<Float> {
        let r = rank, lambda = e.value.data
        let v = UnsafeMutablePointer<Float>.allocate(capacity: rows * r)
        for row in 0..<rows { for i in 0..<r { v[row * r + i] = u[row * r + i] * lambda[i] } }
        return v
    }

    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>,
                        saved: UnsafeMutablePointer<Float>, training: Bool) {
        guard rank > 0 else { return }
        let u = saved
        lowRankInput(x: x, rows: rows, a: a, dropout: dropout, training: training, saved: saved, random: &random)
        let v = scaled(u, rows: rows)
        defer { v.deallocate() }
        Gemm.sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: rank, alpha: scaling,
                   a: v, lda: rank, b: b.value.data, ldb: rank, beta: 1, c: y, ldc: outFeatures)
    }

    public func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int,
                         saved: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?) {
        let r = rank
        guard r > 0 else { return }
        let u = saved, lambda = e.value.data
        // dP += s · dyᵀ·v
        let v = scaled(u, rows: rows)
        defer { v.deallocate() }
        Gemm.sgemm(transA: true, transB: false, m: outFeatures, n: r, k: rows, alpha: scaling,
                   a: dy, lda: outFeatures, b: v, ldb: r, beta: 1, c: b.grad.data, ldc: r)
        // dv = s · dy·P; dΛ = Σ_rows dv ⊙ u; du = dv ⊙ Λ (reusing v).
        Gemm.sgemm(transA: false, transB: false, m: rows, n: r, k: outFeatures, alpha: scaling,
                   a: dy, lda: outFeatures, b: b.value.data, ldb: r, beta: 0, c: v, ldc: r)
        let de = e.grad.data
        for i in 0..<r {
            var sum = 0.0
            for row in 0..<rows { sum += Double(v[row * r + i]) * Double(u[row * r + i]) }
            de[i] += Float(sum)
        }
        for row in 0..<rows { for i in 0..<r { v[row * r + i] *= lambda[i] } }
        let du = v
        lowRankInputBackward(du: du, x: x, rows: rows, a: a, trainsA: true, mask: dropout > 0 ? UnsafePointer(saved + rows * r) : nil, dx: dx)
    }

    /// ΔW = s · P·(Q ⊙ Λ), [out × in].
    public func deltaWeight() -> Tensor {
        let r = rank, q = Tensor(shape: [r, inFeatures]), lambda = e.value
        for i in 0..<r { for c in 0..<inFeatures { q[i * inFeatures + c] = a.value[i * inFeatures + c] * lambda[i] } }
        let delta = Tensor(shape: [outFeatures, inFeatures])
        guard r > 0 else { return delta }
        Gemm.sgemm(transA: false, transB: false, m: outFeatures, n: inFeatures, k: r, alpha: scaling,
                   a: b.value.data, lda: r, b: q.data, ldb: inFeatures, beta: 0, c: delta.data, ldc: inFeatures)
        return delta
    }

    /// The kept triplets' rows of Q, Λ and P, as PEFT's `resize_state_dict_by_rank_pattern` saves them.
    func prunedTensors() -> [(name: String, value: Tensor)] {
        guard let kept = keptTriplets, kept.contains(false) else { return parameters.map { ($0.name, $0.value) } }
        let rows = kept.indices.filter { kept[$0] }, k = rows.count, r = rank
        let qa = Tensor(shape: [k, inFeatures]), qe = Tensor(shape: [k, 1]), qb = Tensor(shape: [outFeatures, k])
        for (j, i) in rows.enumerated() {
            for c in 0..<inFeatures { qa[j * inFeatures + c] = a.value[i * inFeatures + c] }
            qe[j] = e.value[i]
            for o in 0..<outFeatures { qb[o * k + j] = b.value[o * r + i] }
        }
        return [(a.name, qa), (e.name, qe), (b.name, qb)]
    }
}

extension Adapter {
    /// A trained AdaLoRA adapter as PEFT saves it: only the kept triplets' rows, and the config's
    /// rank_pattern saying which they were. Nil before any allocation.
    func prunedAdaLoRA() -> (config: any AdapterConfiguration, tensors: [(name: String, value: Tensor)])? {
        guard var config = config as? AdaLoRAConfig else { return nil }
        let sites = sites(of: AdaLoRA.self)
        guard sites.contains(where: { $0.adapter.keptTriplets != nil }) else { return nil }
        config.rankPattern = Dictionary(uniqueKeysWithValues: sites.map {
            ($0.site.path, $0.adapter.keptTriplets ?? Array(repeating: true, count: $0.adapter.rank))
        })
        return (config, sites.flatMap { $0.adapter.prunedTensors() })
    }
}
