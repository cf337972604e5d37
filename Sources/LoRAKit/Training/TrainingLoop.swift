import Foundation

/// Where a run stands after a step, for progress displays and metrics.
public struct TrainingProgress: Sendable {
    public let step: Int
    public let totalSteps: Int
    /// This step's mean loss over its target tokens.
    public let loss: Double
    public let learningRate: Float
    public let gradNorm: Float
    /// Target tokens trained so far, in this and earlier sessions of the run.
    public let trainedTokens: Int
    /// Training time so far, in this and earlier sessions.
    public let seconds: Double
    /// Target tokens per second, all tokens the model ran per second (prompts included, padding
    /// not), and the estimated time left, from this session's steps.
    public let tokensPerSecond: Double
    public let processedTokensPerSecond: Double
    public let secondsLeft: Double
    /// Set every `stepsPerReport` steps, when the validation set was evaluated, and at the last step.
    public let report: Report?
    /// Whether a checkpoint was written after this step, and whether it holds a new best adapter
    /// (`best_adapters/`).
    public let savedCheckpoint: Bool
    public let savedBest: Bool

    public struct Report: Sendable {
        /// Mean training loss, target tokens and all tokens per second since the previous report.
        public let loss: Double
        public let tokensPerSecond: Double
        public let processedTokensPerSecond: Double
        /// Set when the validation set was evaluated at this step.
        public let validationLoss: Double?
    }
}

/// What a finished run did.
public struct TrainingSummary: Sendable {
    public let steps: Int
    public let trainedTokens: Int
    public let seconds: Double
    public let history: TrainingHistory
    /// Target tokens and all tokens (padding excluded) per second, in this session.
    public let tokensPerSecond: Double
    public let processedTokensPerSecond: Double
    /// Whether the run stopped before its last step because `shouldStop` asked it to (after saving).
    public let stopped: Bool
    /// Whether it stopped by giving up the step in flight (the model's `abandonsStep`): the folder
    /// then holds the step before it, `steps`.
    public let abandoned: Bool
}

/// A LoRA fine-tuning run: batches from a seeded stream, `Trainer` steps, periodic reports and
/// validation, and checkpoints from which `resume` continues bit for bit. Writes the adapter (PEFT
/// files), `checkpoint.safetensors` and `loss.svg` of a step together into its folder (`StepCommit`),
/// holding the folder's lock, and stops at a step whose loss or gradients are not finite.
public final class TrainingLoop: @unchecked Sendable {
    public let model: LlamaModel
    public let adapter: Adapter
    public let settings: TrainingSettings
    public let validationSet: DataSet?
    public private(set) var history = TrainingHistory()
    public private(set) var trainedTokens = 0
    private var stream: BatchStream
    private let trainer: Trainer
    private let dataFingerprint: UInt64
    private var secondsBefore = 0.0  // training time of earlier sessions
    /// The step of the checkpoint in the folder, when there is one.
    private var savedStep: Int?
    /// The lock on the folder: one given by the caller is kept; one this loop takes is released
    /// when `run` returns.
    public var folderLock: AdapterFolderLock?
    private var ownsLock = false
    /// Files saved with every step beside the adapter and checkpoint (name → contents), e.g. the
    /// command line's settings, so that they always describe the step the folder holds.
    public var companionFiles: [String: Data] = [:]
    /// Asked after every step but the last: whether to save and return early (e.g. on Ctrl-C).
    public var shouldStop: () -> Bool = { false }

    public var step: Int { trainer.step }

    public init(model: LlamaModel, adapter: Adapter, trainingSet: DataSet, validationSet: DataSet? = nil,
                settings: TrainingSettings, padId: Int32) throws {
        try settings.validate()
        guard !trainingSet.examples.isEmpty else { throw LoRAError("the training set has no examples") }
        self.model = model
        self.adapter = adapter
        self.settings = settings
        self.validationSet = validationSet
        stream = BatchStream(set: trainingSet, batchSize: settings.batchSize, padId: padId, seed: settings.seed &+ 1)
        let optimizer = try settings.method.makeOptimizer(adapter: adapter, settings: settings)
        trainer = Trainer(model: model, optimizer: optimizer, schedule: settings.schedule, warmupSteps: settings.warmup,
                          totalSteps: settings.iterations, maxGradNorm: settings.maxGradNorm)
        trainer.hooks = try Self.hooks(adapter: adapter, settings: settings)
        dataFingerprint = TrainingCheckpoint.fingerprint(trainingSet)
    }

    /// The adapter method's own work in each step: AdaLoRA's regularisation and rank allocation.
    static func hooks(adapter: Adapter, settings: TrainingSettings) throws -> [any TrainingHook] {
        guard let config = adapter.config as? AdaLoRAConfig else { return [] }
        if let total = config.totalStep, total != settings.iterations {
            throw LoRAError("the AdaLoRA config's total_step is \(total) but the run has \(settings.iterations) steps")
        }
        return [try AdaLoRAAllocator(adapter: adapter, config: config, totalStep: settings.iterations)]
    }

