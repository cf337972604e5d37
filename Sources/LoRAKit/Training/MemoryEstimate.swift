import Foundation

/// A training run's peak memory, estimated before it starts from what it will allocate: the frozen
/// weights as they are held (Float32, or packed), the activation arena for batch × sequence (the
/// layout `Activations` allocates, with or without gradient checkpointing), attention's per-thread
/// scratch, the adapter's parameters, gradients and AdamW moments, and a fixed overhead (runtime,
/// tokenizer, data set, thread stacks). Within ±5% of measured peaks on SmolLM2-135M's shapes
/// (see MemoryEstimateTests). Sizes are Doubles so that absurd shapes give a huge estimate, not an
/// overflow.
public struct MemoryEstimate: Sendable {
    public let weightBytes: Double
    public let activationBytes: Double
    public let adapterBytes: Double
    public static let overheadBytes = 48.0 * 1_048_576

    public var totalBytes: Double { weightBytes + activationBytes + adapterBytes + Self.overheadBytes }

    /// For training `model` (its adapter attached, its gradient checkpointing set) on batches of
    /// `batchSize` sequences of up to `seqLen` tokens.
    public init(model: LlamaModel, batchSize: Int, seqLen: Int) {
        weightBytes = Double(model.sites.reduce(model.embedding.byteCount) {
            $0 + ($1.linear === model.head && model.headIsTied ? 0 : $1.linear.matrix.byteCount)
        })
        let floats = Self.arenaFloats(model: model, batch: batchSize, seqLen: seqLen, training: true)
        activationBytes = 4 * floats + model.attention.scratchBytes(batch: batchSize, seqLen: seqLen)
        let parameters = model.sites.reduce(0) { $0 + ($1.linear.adapter?.parameters.reduce(0) { $0 + $1.value.count } ?? 0) }
        adapterBytes = 4 * 4 * Double(parameters)  // values, gradients, two moments, in Float32
    }

    /// The floats `Activations(model:batch:seqLen:training:)` allocates, without allocating them.
    static func arenaFloats(model: LlamaModel, batch: Int, seqLen: Int, training: Bool) -> Double {
        let c = model.config, n = Double(batch) * Double(seqLen), T = Double(seqLen)
        let q = Double(c.numHeads * c.headDim), kv = Double(c.numKVHeads * c.headDim)
        let d = Double(c.hiddenSize), f = Double(c.intermediateSize), t = training ? 1.0 : 0
        // rstd1, q, k, v, attn, lse (one per head), x2, rstd2, gate, up, and the adapters' buffers;
        // under bf16, gate and up also in bfloat16, and the Float32 ones shared unless the Block is.
        let bf16 = model.precision == .bf16, shared = Activations.sharesBlock(model, training: training)
        let gateUp = bf16 ? (shared ? 3 * f : f) : 2 * f, sharedGateUp = bf16 && !shared ? 2 * n * f : 0
        let blockPerRow = 1 + q + 2 * kv + q + Double(c.numHeads) + d + 1 + gateUp
        let blocks = Activations.savedFloatsPerRow(model, training: training).reduce(0.0) { $0 + n * (blockPerRow + Double($1.reduce(0, +))) }
        let inputs = Double(c.numLayers + 1) * n * d
        let scratch = n * (1 + d + f) + t * n * (f + 2 * d + 2 * q + 2 * kv)  // rstdFinal, h, a; da, dres, dh, dattn, dq, dk, dv
        let rope = 2 * T * Double(c.headDim / 2)
        let chunk = Double(LlamaModel.headChunk)
        let head = chunk * (d + Double(c.vocabSize) + t * d + Double(model.head.savedFloatsPerRow(training: training)))
        return blocks + sharedGateUp + inputs + scratch + rope + head
    }

    /// The memory a run may use: LORA_MEMORY_LIMIT_MB when set, else what the system has available
    /// (MemAvailable on Linux) plus what this process already holds; nil when unknown.
    public static func availableBytes() throws -> Double? {
        if let limit = ProcessInfo.processInfo.environment["LORA_MEMORY_LIMIT_MB"] {
            guard let mb = Double(limit), mb.isFinite, mb >= 0 else {
                throw LoRAError("LORA_MEMORY_LIMIT_MB must be a number of megabytes (got \(limit.debugDescription))")
            }
            return mb * 1_048_576
        }
        #if os(Linux)
        guard let available = kilobytes("MemAvailable", in: "/proc/meminfo") else { return nil }
        return Double(available + (kilobytes("VmRSS", in: "/proc/self/status") ?? 0)) * 1024
        #else
        var size: UInt64 = 0, length = MemoryLayout<UInt64>.size
        guard sysctlbyname("hw.memsize", &size, &length, nil, 0) == 0 else { return nil }
        return Double(size)
        #endif
    }

    /// The "KEY:   N kB" value of a /proc file.
    private static func kilobytes(_ key: String, in path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Int(line.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
        }
        return nil
    }

    /// One line: the total and its parts, in MB.
    public var summary: String {
        func mb(_ bytes: Double) -> String { Self.megabytes(bytes) }
        let parts = "weights \(mb(weightBytes)), activations \(mb(activationBytes)), adapter and optimizer \(mb(adapterBytes))"
        return "\(mb(totalBytes)) (\(parts), other \(mb(Self.overheadBytes)))"
    }

    /// Refuses a run whose estimate exceeds `available` bytes.
    public func check(available: Double, batchSize: Int, seqLen: Int, gradientCheckpointing: Bool) throws {
        guard totalBytes > available else { return }
        var lower = "lower --batch-size (\(batchSize)) or --max-seq-length (longest sequence: \(seqLen) tokens)"
        if !gradientCheckpointing { lower += ", or add --grad-checkpoint" }
        throw LoRAError("this run needs about \(summary) at its peak, but \(Self.megabytes(available)) are available; \(lower)")
    }

    /// "1,314 MB".
    static func megabytes(_ bytes: Double) -> String {
        let mb = (bytes / 1_048_576).rounded()
        guard mb < 1e15 else { return String(format: "%.3g MB", mb) }
        let digits = Array(String(Int(mb)))
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(c)
        }
        return out + " MB"
    }
}
