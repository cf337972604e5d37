import ArgumentParser
import Foundation
import LoRACommandLine
import LoRAKit

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune a LoRA adapter on a data set and save it in PEFT's format.",
        discussion: """
            --data is a folder with train.jsonl (and optionally valid.jsonl) or one .jsonl file; rows {"text"}, \
            {"prompt","completion"} or {"messages"}. Adapter settings use PEFT's names and meaning. Any option can \
            also be set in a YAML file given with -c/--config (keys are the option names, e.g. batch_size: 8); \
            options on the command line win. The adapter folder also receives checkpoint.safetensors (what \
            --resume continues from), training_args.json (the run's settings, which --resume reads back: \
            `lora train --resume --adapter-path A` needs no other option) and loss.svg. Ctrl-C or SIGTERM \
            saves the current step and prints the command that resumes.
            """)

    @Option(name: [.short, .customLong("config")], help: "A YAML file of settings (keys: the long option names).") var config: String?
    @Option(name: [.short, .long], help: "A Hugging Face folder, a .gguf file, a hub id ORG/NAME, or smollm2-135m.") var model: String?
    @Option(help: "A data folder (train.jsonl, valid.jsonl) or a .jsonl file.") var data: String?
    @Option(help: "Where the adapter and checkpoints are written (default: adapters).") var adapterPath: String?
    @Option(parsing: .unconditional, help: "Optimizer steps (default: 100).") var iters: Int?
    @Option(parsing: .unconditional, help: "Passes over the training set, instead of --iters.") var epochs: Int?
    @Option(parsing: .unconditional, help: "Sequences per micro-batch (default: 4).") var batchSize: Int?
    @Option(parsing: .unconditional, help: "Micro-batches per optimizer step (default: 1).") var gradAccumulationSteps: Int?
    @Option(parsing: .unconditional, help: "Peak learning rate (default: 1e-4).") var learningRate: Float?
    @Option(help: "constant, linear or cosine (default: constant).") var lrSchedule: String?
    @Option(parsing: .unconditional, help: "Warmup steps (default: 0).") var warmup: Int?
    @Option(parsing: .unconditional, help: "Clip the global gradient norm to this, 0: off (default: 1).") var maxGradNorm: Float?
    @Option(parsing: .unconditional, help: "AdamW's decoupled weight decay (default: 0).") var weightDecay: Float?
    @Option(parsing: .unconditional, help: "Longer rows are cut to this many tokens (default: 2048).") var maxSeqLength: Int?
    @Option(parsing: .unconditional, help: "Seed for the adapter's initialization, dropout and data order (default: 0).") var seed: Int?
    @Option(parsing: .unconditional, help: "Report every N steps (default: 10).") var stepsPerReport: Int?
    @Option(parsing: .unconditional, help: "Also evaluate the validation split every N steps; it is always evaluated before the first and after the last step (default: 0).")
    var stepsPerEval: Int?
    @Option(parsing: .unconditional, help: "Validation batches per evaluation, 0: all (default: 0).") var valBatches: Int?
    @Option(parsing: .unconditional, help: "Write a checkpoint every N steps, 0: only at the end (default: 100).") var saveEvery: Int?
    @Option(parsing: .unconditional, help: "Also keep the adapters of the last N saves in step-numbered folders (0000100_adapters/), 0: none (default: 0).")
    var keepCheckpoints: Int?
    @Flag(inversion: .prefixedNo, help: "Also keep the adapter with the best validation loss in best_adapters/.") var saveBest: Bool?
    @Flag(inversion: .prefixedNo, help: "Continue from the checkpoint in --adapter-path.") var resume: Bool?
    @Flag(inversion: .prefixedNo, help: "Recompute each block's activations in the backward pass: less memory, about a third more time.")
    var gradCheckpoint: Bool?
    @Option(parsing: .unconditional, help: "Adapt only the last N blocks, 0: all (default: 0).") var numLayers: Int?
    @Option(help: "lora, lora-plus (B learns --lora-plus-ratio times faster), lora-fa (A frozen, B projected), dora (a trained magnitude per output), vera (shared frozen projections, two trained vectors per layer), adalora (rank moved between layers by importance) or lora-drop (a probe run picks the layers that keep their own pair) (default: lora).")
    var method: String?
    @Option(parsing: .unconditional, help: "VeRA: seeds the shared random projections (default: 0).") var projectionPrngKey: Int?
    @Flag(inversion: .prefixedNo, help: "DoRA on top of the method (PEFT's use_dora); --method dora is lora with it.") var useDora: Bool?
    @Option(parsing: .unconditional, help: "AdaLoRA: triplets per layer at the start (default: 1.5 × --target-r, rounded up).") var initR: Int?
    @Option(parsing: .unconditional, help: "AdaLoRA: the average rank the budget ends at (default: --rank, else 8).") var targetR: Int?
    @Option(parsing: .unconditional, help: "AdaLoRA: warm-up steps before any pruning (default: 0).") var tinit: Int?
    @Option(parsing: .unconditional, help: "AdaLoRA: final steps with the ranks fixed (default: 0).") var tfinal: Int?
    @Option(parsing: .unconditional, help: "AdaLoRA: steps between re-allocations (default: 1).") var deltaT: Int?
    @Option(parsing: .unconditional, help: "LoRA-Drop: steps of the probe run (default: 20).") var dropProbeSteps: Int?
    @Option(parsing: .unconditional, help: "LoRA-Drop: the share of the training examples the probe uses (default: 0.2).") var dropSampleRatio: Double?
    @Option(parsing: .unconditional, help: "LoRA-Drop: keep the most important layers until they hold this share of the importance (default: 0.9).") var dropThreshold: Double?
    @Option(help: "Write the run's summary (settings, parameters, speed, memory, losses) to this JSON file.") var summaryFile: String?
    @Option(parsing: .unconditional, help: "LoRA+'s ratio of B's learning rate to A's (default: 16).") var loraPlusRatio: Float?
    @Option(parsing: .unconditional, help: "LoRA rank r (default: 8; VeRA's: 256).") var rank: Int?
    @Option(parsing: .unconditional, help: "LoRA alpha (default: 16).") var alpha: Float?
    @Option(parsing: .unconditional, help: "Dropout on the adapter's input (default: 0).") var dropout: Float?
    @Option(help: "Comma-separated module names, or all-linear (default: all-linear).") var targets: String?
    @Flag(inversion: .prefixedNo, help: "Scale by alpha/√r (rsLoRA) instead of alpha/r.") var useRslora: Bool?
    @Option(name: .customLong("init"), help: "kaiming (PEFT's default), gaussian, none, pissa (A and B from W's top singular vectors), pissa_niter_K (a randomized SVD with K iterations) or olora (from W's QR); pissa and olora adapters are saved converted for the untouched base.")
    var initialization: String?
    @Flag(inversion: .prefixedNo, help: "Train on completion / assistant tokens only.") var maskPrompt: Bool?
    @Option(help: "Append one JSON object per report to this file.") var metricsFile: String?
    @Option(help: PrecisionOption.helpNamingDefault) var precision: String?

    func run() throws {
        try Lora.reportingErrors { try train() }
    }

    private func train() throws {
        let group = DataParallelRun.start()
        let given = try config.map { try ConfigFile(path: $0, allowedKeys: trainSettingNames) } ?? ConfigFile()
        let resume = try self.resume ?? given.bool("resume") ?? false
        let adapterPath = try adapterPath ?? given.string("adapter-path") ?? "adapters"
        // A resumed run starts from the settings it was saved with; the command line and -c still win.
        let file = resume ? given.overlaid(on: try TrainingArguments.read(folder: adapterPath)) : given
        var arguments = TrainingArguments()
        /// An integer setting: the flag, else the config file, else the default; in minimum...maximum.
        func integer(_ flag: Int?, _ key: String, _ fallback: Int, minimum: Int = 1,
                     maximum: Int = TrainingSettings.maximumSteps) throws -> Int {
            let v = try flag ?? file.int(key) ?? fallback
            guard v >= minimum else { throw LoRAError("--\(key) must be at least \(minimum) (got \(v))") }
            guard v <= maximum else { throw LoRAError("--\(key) must be at most \(maximum) (got \(v))") }
            arguments[key] = v
            return v
        }
        /// A real-valued setting: finite, and at least 0 (above 0 when `positive`).
        func real(_ flag: Float?, _ key: String, _ fallback: Float, positive: Bool = false) throws -> Float {
            let v = try flag ?? file.float(key) ?? fallback
            guard v.isFinite, positive ? v > 0 : v >= 0 else {
                throw LoRAError("--\(key) must be a finite number \(positive ? "above" : "of at least") 0 (got \(v))")
            }
            arguments[key] = v
            return v
        }
        func string(_ flag: String?, _ key: String, _ fallback: String) throws -> String {
            let v = try flag ?? file.string(key) ?? fallback
            arguments[key] = v
            return v
        }
        func bool(_ flag: Bool?, _ key: String) throws -> Bool {
            let v = try flag ?? file.bool(key) ?? false
            arguments[key] = v
            return v
        }
        var settings = TrainingSettings()
        settings.batchSize = try integer(batchSize, "batch-size", 4, maximum: TrainingSettings.maximumBatchSize)
        settings.gradAccumulationSteps = try integer(gradAccumulationSteps, "grad-accumulation-steps", 1,
                                                     maximum: TrainingSettings.maximumAccumulationSteps)
        settings.learningRate = try real(learningRate, "learning-rate", 1e-4, positive: true)
        let scheduleName = try string(lrSchedule, "lr-schedule", "constant")
        guard let schedule = LRSchedule(rawValue: scheduleName) else {
            throw LoRAError("--lr-schedule must be constant, linear or cosine (got \(scheduleName))")
        }
        settings.schedule = schedule
        settings.warmup = try integer(warmup, "warmup", 0, minimum: 0)
        let clip = try real(maxGradNorm, "max-grad-norm", 1)
        settings.maxGradNorm = clip > 0 ? clip : nil
        settings.weightDecay = try real(weightDecay, "weight-decay", 0)
        settings.seed = UInt64(try integer(seed, "seed", 0, minimum: 0, maximum: .max))
        settings.stepsPerReport = try integer(stepsPerReport, "steps-per-report", 10)
        settings.stepsPerEval = try integer(stepsPerEval, "steps-per-eval", 0, minimum: 0)
        let methodName = try string(method, "method", "lora")
        let (method, adapterKind) = try TrainingMethod.named(methodName)
        settings.method = method
        let useDoRA = try bool(useDora, "use-dora") || adapterKind == .dora
        if useDoRA && adapterKind == .vera { throw LoRAError("--use-dora does not apply to --method vera") }
        settings.loraPlusRatio = try real(loraPlusRatio, "lora-plus-ratio", 16, positive: true)
        let valBatches = try integer(self.valBatches, "val-batches", 0, minimum: 0, maximum: .max)
        settings.validationBatches = valBatches > 0 ? valBatches : nil
        settings.saveEvery = try integer(saveEvery, "save-every", 100, minimum: 0)
        settings.keepCheckpoints = try integer(keepCheckpoints, "keep-checkpoints", 0, minimum: 0)
        settings.saveBest = try bool(saveBest, "save-best")
        let maxSeqLength = try integer(self.maxSeqLength, "max-seq-length", 2048, minimum: 2, maximum: 1 << 20)
        let maskPrompt = try bool(self.maskPrompt, "mask-prompt")
        let metricsFile = try metricsFile ?? file.string("metrics-file")
        if let metricsFile { arguments["metrics-file"] = OutputPath.absolute(metricsFile) }

        let r = try integer(rank, "rank", adapterKind == .vera ? 256 : 8, maximum: LoRAConfig.maximumRank)
        let targetModules = TargetModules(commaSeparated: try string(targets, "targets", "all-linear"))
        let dropoutValue = try real(dropout, "dropout", 0)
        guard (0..<1).contains(dropoutValue) else { throw LoRAError("--dropout must be in [0, 1) (got \(dropoutValue))") }
        var adapterConfig: any AdapterConfiguration
        for (flag, given, kind) in [("init-r", try initR ?? file.int("init-r") != nil, TrainingMethod.AdapterKind.adalora),
                                    ("target-r", try targetR ?? file.int("target-r") != nil, .adalora),
                                    ("tinit", try tinit ?? file.int("tinit") != nil, .adalora),
                                    ("tfinal", try tfinal ?? file.int("tfinal") != nil, .adalora),
                                    ("delta-t", try deltaT ?? file.int("delta-t") != nil, .adalora),
                                    ("drop-probe-steps", try dropProbeSteps ?? file.int("drop-probe-steps") != nil, .loraDrop),
                                    ("drop-sample-ratio", try dropSampleRatio.map(Float.init) ?? file.float("drop-sample-ratio") != nil, .loraDrop),
                                    ("drop-threshold", try dropThreshold.map(Float.init) ?? file.float("drop-threshold") != nil, .loraDrop)]
        where given && adapterKind != kind {
            throw LoRAError("--\(flag) applies to --method \(kind == .adalora ? "adalora" : "lora-drop") only")
        }
        var drop = LoRADrop.Settings()
        if adapterKind == .loraDrop {
            drop.probeSteps = try integer(dropProbeSteps, "drop-probe-steps", drop.probeSteps)
            // Through the Float settings reader and back by its shortest text, so 0.9 stays 0.9.
            func fraction(_ flag: Double?, _ key: String, _ fallback: Double) throws -> Double {
                Double("\(try real(flag.map(Float.init), key, Float(fallback), positive: true))")!
            }
            drop.sampleRatio = try fraction(dropSampleRatio, "drop-sample-ratio", drop.sampleRatio)
            drop.threshold = try fraction(dropThreshold, "drop-threshold", drop.threshold)
            try drop.validate()
        }
        if adapterKind == .adalora {
            if try initialization ?? file.string("init") != nil { throw LoRAError("--init does not apply to --method adalora (P and Q start normal, Λ at zero, as in PEFT)") }
            if useDoRA { throw LoRAError("--use-dora does not apply to --method adalora") }
            let target = try integer(targetR ?? rank, "target-r", 8, maximum: LoRAConfig.maximumRank)
            let config = AdaLoRAConfig(initR: try integer(initR, "init-r", (3 * target + 1) / 2, maximum: LoRAConfig.maximumRank),
                                       targetR: target, loraAlpha: try real(alpha, "alpha", 16, positive: true), loraDropout: dropoutValue,
                                       targetModules: targetModules, tinit: try integer(tinit, "tinit", 0, minimum: 0),
                                       tfinal: try integer(tfinal, "tfinal", 0, minimum: 0), deltaT: try integer(deltaT, "delta-t", 1))
            try config.validate(source: "the AdaLoRA options")
            adapterConfig = config  // total_step is set once the run's length is known
        } else if adapterKind == .vera {
            // VeRA has no scaling and no LoRA initialization: a flag for them would silently do nothing.
            for (flag, given) in [("alpha", try alpha ?? file.float("alpha") != nil), ("use-rslora", try useRslora ?? file.bool("use-rslora") != nil),
                                  ("init", try initialization ?? file.string("init") != nil)] where given {
                throw LoRAError("--\(flag) does not apply to --method vera")
            }
            var vera = VeRAConfig(r: r, targetModules: targetModules,
                                  projectionPRNGKey: UInt64(try integer(projectionPrngKey, "projection-prng-key", 0, minimum: 0, maximum: .max)))
            vera.veraDropout = dropoutValue
            adapterConfig = vera
        } else {
            if try projectionPrngKey ?? file.int("projection-prng-key") != nil {
                throw LoRAError("--projection-prng-key applies to --method vera only")
            }
            var lora = LoRAConfig(r: r, loraAlpha: try real(alpha, "alpha", 16, positive: true), loraDropout: dropoutValue,
                                  targetModules: targetModules, useRSLoRA: try bool(useRslora, "use-rslora"), useDoRA: useDoRA)
            let initName = try string(initialization, "init", "kaiming")
            guard let initialization = initName == "kaiming" ? .kaiming : initName == "none" ? LoRAInit.none : LoRAInit(name: initName) else {
                throw LoRAError("--init must be kaiming, gaussian, none, pissa, pissa_niter_K (K in 1...100) or olora (got \(initName))")
            }
            if adapterKind == .loraDrop && (initialization.isDataDriven || useDoRA) {
                throw LoRAError("--method lora-drop trains plain LoRA pairs: --init \(initialization.name) and --use-dora do not apply")
            }
            lora.initialization = initialization
            adapterConfig = lora
        }
        let numLayers = try integer(self.numLayers, "num-layers", 0, minimum: 0, maximum: ModelConfig.maximumLayers)
        // The saved steps count only when this run names neither: --epochs on a resume replaces them.
        let givenEpochs = try epochs ?? file.int("epochs")
        let givenIters = try iters ?? given.int("iters") ?? (givenEpochs == nil ? file.int("iters") : nil)
        if givenEpochs != nil && givenIters != nil { throw LoRAError("give --iters or --epochs, not both") }
        let epochs = try givenEpochs.map { try integer($0, "epochs", 1) }
        let iters = try givenIters.map { try integer($0, "iters", 1) }
        arguments["epochs"] = nil  // stored as the steps it makes, so that a resume asks for no more

        let missing = !resume ? "" : FileManager.default.fileExists(atPath: adapterPath + "/" + TrainingArguments.fileName)
            ? " (\(adapterPath)/\(TrainingArguments.fileName) has none either)" : " (\(adapterPath) has no \(TrainingArguments.fileName) to resume with)"
        guard let model = try model ?? file.string("model") else { throw LoRAError("--model is required (or model: in the config file)\(missing)") }
        guard let data = try data ?? file.string("data") else { throw LoRAError("--data is required (or data: in the config file)\(missing)") }
        arguments["model"] = try ModelLocation.canonicalName(model)
        arguments["data"] = OutputPath.absolute(data)
        let precisionName = try string(precision, "precision", "fp32")
        let gradientCheckpointing = try bool(gradCheckpoint, "grad-checkpoint")

        try OutputPath.requireWritable(folder: adapterPath)
        for path in [metricsFile, summaryFile].compactMap({ $0 }) { try OutputPath.requireWritable(file: path) }
        let lead = group.map { $0.rank == 0 } ?? true  // the rank that writes the folder, metrics and summary
        let metrics = try lead ? metricsFile.map { try MetricsFile(path: $0) } : nil

        // Everything checked: now the expensive part.
        let tokenizer = try ModelLocation.tokenizer(model)
        let base = try ModelLocation.load(model, precision: PrecisionOption.resolve(precisionName))
        base.gradientCheckpointing = gradientCheckpointing
        SlowPathNotice.warnIfSlow()
        let trainPath = DataSet.path(data, split: "train")
        let trainSet = try DataSet(path: trainPath, tokenizer: tokenizer, maskPrompt: maskPrompt, maxSequenceLength: maxSeqLength)
        let validPath = DataSet.path(data, split: "valid")
        let validSet = validPath != trainPath && FileManager.default.fileExists(atPath: validPath)
            ? try DataSet(path: validPath, tokenizer: tokenizer, maskPrompt: maskPrompt, maxSequenceLength: maxSeqLength) : nil
        // epochs ≤ maximumSteps and examples held in memory: the product cannot overflow.
        settings.iterations = epochs.map {
            TrainingLoop.iterations(epochs: $0, examples: trainSet.examples.count, batchSize: settings.batchSize,
                                    gradAccumulationSteps: settings.gradAccumulationSteps)
        } ?? iters ?? 100
        if let epochs, settings.iterations > TrainingSettings.maximumSteps {
            throw LoRAError("--epochs \(epochs) makes \(settings.iterations) steps, more than \(TrainingSettings.maximumSteps)")
        }
        arguments["iters"] = settings.iterations
        try settings.validate()
        if let group { try DataParallelRun.check(group, batchSize: settings.batchSize, dropout: dropoutValue, examples: trainSet.examples.count) }
        // mpirun relays each rank's output line by line (through a terminal of its own): no live line there.
        let display = group == nil ? ProgressDisplay() : ProgressDisplay(live: false)
        guard trainSet.targetCount > 0 else {
            throw LoRAError("no row of \(trainPath) has a token to train on\(maskPrompt ? " after --mask-prompt (every completion or assistant turn is empty or cut off by --max-seq-length)" : "")")
        }
        let untrained = trainSet.examples.filter { !$0.isTarget.dropFirst().contains(true) }.count  // the first token is never predicted
        if untrained > 0 {
            display.warn("\(untrained) of \(trainSet.examples.count) training rows have no token to train on\(maskPrompt ? " after --mask-prompt" : "") and only cost time")
        }
        let noValidation = "there is no validation set " + (validPath == trainPath ? "(--data is one file; a folder can hold valid.jsonl)" : "(no \(validPath))")
        if validSet == nil && settings.stepsPerEval > 0 { display.warn("--steps-per-eval \(settings.stepsPerEval) does nothing: \(noValidation)") }
        if validSet == nil && settings.saveBest { display.warn("--save-best does nothing: \(noValidation)") }
        var line = "train: \(trainSet.examples.count) examples, \(trainSet.targetCount) target tokens"
        if trainSet.truncated > 0 { line += " (\(trainSet.truncated) rows cut to \(maxSeqLength) tokens)" }
        if let validSet {
            line += "; valid: \(validSet.examples.count) examples"
            if validSet.truncated > 0 { line += " (\(validSet.truncated) rows cut to \(maxSeqLength) tokens)" }
        }
        display.printAbove(line)

        if numLayers > 0 {
            let n = base.config.numLayers
            adapterConfig.layersToTransform = Array(max(0, n - numLayers)..<n)
        }
        adapterConfig.baseModelNameOrPath = arguments["model"] as? String
        if var config = adapterConfig as? AdaLoRAConfig {
            config.totalStep = settings.iterations
            try config.validate(source: "the AdaLoRA options (with \(settings.iterations) steps)")
            adapterConfig = config
        }
        let pad = Int32(tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0)
        // Held until the process ends; taken once the run is known to start, so that a refused one leaves
        // no folder behind (LoRA-Drop's probe takes it first: it writes its selection there).
        var folderLock: AdapterFolderLock? = nil
        var sharing: [[String]] = []
        if adapterKind == .loraDrop, let lora = adapterConfig as? LoRAConfig {
            if lead { folderLock = try AdapterFolderLock(folder: adapterPath) }
            let selection: LoRADrop.Selection
            if resume, FileManager.default.fileExists(atPath: adapterPath + "/" + LoRADrop.Selection.fileName) {
                selection = try LoRADrop.Selection.read(folder: adapterPath)
                display.printAbove("LoRA-Drop: the selection in \(adapterPath)/\(LoRADrop.Selection.fileName)")
            } else {
                display.printAbove("LoRA-Drop probe: \(drop.probeSteps) steps on \(Int((drop.sampleRatio * 100).rounded()))% of the training examples")
                selection = try LoRADrop.probe(model: base, config: lora, trainingSet: trainSet, training: settings, settings: drop, padId: pad)
                if lead { try selection.write(to: adapterPath) }
            }
            display.printAbove(Self.describe(selection))
            sharing = selection.sharedGroups
        }
        try Self.requireMatches(targetModules, in: base)
        let adapter = try Adapter.attach(to: base, config: adapterConfig, seed: settings.seed, sharing: sharing)
        let loop = try TrainingLoop(model: base, adapter: adapter, trainingSet: trainSet, validationSet: validSet,
                                    settings: settings, padId: pad)
        // LoRA-FA freezes A when the loop makes its optimizer, so the count comes after.
        // PEFT counts frozen adapter tensors (LoRA-FA's A) but not buffers (VeRA's shared projections).
        let all = base.config.parameterCount + adapter.weightCount - adapter.shared.reduce(0) { $0 + $1.value.count }
        // PEFT's print_trainable_parameters, thousands separators included.
        func grouped(_ n: Int) -> String {
            let digits = String(n)
            return digits.enumerated().map { i, c in (i > 0 && (digits.count - i) % 3 == 0 ? "," : "") + String(c) }.joined()
        }
        display.printAbove("trainable params: \(grouped(adapter.parameterCount)) || all params: \(grouped(all)) || trainable%: "
                           + String(format: "%.4f", 100 * Double(adapter.parameterCount) / Double(all)))
        display.printAbove(Self.perTarget(adapter, grouped: grouped))

        let longest = ((validSet?.examples ?? []) + trainSet.examples).map(\.tokens.count).max() ?? 1
        // Under mpirun each rank holds its share of the batch, and the ranks on a machine share its memory.
        let memory = MemoryEstimate(model: base, batchSize: settings.batchSize / (group?.size ?? 1), seqLen: longest)
        if let available = try MemoryEstimate.availableBytes() {
            try memory.check(available: available / Double(MPI.job?.localSize ?? 1), batchSize: settings.batchSize, seqLen: longest,
                             gradientCheckpointing: base.gradientCheckpointing)
        }
        display.printAbove("estimated peak memory\(group == nil ? "" : " per rank"): \(memory.summary)")
        loop.group = group
        if lead { loop.folderLock = try folderLock ?? AdapterFolderLock(folder: adapterPath) }
        if resume {
            // Rank 0 repairs the folder (a save a kill interrupted) before the others read it.
            if lead { try loop.resume(from: adapterPath) }
            try group?.barrier()
            if !lead { try loop.resume(from: adapterPath, readOnly: true) }
            display.printAbove("resuming at step \(loop.step) of \(settings.iterations)")
        } else if let before = try loop.validate() {
            display.printAbove(String(format: "validation loss before training: %.4f", before))
        }
        loop.companionFiles[TrainingArguments.fileName] = try arguments.json()
        // Under mpirun, Ctrl-C leaves the ranks mpirun's SIGTERM and a second before its SIGKILL: each
        // rank gives up the step in flight, and rank 0 saves the one before. SIGUSR1, which mpirun
        // forwards, lets the step finish: every rank must then stop after the same step, and they agree.
        let stop = StopSignals(announces: lead, abandoning: group == nil ? [] : [SIGINT, SIGTERM])
        defer { withExtendedLifetime(stop) {} }  // signals during the summary are taken, not a crash
        base.abandonsStep = { stop.abandonsStep }
        loop.shouldStop = { group.map { (try? $0.any(stop.received != nil)) ?? true } ?? (stop.received != nil) }
        let summary = try loop.run(folder: lead ? adapterPath : nil) { p in
            display.show(p)
            if let metrics, let r = p.report {
                var line: [String: Any] = ["step": p.step, "loss": r.loss, "learning_rate": p.learningRate,
                                           "tokens_per_second": r.processedTokensPerSecond,
                                           "target_tokens_per_second": r.tokensPerSecond, "trained_tokens": p.trainedTokens,
                                           "peak_memory_mb": peakResidentMB()]
                if let v = r.validationLoss { line["val_loss"] = v }
                try metrics.append(line)
            }
        }
        // A rank that ends by a signal makes mpirun kill the others: none ends before rank 0 has saved
        // (every rank stopped after the same step; those the signal missed end normally). A rank that
        // gave up its step cannot meet the others, who may be inside that step's sum.
        if summary.stopped && !summary.abandoned { try? group?.barrier() }
        // Nor does one that gave it up end before rank 0 has saved: rank 0's end, or mpirun's SIGKILL,
        // ends it first (the wait is bounded should only this rank have had the signal).
        if summary.abandoned && !lead { Thread.sleep(forTimeInterval: 5) }
        if summary.stopped, let signal = stop.received {
            let when = summary.abandoned ? "during step \(summary.steps + 1)" : "after step \(summary.steps)"
            display.printAbove("\(signal.name): stopped \(when) of \(settings.iterations); the adapter and checkpoint of step \(summary.steps) are saved in \(adapterPath)")
            print("resume with: \(group.map { "mpirun -np \($0.size) " } ?? "")lora train --resume --adapter-path \(OutputPath.shellQuoted(adapterPath))")
            fflush(nil)
            signal.endProcess()
        }
        print(String(format: "trained %d steps in %@ (%.0f tok/s, %.0f target tok/s this session), %d target tokens in all, peak memory %.0f MB",
                     summary.steps, ProgressDisplay.duration(summary.seconds), summary.processedTokensPerSecond, summary.tokensPerSecond,
                     summary.trainedTokens, peakResidentMB()))
        let validation = summary.history.validation
        if let first = validation.first, let last = validation.last, let best = summary.history.bestValidation {
            print(String(format: "validation loss %.4f at step %d → %.4f at step %d (best %.4f at step %d)",
                         first.loss, first.step, last.loss, last.step, best.loss, best.step))
        }
        if adapterKind == .adalora {
            let ranks = adapter.sites(of: AdaLoRA.self).map { $0.adapter.keptTriplets?.filter { $0 }.count ?? $0.adapter.rank }
            print("AdaLoRA ranks: \(ranks.reduce(0, +)) in all over \(ranks.count) layers (\(ranks.min() ?? 0) to \(ranks.max() ?? 0)); lora inspect \(adapterPath) lists them")
        }
        print("adapter saved to \(adapterPath); loss curve \(adapterPath)/loss.svg")
        if let summaryFile, lead {
            let history = summary.history
            let size = ["adapter_config.json", "adapter_model.safetensors"].reduce(0) { total, name in
                total + (((try? FileManager.default.attributesOfItem(atPath: adapterPath + "/" + name))?[.size] as? NSNumber)?.intValue ?? 0)
            }
            let json: [String: Any] = [
                "method": methodName, "trainable_parameters": adapter.parameterCount, "steps": summary.steps,
                "trained_tokens": summary.trainedTokens, "seconds": summary.seconds,
                "tokens_per_second": summary.processedTokensPerSecond, "target_tokens_per_second": summary.tokensPerSecond,
                "peak_memory_mb": peakResidentMB(),
                "final_train_loss": history.train.last?.loss ?? NSNull(), "adapter_bytes": size,
                "train_loss": history.train.map { [$0.step, $0.loss] }, "validation_loss": history.validation.map { [$0.step, $0.loss] },
                "best_validation_loss": history.bestValidation?.loss ?? NSNull(), "final_validation_loss": history.validation.last?.loss ?? NSNull(),
            ]
            let data = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
            try OutputPath.createParent(of: summaryFile)
            try LoRAError.writing(summaryFile) { try data.write(to: URL(fileURLWithPath: summaryFile), options: .atomic) }
        }
    }

    /// Refuses target names that match no linear layer (PEFT only refuses when none does, so a typo
    /// in one name of several would train without that module), listing the names the model has.
    static func requireMatches(_ targets: TargetModules, in model: LlamaModel) throws {
        guard case .names(let names) = targets else { return }
        let unmatched = names.filter { name in !model.sites.contains { $0.path == name || $0.path.hasSuffix("." + name) } }
        guard !unmatched.isEmpty else { return }
        let sites = model.sites.filter { $0.name != "lm_head" }
        var kinds: [String] = []
        for site in sites where !kinds.contains(site.name) { kinds.append(site.name) }
        throw LoRAError("--targets \(unmatched.joined(separator: ", ")) \(unmatched.count == 1 ? "matches" : "match") no linear layer of this model; "
                        + "its modules are \(kinds.joined(separator: ", ")) (or all-linear, or full paths such as \(sites.first?.path ?? "model.layers.0.self_attn.q_proj"))")
    }

    /// The trainable parameters per target module name, e.g. "q_proj: 30 layers, 276,480".
    static func perTarget(_ adapter: Adapter, grouped: (Int) -> String) -> String {
        var order: [String] = [], layers: [String: Int] = [:], counts: [String: Int] = [:]
        var seen = Set<ObjectIdentifier>()
        for m in adapter.modules {
            if layers[m.site.name] == nil { order.append(m.site.name) }
            layers[m.site.name, default: 0] += 1
            // A pair LoRA-Drop shares counts once, at its owner.
            let own = m.adapter.parameters.filter { seen.insert(ObjectIdentifier($0.value)).inserted }
            counts[m.site.name, default: 0] += own.reduce(0) { $0 + $1.value.count }
        }
        return "  " + order.map { "\($0): \(layers[$0]!) layer\(layers[$0]! == 1 ? "" : "s"), \(grouped(counts[$0]!))" }.joined(separator: "; ")
    }

    /// LoRA-Drop's selection as a table: site, importance, kept or the site whose pair it shares.
    static func describe(_ selection: LoRADrop.Selection) -> String {
        let kept = selection.sites.filter(\.kept)
        let width = selection.sites.map(\.site.count).max() ?? 4
        var out = "LoRA-Drop selection (threshold \(selection.threshold), \(selection.probeSteps) probe steps on \(selection.sampleExamples) examples): "
            + "\(kept.count) of \(selection.sites.count) layers keep their own pair, \(selection.sharedGroups.count) shared pairs for the rest\n"
        out += "  " + "site".padding(toLength: width, withPad: " ", startingAt: 0) + "  importance  pair\n"
        for s in selection.sites {
            let pair = s.kept ? "kept" : "shared" + (s.sharesWith.map { " with \($0)" } ?? " (owner)")
            out += "  " + s.site.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + String(format: "%10.4f", s.importance) + "  " + pair + "\n"
        }
        return String(out.dropLast())
    }
}