    /// Optimizer steps for `epochs` passes over `examples` examples.
    public static func iterations(epochs: Int, examples: Int, batchSize: Int, gradAccumulationSteps: Int) -> Int {
        let batches = (examples + batchSize - 1) / batchSize
        return (epochs * batches + gradAccumulationSteps - 1) / gradAccumulationSteps
    }

    /// Restores the checkpoint in `folder`: adapter weights, optimizer moments, step, data position,
    /// dropout generators and history. The run's settings must match the checkpoint's (its length may differ).
    /// `readOnly` (a data-parallel rank other than 0, after rank 0 has resumed) neither locks nor repairs the folder.
    public func resume(from folder: String, readOnly: Bool = false) throws {
        if readOnly { return try restore(from: folder, recovering: false) }
        try lock(folder)
        do { try restore(from: folder, recovering: true) } catch {
            if ownsLock { unlock() }
            throw error
        }
    }

    /// The ranks this run is spread over (see `Trainer.group`). A method's hooks (AdaLoRA's allocator)
    /// run after the gradients are summed, on every rank alike: their state needs no messages of its own.
    public var group: (any DataParallelGroup)? {
        get { trainer.group }
        set { trainer.group = newValue }
    }

    private func restore(from folder: String, recovering: Bool) throws {
        if recovering { try StepCommit.recover(folder, holding: folderLock) }
        let adapterConfig = try adapterConfigJSON()
        let state = try TrainingCheckpoint.load(from: folder, weights: adapter.weights, into: trainer.optimizer, hooks: trainer.hooks) { state in
            if let mismatch = state.settings.resumeMismatch(settings) {
                throw LoRAError("the checkpoint in \(folder) was made with other settings (\(mismatch)); resume with the same ones")
            }
            guard state.adapterConfig == adapterConfig else {
                throw LoRAError("the checkpoint in \(folder) was made with other adapter settings (\(Self.difference(saved: state.adapterConfig, requested: adapterConfig))); resume with the same ones")
            }
        }
        guard state.dataFingerprint == dataFingerprint else {
            throw LoRAError("the training data differs from the data the checkpoint in \(folder) was trained on")
        }
        guard state.generators.map(\.count) == adapter.generators.map(\.count) else {
            throw LoRAError("the checkpoint in \(folder) does not fit this adapter")
        }
        try state.check(path: folder + "/" + TrainingCheckpoint.fileName, stream: stream, settings: settings)
        guard state.step < settings.iterations else {
            throw LoRAError("the checkpoint in \(folder) is at step \(state.step), the end of a \(settings.iterations)-step run")
        }
        guard state.hookStates.count == trainer.hooks.count else {
            throw LoRAError("the checkpoint in \(folder) was made by another training method")
        }
        for (hook, json) in zip(trainer.hooks, state.hookStates) { try hook.restore(checkpointState: json.map { Data($0.utf8) }) }
        adapter.generators = state.generators
        stream = BatchStream(set: stream.set, batchSize: stream.batchSize, padId: stream.padId, position: state.data)
        trainer.restore(step: state.step)
        history = state.history
        trainedTokens = state.trainedTokens
        secondsBefore = state.seconds
        savedStep = state.step
    }

    /// Takes the lock on `folder` unless this loop already holds it.
    private func lock(_ folder: String) throws {
        if let held = folderLock, held.folder == folder { return }
        unlock()
        folderLock = try AdapterFolderLock(folder: folder)
        ownsLock = true
    }

    private func unlock() {
        folderLock?.release()
        folderLock = nil
        ownsLock = false
    }

    /// Evaluates the validation set (nil without one) and records the loss at the current step.
    @discardableResult
    public func validate() throws -> Double? {
        guard let validationSet else { return nil }
        if let last = history.validation.last, last.step == trainer.step { return last.loss }
        let loss = try model.evaluate(validationSet, batchSize: settings.batchSize, padId: stream.padId,
                                      maxBatches: settings.validationBatches, group: group).loss
        history.validation.append(.init(step: trainer.step, loss: loss))
        return loss
    }

