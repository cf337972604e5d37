import ArgumentParser
import Foundation
import LoRAKit

/// One LoRA training step on a model of SmolLM2-135M's shapes with random weights, timed; the
/// same work scripts/bench_peft.py gives PyTorch + PEFT (scripts/bench.sh runs both side by side).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time LoRA training steps on SmolLM2-135M's shapes (random weights, no download).")

    @Option(help: "Sequences per step.") var batchSize = 4
    @Option(help: "Tokens per sequence.") var seqLen = 256
    @Option(name: [.short, .long], help: "Benchmark this model (a Hugging Face folder, a .gguf file, smollm2-135m or a Hub id ORG/NAME) instead of random SmolLM2-135M shapes.")
    var model: String?
    @Flag(help: "With a GGUF model: expand the quantized weights to Float32 at load (for comparison).")
    var dequantize = false
    @Option(help: "Transformer blocks (SmolLM2-135M has 30).") var layers = 30
    @Option(help: PrecisionOption.help) var precision = "fp32"
    @Option(help: "LoRA rank.") var rank = 8
    @Option(help: "LoRA alpha.") var alpha: Float = 16
    @Option(help: "lora, lora-plus, lora-fa, dora or vera.") var method = "lora"
    @Option(help: "Untimed steps first.") var warmup = 1
    @Option(help: "Timed steps.") var steps = 5
    @Flag(help: "Gradient checkpointing: recompute each block's forward in the backward instead of keeping its activations (less memory, slower).")
    var gradCheckpoint = false
    @Flag(help: "Print one JSON line instead of a summary.") var json = false
    @Flag(help: "Time only the step's matrix products (forward and input gradient of every linear layer), on each kernel this CPU has and the BLAS found, side by side (medians of --steps rounds).")
    var products = false

    func run() throws {
        try Lora.reportingErrors {
            if products {
                var config = ModelConfig.smolLM2_135M
                config.numLayers = layers
                ProductBench(config: config, rows: batchSize * seqLen, rounds: max(1, steps)).run(json: json)
            } else {
                try measure()
            }
        }
    }

    private func loadModel() throws -> LlamaModel {
        let precision = try PrecisionOption.resolve(precision)
        if let spec = model { return try ModelLocation.load(spec, dequantize: dequantize, precision: precision) }
        var config = ModelConfig.smolLM2_135M
        config.numLayers = layers
        let model = LlamaModel.random(config: config, seed: 1)
        model.precision = precision
        return model
    }

    private func measure() throws {
        // Under mpirun the ranks split each batch; the throughput is the whole batch's, over all ranks.
        let group = DataParallelRun.start()
        if let group { try DataParallelRun.check(group, batchSize: batchSize, dropout: 0, examples: batchSize) }
        let model = try loadModel()
        model.gradientCheckpointing = gradCheckpoint
        SlowPathNotice.warnIfSlow()
        let config = model.config
        let (trainingMethod, adapterKind) = try TrainingMethod.named(method)
        let adapterConfig: any AdapterConfiguration = adapterKind == .vera
            ? VeRAConfig(r: rank, targetModules: .allLinear)
            : LoRAConfig(r: rank, loraAlpha: alpha, targetModules: .allLinear, useDoRA: adapterKind == .dora)
        let adapter = try Adapter.attach(to: model, config: adapterConfig, seed: 2)
        // B (VeRA: λ_b) starts at zero; give it values so every product is real work, as after a few steps.
        for lora in adapter.modules.compactMap({ ($0.adapter as? LoRA) ?? ($0.adapter as? DoRA)?.lora }) {
            for i in 0..<lora.b.value.count { lora.b.value[i] = 0.001 }
        }
        for (_, vera) in adapter.sites(of: VeRA.self) { for i in 0..<vera.lambdaB.value.count { vera.lambdaB.value[i] = 0.001 } }
        var settings = TrainingSettings()
        settings.method = trainingMethod
        let optimizer = try trainingMethod.makeOptimizer(adapter: adapter, settings: settings)
        let optimizerStateBytes = (optimizer.m + optimizer.v).reduce(0) { $0 + $1.count * 4 }
        let trainer = Trainer(model: model, optimizer: optimizer, totalSteps: warmup + steps)
        trainer.group = group
        var random = SeededRandom(seed: 3)
        let n = batchSize * seqLen, rankBatch = batchSize / (group?.size ?? 1)  // the ranks divide it (checked above)
        let estimate = MemoryEstimate(model: model, batchSize: rankBatch, seqLen: seqLen)
        let tokens = (0..<n).map { _ in Int32(random.next() % UInt64(config.vocabSize)) }
        let batch = Batch(batchSize: batchSize, seqLen: seqLen, inputIds: tokens, labels: tokens)

        for _ in 0..<warmup { _ = try trainer.step([batch]) }
        var stepSeconds: [Double] = []
        for _ in 0..<steps {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try trainer.step([batch])
            stepSeconds.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        let elapsed = stepSeconds.reduce(0, +)
        let tokensPerSecond = Double(n * steps) / elapsed
        let peak = peakResidentMB()
        let flopsPerStep = StepFLOPs(config: config, batch: batchSize, seqLen: seqLen, rank: rank,
                                 trainsA: trainingMethod != .loraFA && adapterKind != .vera, doraNorms: adapterKind == .dora).total
        let achieved = flopsPerStep * Double(steps) / elapsed
        // Each rank's sgemm rate on its share of the rows, summed: the peak the ranks together could reach.
        var gemmRates = [measureGemmRate(config: config, rows: rankBatch * seqLen)]
        if let group { try gemmRates.withUnsafeMutableBufferPointer { try group.sum($0) } }
        let gemmRate = gemmRates[0]

        if json {
            let line: [String: Any] = [
                "tool": "swift-lora", "model": self.model ?? "random", "method": self.method,
                "trainable_parameters": adapter.parameterCount, "optimizer_state_bytes": optimizerStateBytes, "dequantize": dequantize, "tokens_per_second": tokensPerSecond, "peak_rss_mb": peak,
                "estimated_peak_mb": estimate.totalBytes / 1_048_576,
                "grad_checkpoint": gradCheckpoint,
                "step_seconds": stepSeconds, "threads": Parallel.threadCount, "ranks": group?.size ?? 1, "blas": "\(Gemm.backend)", "precision": "\(model.precision)",
                "gflop_per_token": flopsPerStep / Double(n) / 1e9, "achieved_gflops": achieved / 1e9,
                "sgemm_gflops": gemmRate / 1e9, "fraction_of_sgemm": achieved / gemmRate,
            ]
            let data = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            let weights = model.sites.reduce(model.embedding.byteCount) { $0 + ($1.linear === model.head && model.headIsTied ? 0 : $1.linear.matrix.byteCount) }
            print("model: \(self.model ?? "SmolLM2-135M shapes, \(layers) layers, random weights"); \(self.method) r=\(rank) alpha=\(alpha) on all linear layers")
            print(String(format: "trainable parameters: %d; optimizer state: %.1f MB", adapter.parameterCount, Double(optimizerStateBytes) / 1e6))
            print(String(format: "frozen matrices in memory: %.0f MB", Double(weights) / 1e6))
            print("batch \(batchSize) x \(seqLen) tokens, matrix products: \(model.precision == .bf16 ? "bf16 (\(Precision.bf16Instructions)) for the base, " : "")\(Gemm.backend), threads: \(Parallel.threadCount)"
                  + (group.map { " per rank × \($0.size) MPI ranks" } ?? "")
                  + (gradCheckpoint ? ", gradient checkpointing" : ""))
            print("steps (s): " + stepSeconds.map { String(format: "%.3f", $0) }.joined(separator: " "))
            print(String(format: "throughput: %.1f tokens/s", tokensPerSecond))
            print(String(format: "peak resident memory%@: %.0f MB (estimated before the run: %@)", group == nil ? "" : " of rank 0", peak, estimate.summary))
            print(String(format: "work: %.3f GFLOP/token; achieved %.1f GFLOP/s = %.0f%% of sgemm's %.1f GFLOP/s on these shapes%@",
                         flopsPerStep / Double(n) / 1e9, achieved / 1e9, 100 * achieved / gemmRate, gemmRate / 1e9, group == nil ? "" : " (summed over the ranks)"))
        }
    }
}

