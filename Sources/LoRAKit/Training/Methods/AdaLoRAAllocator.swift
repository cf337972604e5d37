import Foundation

/// AdaLoRA's part in each step, as PEFT's `AdaLoraModel` and `RankAllocator` do it: adds the
/// orthogonal regularisation of P and Q to the loss, and after each update scores every triplet by
/// its smoothed sensitivity and uncertainty and zeroes the Λ entries of the least important ones,
/// globally, down to the step's budget.
public final class AdaLoRAAllocator: TrainingHook, @unchecked Sendable {
    public let config: AdaLoRAConfig
    public let totalStep: Int
    let sites: [(path: String, adapter: AdaLoRA)]
    /// Ī and Ū for every parameter, in `parameters` order (Q, Λ, P per site).
    private var sensitivity: [Tensor]
    private var uncertainty: [Tensor]
    public let initialBudget: Int
    public let targetBudget: Int
    /// The budget of the last step.
    public private(set) var budget: Int

    public init(adapter: Adapter, config: AdaLoRAConfig, totalStep: Int) throws {
        let sites = adapter.sites(of: AdaLoRA.self).map { (path: $0.site.path, adapter: $0.adapter) }
        guard sites.count == adapter.modules.count, !sites.isEmpty else { throw LoRAError("the AdaLoRA allocator needs an AdaLoRA adapter") }
        guard sites.allSatisfy({ $0.adapter.rank == config.initR }) else {
            throw LoRAError("AdaLoRA trains from init_r = \(config.initR) triplets per layer; this adapter has already been pruned")
        }
        guard config.tinit < totalStep - config.tfinal else {
            throw LoRAError("AdaLoRA's tinit (\(config.tinit)) must be below the number of steps minus tfinal (\(totalStep) − \(config.tfinal))")
        }
        self.config = config
        self.totalStep = totalStep
        self.sites = sites
        let parameters = sites.flatMap { $0.adapter.parameters }
        sensitivity = parameters.map { Tensor(shape: $0.value.shape) }
        uncertainty = parameters.map { Tensor(shape: $0.value.shape) }
        initialBudget = config.initR * sites.count
        targetBudget = config.targetR * sites.count
        budget = initialBudget
    }

    // MARK: the orthogonal regularisation

    /// R = mean over every Q and P of ‖QQᵀ − I‖_F and ‖PᵀP − I‖_F (not squared, as PEFT); adds the
    /// gradient of weight·R and returns weight·R.
    public func addLossTerm(step: Int) -> Double {
        let count = 2 * sites.count
        var sum = 0.0
        for (_, s) in sites {
            sum += Self.addOrthogonalityGradient(s.a, rowsOrthonormal: true, weight: config.orthRegWeight / Float(count))
            sum += Self.addOrthogonalityGradient(s.b, rowsOrthonormal: false, weight: config.orthRegWeight / Float(count))
        }
        return Double(config.orthRegWeight) * sum / Double(count)
    }

    /// ‖C‖_F for C = MMᵀ − I (rows orthonormal, M = Q [r × n]) or MᵀM − I (columns, M = P [n × r]);
    /// adds weight · ∂‖C‖_F/∂M = weight · 2CM/‖C‖ (or 2MC/‖C‖) to M's gradient.
    static func addOrthogonalityGradient(_ p: Parameter, rowsOrthonormal: Bool, weight: Float) -> Double {
        let shape = p.value.shape
        let r = rowsOrthonormal ? shape[0] : shape[1], n = rowsOrthonormal ? shape[1] : shape[0]
        guard r > 0 else { return 0 }
        let c = Tensor(shape: [r, r]), m = p.value.data
        if rowsOrthonormal {
            Gemm.sgemm(transA: false, transB: true, m: r, n: r, k: n, alpha: 1, a: m, lda: n, b: m, ldb: n, beta: 0, c: c.data, ldc: r)
        } else {
            Gemm.sgemm(transA: true, transB: false, m: r, n: r, k: n, alpha: 1, a: m, lda: r, b: m, ldb: r, beta: 0, c: c.data, ldc: r)
        }
        for i in 0..<r { c[i * r + i] -= 1 }
        let norm = c.buffer.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        guard norm > 0 else { return 0 }
        let coefficient = 2 * weight / Float(norm)
        if rowsOrthonormal {
            Gemm.sgemm(transA: false, transB: false, m: r, n: n, k: r, alpha: coefficient, a: c.data, lda: r, b: m, ldb: n,
                       beta: 1, c: p.grad.data, ldc: n)
        } else {
            Gemm.sgemm(transA: false, transB: false, m: n, n: r, k: r, alpha: coefficient, a: m, lda: r, b: c.data, ldb: r,
                       beta: 1, c: p.grad.data, ldc: r)
        }
        return norm
    }

    // MARK: the budget

