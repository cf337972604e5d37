import ArgumentParser
import Foundation
import LoRAKit

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune a LoRA adapter on a data set and save it in PEFT's format.",
        discussion: """
            --data is a folder with train.jsonl (and valid.jsonl for --steps-per-eval) or one .jsonl file; rows \
            {"text"}, {"prompt","completion"} or {"messages"}. Adapter settings use PEFT's names and meaning.
            """)

    @Option(help: "A Hugging Face folder, a .gguf file, or smollm2-135m.") var model: String
    @Option(help: "A data folder (train.jsonl, valid.jsonl) or a .jsonl file.") var data: String
    @Option(help: "Where the adapter is written.") var adapterPath = "adapters"
    @Option(help: "Optimizer steps.") var iters = 100
    @Option(help: "Sequences per micro-batch.") var batchSize = 4
    @Option(help: "Micro-batches per optimizer step.") var gradAccumulationSteps = 1
    @Option(help: "Peak learning rate.") var learningRate: Float = 1e-4
    @Option(help: "constant, linear or cosine.") var lrSchedule = "constant"
    @Option(help: "Warmup steps.") var warmup = 0
    @Option(help: "Clip the global gradient norm to this (0: off).") var maxGradNorm: Float = 1
    @Option(help: "Longer rows are cut to this many tokens.") var maxSeqLength = 2048
    @Option(help: "Seed for the adapter's initialization, dropout and data order.") var seed: UInt64 = 0
    @Option(help: "Print a report every N steps.") var stepsPerReport = 10
    @Option(help: "Evaluate on the validation split every N steps (0: never).") var stepsPerEval = 0
    @Option(help: "Validation batches per evaluation (0: all).") var valBatches = 0
    @Option(help: "Adapt only the last N blocks (0: all).") var numLayers = 0
    @Option(help: "LoRA rank r.") var rank = 8
    @Option(help: "LoRA alpha.") var alpha: Float = 16
    @Option(help: "Dropout on the adapter's input.") var dropout: Float = 0
    @Option(help: "Comma-separated module names, or all-linear.") var targets = "all-linear"
    @Flag(help: "Scale by alpha/√r (rsLoRA) instead of alpha/r.") var useRslora = false

    @Option(name: .customLong("init"), help: "kaiming (PEFT's default), gaussian or none.") var initialization = "kaiming"
    @Flag(help: "Train on completion / assistant tokens only.") var maskPrompt = false
    @Option(help: "Append one JSON object per report to this file.") var metricsFile: String?

    func run() throws {
        try Lora.reportingErrors { try train() }
    }

    private func train() throws {
        guard iters > 0, batchSize > 0, gradAccumulationSteps > 0, maxSeqLength > 1, stepsPerReport > 0 else {
            throw LoRAError("--iters, --batch-size, --grad-accumulation-steps and --steps-per-report must be positive")
        }
        guard let schedule = LRSchedule(rawValue: lrSchedule) else { throw LoRAError("--lr-schedule must be constant, linear or cosine") }
        let loraInit: LoRAInit
        switch initialization {
        case "kaiming", "true": loraInit = .kaiming
        case "gaussian": loraInit = .gaussian
        case "none", "false": loraInit = .none
        default: throw LoRAError("--init must be kaiming, gaussian or none (got \(initialization))")
        }
        let tokenizer = try ModelLocation.tokenizer(model)
        let base = try ModelLocation.load(model)
        let trainSet = try DataSet(path: DataSet.path(data, split: "train"), tokenizer: tokenizer, maskPrompt: maskPrompt,
                                   maxSequenceLength: maxSeqLength)
        let validPath = DataSet.path(data, split: "valid")
        let validSet = stepsPerEval > 0 && FileManager.default.fileExists(atPath: validPath) && validPath != DataSet.path(data, split: "train")
            ? try DataSet(path: validPath, tokenizer: tokenizer, maskPrompt: maskPrompt, maxSequenceLength: maxSeqLength) : nil
        if trainSet.truncated > 0 { print("note: \(trainSet.truncated) training rows were cut to \(maxSeqLength) tokens") }

        var config = LoRAConfig(r: rank, loraAlpha: alpha, loraDropout: dropout, targetModules: TargetModules(commaSeparated: targets),
                                useRSLoRA: useRslora, initialization: loraInit)
        if numLayers > 0 {
            let n = base.config.numLayers
            config.layersToTransform = Array(max(0, n - numLayers)..<n)
        }
        config.baseModelNameOrPath = model
        let adapter = try LoRAAdapter.attach(to: base, config: config, seed: seed)
        let all = base.config.parameterCount + adapter.parameterCount
        print(String(format: "trainable params: %d || all params: %d || trainable%%: %.4f",
                     adapter.parameterCount, all, 100 * Double(adapter.parameterCount) / Double(all)))

        let pad = Int32(tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0)
        var order = SeededRandom(seed: seed &+ 1)
        var batches: [Batch] = []
        func nextBatch() -> Batch {
            if batches.isEmpty {
                let shuffled = DataSet.shuffled(trainSet, using: &order)
                batches = shuffled.batches(size: batchSize, padId: pad).reversed()
            }
            return batches.removeLast()
        }
        let trainer = Trainer(model: base, optimizer: AdamW(parameters: adapter.parameters, learningRate: learningRate),
                              schedule: schedule, warmupSteps: warmup, totalSteps: iters,
                              maxGradNorm: maxGradNorm > 0 ? maxGradNorm : nil)
        let start = DispatchTime.now().uptimeNanoseconds
        var windowLoss = 0.0, windowSteps = 0, windowTokens = 0, trainedTokens = 0
        var windowStart = start
        for step in 1...iters {
            let r = try trainer.step((0..<gradAccumulationSteps).map { _ in nextBatch() })
            windowLoss += r.loss; windowSteps += 1; windowTokens += r.tokens; trainedTokens += r.tokens
            if step % stepsPerReport == 0 || step == iters {
                let now = DispatchTime.now().uptimeNanoseconds
                let seconds = Double(now - windowStart) / 1e9
                var metrics: [String: Any] = ["step": step, "loss": windowLoss / Double(windowSteps), "learning_rate": r.learningRate,
                                              "tokens_per_second": Double(windowTokens) / seconds, "trained_tokens": trainedTokens,
                                              "peak_memory_mb": peakResidentMB()]
                var line = String(format: "step %d/%d  loss %.4f  lr %.2e  %.0f tok/s  %.0f MB", step, iters,
                                  windowLoss / Double(windowSteps), r.learningRate, Double(windowTokens) / seconds, peakResidentMB())
                if let validSet, step % stepsPerEval == 0 || step == iters {
                    let v = try evaluate(base, validSet, pad: pad)
                    metrics["val_loss"] = v
                    line += String(format: "  val_loss %.4f", v)
                }
                print(line)
                fflush(nil)
                if let metricsFile { try appendJSONLine(metrics, to: metricsFile) }
                windowLoss = 0; windowSteps = 0; windowTokens = 0; windowStart = now
            }
        }
        try adapter.save(to: adapterPath)
        let total = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print(String(format: "trained %d steps, %d tokens in %.1f s; adapter saved to %@", iters, trainedTokens, total, adapterPath))
    }

    private func evaluate(_ model: LlamaModel, _ set: DataSet, pad: Int32) throws -> Double {
        var total = 0.0, count = 0
        for (i, batch) in set.batches(size: batchSize, padId: pad).enumerated() where valBatches == 0 || i < valBatches {
            let (loss, n) = try model.loss(batch)
            total += loss * Double(n); count += n
        }
        return count == 0 ? 0 : total / Double(count)
    }

    private func appendJSONLine(_ object: [String: Any], to path: String) throws {
        var data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        data.append(0x0A)
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw LoRAError("cannot write metrics file \(path)") }
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(data)
    }
}