/// The floating-point work one training step needs (what this engine computes): the linear layers
/// forward and their input gradients (none for the lowest block's q/k/v, whose input gradient
/// nothing consumes), the causal half of attention (QKᵀ and PV forward; four products backward
/// plus the recomputed QKᵀ), and the LoRA products.
struct StepFLOPs {
    let config: ModelConfig, batch: Int, seqLen: Int, rank: Int
    /// False for LoRA-FA and VeRA, whose backward runs no product for A's gradient.
    var trainsA = true
    /// DoRA: each step also forms W + s·B·A of every layer for its row norms.
    var doraNorms = false

    var total: Double {
        let c = config, n = Double(batch * seqLen), d = Double(c.hiddenSize), f = Double(c.intermediateSize)
        let q = Double(c.numHeads * c.headDim), kv = Double(c.numKVHeads * c.headDim), L = Double(c.numLayers)
        let qkv = d * (q + 2 * kv), rest = q * d + 3 * d * f
        let head = Double(c.vocabSize) * d
        let targets = Double(batch * (seqLen - 1))
        var flops = 2 * n * (L * (qkv + rest)) + 2 * targets * head        // forward
        flops += 2 * n * ((L - 1) * qkv + L * rest) + 2 * targets * head    // input gradients
        let causalPairs = Double(batch) * Double(seqLen) * Double(seqLen + 1) / 2
        flops += L * Double(c.numHeads) * causalPairs * Double(c.headDim) * 2 * (2 + 5)  // 2 products fwd, 5 bwd
        let loraDims = (d + q) + (d + kv) * 2 + (q + d) + (d + f) * 2 + (f + d)
        flops += L * n * Double(rank) * loraDims * 2 * (trainsA ? 4 : 3)  // u, delta forward; dB, du, dA, dx backward (≈4 products)
        if doraNorms {
            let weights = qkv + rest  // Σ out·in over a block's seven layers
            flops += L * weights * 2 * (Double(rank) + 1)  // s·B·A, then the squared row sums
        }
        return flops
    }
}