    /// Trains until `settings.iterations` steps, calling `onStep` after each. With a folder, writes a
    /// checkpoint every `saveEvery` steps, at a new best validation loss with `saveBest`, and at the
    /// end: the checkpoint, the adapter and `loss.svg`. `shouldStop` is asked after every step; when
    /// it says yes the run saves that step (with a folder) and returns early, `stopped` set. When the
    /// model's `abandonsStep` gives up a step, the run saves the step before it instead (data position
    /// and dropout generators rewound) and returns, `abandoned` set too.
    public func run(folder: String?, onStep: (TrainingProgress) throws -> Void = { _ in }) throws -> TrainingSummary {
        if let folder { try lock(folder) }
        defer { if ownsLock { unlock() } }
        if let folder {
            try StepCommit.recover(folder, holding: folderLock)
            Self.removeStaleTemporaries(in: folder)
        }
        if trainer.step == 0 { try validate() }  // the loss before training, for the curve and the summary
        let sessionStart = DispatchTime.now().uptimeNanoseconds, firstStep = trainer.step
        var windowLoss = 0.0, windowSteps = 0, windowTokens = 0, windowProcessed = 0, windowStart = sessionStart
        var sessionTokens = 0, sessionProcessed = 0, stopped = false
        func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

        var abandoned = false
        while trainer.step < settings.iterations {
            let streamBefore = stream, generators = adapter.generators
            let batches = (0..<settings.gradAccumulationSteps).map { _ in stream.next() }
            let result: Trainer.StepResult
            do { result = try trainer.step(batches) } catch is LlamaModel.StepAbandoned {
                // Back to where the last finished step left the data and the dropout generators, so
                // that its checkpoint resumes bit for bit.
                stream = streamBefore
                adapter.generators = generators
                if let folder, savedStep != trainer.step {
                    try saveCheckpoint(to: folder, seconds: secondsBefore + seconds(since: sessionStart), best: false)
                }
                stopped = true; abandoned = true
                break
            } catch let e as NonFiniteTrainingError {
                let kept = folder.map { f in savedStep.map { "\(f) keeps the adapter and checkpoint of step \($0)" } ?? "nothing was saved to \(f)" }
                throw LoRAError("training stopped at step \(e.step): \(e.problem); \(kept ?? "nothing was saved") (\(NonFiniteTrainingError.usualCauses))")
            }
            let step = trainer.step, last = step == settings.iterations
            trainedTokens += result.tokens; sessionTokens += result.tokens; sessionProcessed += result.processedTokens
            windowLoss += result.loss; windowSteps += 1; windowTokens += result.tokens; windowProcessed += result.processedTokens
            history.train.append(.init(step: step, loss: result.loss))

            var report: TrainingProgress.Report? = nil
            let evaluate = validationSet != nil && (last || (settings.stepsPerEval > 0 && step % settings.stepsPerEval == 0))
            if step % settings.stepsPerReport == 0 || last || evaluate {
                let validationLoss = evaluate ? try validate() : nil
                let windowSeconds = seconds(since: windowStart)
                report = .init(loss: windowLoss / Double(windowSteps), tokensPerSecond: Double(windowTokens) / windowSeconds,
                               processedTokensPerSecond: Double(windowProcessed) / windowSeconds, validationLoss: validationLoss)
                windowLoss = 0; windowSteps = 0; windowTokens = 0; windowProcessed = 0; windowStart = DispatchTime.now().uptimeNanoseconds
            }
            let sessionSeconds = seconds(since: sessionStart)
            stopped = !last && shouldStop()
            let best = settings.saveBest && report?.validationLoss != nil && history.bestValidation?.step == step
            let save = folder != nil && (last || stopped || best || (settings.saveEvery > 0 && step % settings.saveEvery == 0))
            if let folder, save { try saveCheckpoint(to: folder, seconds: secondsBefore + sessionSeconds, best: best) }
            let perStep = sessionSeconds / Double(step - firstStep)
            try onStep(TrainingProgress(step: step, totalSteps: settings.iterations, loss: result.loss, learningRate: result.learningRate,
                                        gradNorm: result.gradNorm, trainedTokens: trainedTokens, seconds: secondsBefore + sessionSeconds,
                                        tokensPerSecond: Double(sessionTokens) / sessionSeconds,
                                        processedTokensPerSecond: Double(sessionProcessed) / sessionSeconds,
                                        secondsLeft: perStep * Double(settings.iterations - step), report: report,
                                        savedCheckpoint: save, savedBest: save && best))
            if stopped { break }
        }
        let sessionSeconds = seconds(since: sessionStart)
        return TrainingSummary(steps: trainer.step, trainedTokens: trainedTokens, seconds: secondsBefore + sessionSeconds,
                               history: history, tokensPerSecond: Double(sessionTokens) / sessionSeconds,
                               processedTokensPerSecond: Double(sessionProcessed) / sessionSeconds, stopped: stopped,
                               abandoned: abandoned)
    }

    /// The folder of the adapter kept for `step` with `keepCheckpoints` (mlx-lm's `0000100_adapters.safetensors`, as a PEFT folder).
    public static func stepAdapterFolder(step: Int) -> String { String(format: "%07d_adapters", step) }
    /// The folder of the best validation loss's adapter with `saveBest`.
    public static let bestAdapterFolder = "best_adapters"

