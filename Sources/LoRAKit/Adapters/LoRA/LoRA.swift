import Foundation

/// How a new LoRA's A and B start (PEFT's `init_lora_weights`).
public enum LoRAInit: Sendable, Equatable {
    /// A kaiming-uniform with a = √5 (bound 1/√in), B zero: the adapter starts as a no-op.
    case kaiming
    /// A ~ N(0, 1/r), B zero.
    case gaussian
    /// Both as nn.Linear's default init (kaiming-uniform); not a no-op, meant for debugging.
    case none
    /// PiSSA: A and B from the top-r singular triplets of W, which keeps the rest (`LoRAConfig.makeAdapters`).
    case pissa
    /// PiSSA from a randomized SVD with this many subspace iterations (PEFT's `pissa_niter_K`).
    case pissaIterations(Int)
    /// OLoRA: A and B from the first r columns of W's QR, W keeping the rest.
    case olora

    /// PEFT's value: true, false, or the init's name ("gaussian", "pissa", "pissa_niter_4", "olora").
    public var name: String {
        switch self {
        case .kaiming: "true"
        case .none: "false"
        case .gaussian: "gaussian"
        case .pissa: "pissa"
        case .pissaIterations(let k): "pissa_niter_\(k)"
        case .olora: "olora"
        }
    }

    /// The init a PEFT name gives, nil for one this engine does not implement.
    public init?(name: String) {
        let names: [String: LoRAInit] = ["true": .kaiming, "false": .none, "gaussian": .gaussian, "pissa": .pissa, "olora": .olora]
        if let known = names[name] { self = known; return }
        guard name.hasPrefix("pissa_niter_"), let k = Int(name.dropFirst("pissa_niter_".count)), (1...100).contains(k) else { return nil }
        self = .pissaIterations(k)
    }

    /// Whether the init reads the base weight and changes it (PEFT saves such adapters converted).
    public var isDataDriven: Bool {
        switch self {
        case .pissa, .pissaIterations, .olora: true
        case .kaiming, .gaussian, .none: false
        }
    }
}

/// Low-rank adaptation of one linear layer: y += s · B·A·dropout(x), A [r × in], B [out × r].
public final class LoRA: AdditiveAdapter, @unchecked Sendable {
    public let rank: Int
    public let inFeatures: Int
    public let outFeatures: Int
    public let scaling: Float
    public var dropout: Float
    public private(set) var a: Parameter
    public private(set) var b: Parameter
    /// Draws the dropout masks; seeded so that training is repeatable.
    public var random: SeededRandom