    /// PEFT's `budget_schedule`: the full budget through `tinit`, the target after total − tfinal, a
    /// cubic in between; whether this step masks.
    public func schedule(step: Int) -> (budget: Int, masks: Bool) {
        let end = totalStep - config.tfinal
        if step <= config.tinit { return (initialBudget, false) }
        if step > end { return (targetBudget, true) }
        let left = 1 - Double(step - config.tinit) / Double(end - config.tinit)
        let budget = Int(Double(initialBudget - targetBudget) * (left * left * left) + Double(targetBudget))
        return (budget, step % config.deltaT == 0)
    }

    /// PEFT's `update_and_allocate` after the update of `step` (counted from 1): importance until
    /// total − tfinal, masking to the scheduled budget, a forced last allocation at total − tfinal
    /// (which also forgets the importances), and after it the final pattern re-applied every step.
    public func afterUpdate(step: Int) {
        let end = totalStep - config.tfinal
        if step < end {
            updateImportance()
            let (budget, masks) = schedule(step: step)
            self.budget = budget
            if masks { allocate(budget: budget) }
        } else if step == end {
            budget = targetBudget
            allocate(budget: targetBudget)
            for t in sensitivity + uncertainty { t.buffer.update(repeating: 0) }
        } else {
            budget = targetBudget
            applyMasks()
        }
    }

    /// I = |p ⊙ ∇p|; Ī ← β1·Ī + (1 − β1)·I; Ū ← β2·Ū + (1 − β2)·|I − Ī|, in Float32 as torch.
    private func updateImportance() {
        let b1 = Float(config.beta1), c1 = Float(1 - config.beta1), b2 = Float(config.beta2), c2 = Float(1 - config.beta2)
        for (i, p) in sites.flatMap({ $0.adapter.parameters }).enumerated() {
            let v = p.value.data, g = p.grad.data, avg = sensitivity[i].data, unc = uncertainty[i].data
            for j in 0..<p.value.count {
                let importance = abs(v[j] * g[j])
                avg[j] = b1 * avg[j] + c1 * importance
                unc[j] = b2 * unc[j] + c2 * abs(importance - avg[j])
            }
        }
    }

    /// Each triplet's score: s(Λᵢ) + mean over the row Qᵢ of s + mean over the column Pᵢ of s, with
    /// s = Ī ⊙ Ū; per site in order.
    func tripletScores() -> [[Float]] {
        sites.indices.map { k in
            let s = sites[k].adapter, r = s.rank, inF = s.inFeatures, out = s.outFeatures
            let (q, lambda, p) = (score(3 * k), score(3 * k + 1), score(3 * k + 2))
            return (0..<r).map { i in
                var rowSum: Float = 0, columnSum: Float = 0
                for c in 0..<inF { rowSum += q[i * inF + c] }
                for o in 0..<out { columnSum += p[o * r + i] }
                return lambda[i] + (rowSum / Float(inF) + columnSum / Float(out))
            }
        }
    }

    private func score(_ i: Int) -> [Float] {
        zip(sensitivity[i].buffer, uncertainty[i].buffer).map { $0 * $1 }
    }

    /// Keeps the triplets scoring above the (init − budget)-th smallest score of all sites and zeroes
    /// the rest's Λ. (With nothing to prune, PEFT's kthvalue would fail; here every triplet stays.)
    private func allocate(budget: Int) {
        let scores = tripletScores()
        let k = initialBudget - budget
        var threshold = -Float.infinity
        if k > 0 {
            let all = scores.flatMap { $0 }.sorted()
            threshold = all[min(k, all.count) - 1]
        }
        for (site, s) in zip(sites, scores) { site.adapter.keptTriplets = s.map { $0 > threshold } }
        applyMasks()
    }

    private func applyMasks() {
        for (_, s) in sites {
            guard let kept = s.keptTriplets else { continue }
            for (i, keep) in kept.enumerated() where !keep { s.e.value[i] = 0 }
        }
    }

    /// The final (or latest) rank per site.
    public var ranks: [(path: String, rank: Int)] {
        sites.map { ($0.path, $0.adapter.keptTriplets?.filter { $0 }.count ?? $0.adapter.rank) }
    }

    // MARK: checkpoints

    public var checkpointTensors: [(name: String, value: Tensor)] {
        let names = sites.flatMap { $0.adapter.parameters.map(\.name) }
        return zip(names, sensitivity).map { ("adalora.sensitivity." + $0, $1) } + zip(names, uncertainty).map { ("adalora.uncertainty." + $0, $1) }
    }

    struct State: Codable {
        var budget: Int
        var kept: [[Bool]?]
    }

    public func checkpointState() throws -> Data? {
        try JSONEncoder().encode(State(budget: budget, kept: sites.map(\.adapter.keptTriplets)))
    }

    public func restore(checkpointState data: Data?) throws {
        guard let data, let state = try? JSONDecoder().decode(State.self, from: data), state.kept.count == sites.count,
              zip(state.kept, sites).allSatisfy({ $0.0 == nil || $0.0!.count == $0.1.adapter.rank }),
              (targetBudget...initialBudget).contains(state.budget) else {
            throw LoRAError("the checkpoint's AdaLoRA state does not fit this adapter")
        }
        budget = state.budget
        for (kept, site) in zip(state.kept, sites) { site.adapter.keptTriplets = kept }
    }
}