    private func saveCheckpoint(to folder: String, seconds: Double, best: Bool) throws {
        // The trainer refuses non-finite steps; this keeps any other path from writing such weights.
        if let bad = firstNonFinite(trainer.optimizer.parameters) {
            throw LoRAError("not saving step \(trainer.step) to \(folder): \(bad.name) is not finite at index \(bad.index)")
        }
        var state = TrainingCheckpoint.State(step: trainer.step, settings: settings, adapterConfig: try adapterConfigJSON(),
                                             dataFingerprint: dataFingerprint, data: stream.position,
                                             generators: adapter.generators, trainedTokens: trainedTokens,
                                             seconds: seconds, history: history)
        state.hookStates = try trainer.hooks.map { try $0.checkpointState().map { String(decoding: $0, as: UTF8.self) } }
        try StepCommit.save(to: folder) { staging in
            try TrainingCheckpoint.save(state, weights: adapter.weights, optimizer: trainer.optimizer, hooks: trainer.hooks, to: staging)
            try adapter.save(to: staging, trainingStep: trainer.step)
            // Copies of this step's adapter files, as hard links where the file system has them:
            // the latest's are replaced by a rename at the next save, so the links keep this step's.
            var copies = settings.keepCheckpoints > 0 ? [Self.stepAdapterFolder(step: trainer.step)] : []
            if best { copies.append(Self.bestAdapterFolder) }
            for copy in copies {
                let dir = staging + "/" + copy
                try LoRAError.writing(dir) { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false) }
                for name in ["adapter_config.json", "adapter_model.safetensors"] {
                    let from = staging + "/" + name, to = dir + "/" + name
                    if link(from, to) != 0 { try LoRAError.writing(to) { try FileManager.default.copyItem(atPath: from, toPath: to) } }
                }
            }
            for (name, contents) in companionFiles {
                try LoRAError.writing(staging + "/" + name) { try contents.write(to: URL(fileURLWithPath: staging + "/" + name)) }
            }
            let svgPath = staging + "/loss.svg"
            do { try history.svg(title: "LoRA fine-tuning loss").write(toFile: svgPath, atomically: false, encoding: .utf8) } catch {
                throw LoRAError("cannot write \(svgPath): \(String(cString: strerror(errno)))")
            }
        }
        savedStep = trainer.step
        if settings.keepCheckpoints > 0 { pruneStepAdapters(in: folder) }
    }

    /// Removes the step-numbered adapter folders beyond the newest `keepCheckpoints`.
    private func pruneStepAdapters(in folder: String) {
        let steps = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).compactMap { name -> Int? in
            guard name.hasSuffix("_adapters"), let step = Int(name.dropLast("_adapters".count)), name == Self.stepAdapterFolder(step: step) else { return nil }
            return step
        }.sorted()
        for step in steps.dropLast(settings.keepCheckpoints) {
            try? FileManager.default.removeItem(atPath: folder + "/" + Self.stepAdapterFolder(step: step))
        }
    }

    /// Files a killed run left half-written under the temporary names this loop writes to ("NAME.tmp-PID").
    static func removeStaleTemporaries(in folder: String) {
        let ours = [TrainingCheckpoint.fileName, "adapter_model.safetensors", "adapter_config.json", "loss.svg"].map { $0 + ".tmp-" }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        where ours.contains(where: { name.hasPrefix($0) && name.dropFirst($0.count).allSatisfy(\.isNumber) }) {
            try? FileManager.default.removeItem(atPath: folder + "/" + name)
        }
    }

    /// The first adapter setting two adapter_config.json texts differ in, as "rank 8 in the checkpoint, 16 requested".
    static func difference(saved: String, requested: String) -> String {
        func object(_ text: String) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
        }
        func text(_ value: Any?) -> String {
            guard let value, !(value is NSNull) else { return "none" }
            if let list = value as? [Any] { return list.map { text($0) }.joined(separator: ",") }
            return "\(value)"
        }
        let old = object(saved), new = object(requested)
        let names = ["r": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "targets",
                     "layers_to_transform": "layers", "use_rslora": "use_rslora", "use_dora": "use_dora", "peft_type": "method"]
        let keys = ["peft_type", "r", "lora_alpha", "target_modules", "layers_to_transform", "lora_dropout"]
            + Set(old.keys).union(new.keys).subtracting(["peft_type", "r", "lora_alpha", "target_modules", "layers_to_transform", "lora_dropout"]).sorted()
        for key in keys where text(old[key]) != text(new[key]) {
            return "\(names[key] ?? key) \(text(old[key])) in the checkpoint, \(text(new[key])) requested"
        }
        return "the adapter config differs"
    }

    private func adapterConfigJSON() throws -> String {
        var config = adapter.config
        config.baseModelNameOrPath = nil
        return String(decoding: try config.json(), as: UTF8.self)
    }
}