    /// scaling = alpha / r, or alpha / √r with rsLoRA (PEFT's `use_rslora`).
    public init(inFeatures: Int, outFeatures: Int, rank: Int, alpha: Float, rsLoRA: Bool = false,
                dropout: Float = 0, initialization: LoRAInit = .kaiming, name: String = "", random: inout SeededRandom) {
        precondition(rank > 0, "LoRA rank must be positive")
        self.rank = rank
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.scaling = rsLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank)
        self.dropout = dropout
        self.a = Parameter(name: name + ".lora_A.weight", value: Tensor(shape: [rank, inFeatures]))
        self.b = Parameter(name: name + ".lora_B.weight", value: Tensor(shape: [outFeatures, rank]))
        self.random = SeededRandom(seed: random.next())
        switch initialization {
        case .kaiming:
            Self.fillUniform(a.value, bound: 1 / Float(inFeatures).squareRoot(), &random)
        case .gaussian:
            for i in 0..<a.value.count { a.value[i] = random.normal() / Float(rank) }
        case .none:
            Self.fillUniform(a.value, bound: 1 / Float(inFeatures).squareRoot(), &random)
            Self.fillUniform(b.value, bound: 1 / Float(rank).squareRoot(), &random)
        case .pissa, .pissaIterations, .olora:
            break  // set from the base weight by `initialize(from:)`
        }
    }

    private static func fillUniform(_ t: Tensor, bound: Float, _ random: inout SeededRandom) {
        for i in 0..<t.count { t[i] = random.uniform(-bound, bound) }
    }

    /// A and B as a data-driven init (PiSSA, OLoRA) set them, which saving subtracts again so that the
    /// adapter applies to the untouched base (PEFT's `path_initial_model_for_weight_conversion`).
    public private(set) var initial: (a: Tensor, b: Tensor)?

    /// PiSSA or OLoRA from the base weight W [out × in], as PEFT's `pissa_init` / `olora_init`:
    /// sets A and B and returns the residual W − s·B·A that the layer keeps in place of W.
    func initialize(from weight: Tensor, method: LoRAInit, random: inout SeededRandom) -> Tensor {
        let out = outFeatures, inF = inFeatures, r = rank
        let w = weight.array
        switch method {
        case .pissa, .pissaIterations:
            // W = V·S·Uh; S_r / s, then A = diag(√S_r)·Uh_r and B = V_r·diag(√S_r).
            var niter = 0
            if case .pissaIterations(let k) = method { niter = k }
            let (v, sv, uh) = niter > 0
                ? Factorization.randomizedSVD(w, rows: out, columns: inF, rank: r, iterations: niter, random: &random)
                : Factorization.svd(w, rows: out, columns: inF)
            let k = sv.count
            for i in 0..<r {
                let root = (sv[i] / scaling).squareRoot()
                for c in 0..<inF { a.value[i * inF + c] = root * uh[i * inF + c] }
                for o in 0..<out { b.value[o * r + i] = v[o * k + i] * root }
            }
        case .olora:
            // W = Q·R; A = R[:r], B = Q[:, :r].
            let (q, rr) = Factorization.qr(w, rows: out, columns: inF)
            let k = min(out, inF)
            for i in 0..<r { for c in 0..<inF { a.value[i * inF + c] = rr[i * inF + c] } }
            for o in 0..<out { for i in 0..<r { b.value[o * r + i] = q[o * k + i] } }
        default:
            preconditionFailure("\(method) is not a data-driven init")
        }
        initial = (a.value.copy(), b.value.copy())
        return unmergedWeight(weight)
    }

    /// Makes this layer read and train `other`'s A and B, under its own names (LoRA-Drop's shared pair).
    func share(_ other: LoRA) {
        precondition(other.a.value.shape == a.value.shape && other.b.value.shape == b.value.shape && other.scaling == scaling,
                     "sharing a LoRA pair between layers of other shapes")
        a = Parameter(name: a.name, sharing: other.a)
        b = Parameter(name: b.name, sharing: other.b)
    }

    /// False when A stays as initialized (LoRA-FA): only B trains, and the backward skips A's gradient.
    public var trainsA = true

    public var parameters: [Parameter] { trainsA ? [a, b] : [b] }
    public var weights: [Parameter] { [a, b] }
    /// Only A's gradient reads x (the dropout mask for dx is saved).
    public var readsInputInBackward: Bool { trainsA }

    /// Per row: u = A·x̃ (r floats) and, with dropout in training, the mask scale (in floats).
    public func savedFloatsPerRow(training: Bool) -> Int {
        rank + (training && dropout > 0 ? inFeatures : 0)
    }

    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>,
                        saved: UnsafeMutablePointer<Float>, training: Bool) {
        let u = saved
        lowRankInput(x: x, rows: rows, a: a, dropout: dropout, training: training, saved: saved, random: &random)
        Gemm.sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: rank, alpha: scaling,
                   a: u, lda: rank, b: b.value.data, ldb: rank, beta: 1, c: y, ldc: outFeatures)
    }

    public func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int,
                         saved: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?) {
        let u = saved
        let hasMask = dropout > 0  // backward always follows a training forward
        // dB += s · dyᵀ·u
        Gemm.sgemm(transA: true, transB: false, m: outFeatures, n: rank, k: rows, alpha: scaling,
                   a: dy, lda: outFeatures, b: u, ldb: rank, beta: 1, c: b.grad.data, ldc: rank)
        guard trainsA || dx != nil else { return }  // nothing reads du
        // du = s · dy·B
        let du = UnsafeMutablePointer<Float>.allocate(capacity: rows * rank)
        defer { du.deallocate() }
        Gemm.sgemm(transA: false, transB: false, m: rows, n: rank, k: outFeatures, alpha: scaling,
                   a: dy, lda: outFeatures, b: b.value.data, ldb: rank, beta: 0, c: du, ldc: rank)
        lowRankInputBackward(du: du, x: x, rows: rows, a: a, trainsA: trainsA, mask: hasMask ? UnsafePointer(saved + rows * rank) : nil, dx: dx)
    }

    /// ΔW = s · B·A, [out × in].
    public func deltaWeight() -> Tensor {
        let d = Tensor(shape: [outFeatures, inFeatures])
        Gemm.sgemm(transA: false, transB: false, m: outFeatures, n: inFeatures, k: rank, alpha: scaling,
                   a: b.value.data, lda: rank, b: a.value.data, ldb: inFeatures, beta: 0, c: d.data, ldc: inFeatures)
        return d
    }

    public var generators: [SeededRandom] {
        get { [random] }
        set { if let first = newValue.first { random = first } }
    }
}
