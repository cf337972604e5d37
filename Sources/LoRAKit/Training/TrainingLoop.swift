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
    /// Target tokens per second and the estimated time left, from this session's steps.
    public let tokensPerSecond: Double
    public let secondsLeft: Double
    /// Set every `stepsPerReport` steps, when the validation set was evaluated, and at the last step.
    public let report: Report?
    /// Whether a checkpoint was written after this step.
    public let savedCheckpoint: Bool

    public struct Report: Sendable {
        /// Mean training loss and target tokens per second since the previous report.
        public let loss: Double
        public let tokensPerSecond: Double
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
    public func resume(from folder: String) throws {
        try lock(folder)
        do { try restore(from: folder) } catch {
            if ownsLock { unlock() }
            throw error
        }
    }

    private func restore(from folder: String) throws {
        try StepCommit.recover(folder, holding: folderLock)
        let state = try TrainingCheckpoint.load(from: folder, weights: adapter.weights, into: trainer.optimizer, hooks: trainer.hooks)
        if let mismatch = state.settings.resumeMismatch(settings) {
            throw LoRAError("the checkpoint in \(folder) was made with other settings (\(mismatch)); resume with the same ones")
        }
        guard state.adapterConfig == (try adapterConfigJSON()) else {
            throw LoRAError("the checkpoint in \(folder) was made with other adapter settings (rank, alpha, dropout, targets or layers)")
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
                                      maxBatches: settings.validationBatches).loss
        history.validation.append(.init(step: trainer.step, loss: loss))
        return loss
    }

    /// Trains until `settings.iterations` steps, calling `onStep` after each. With a folder, writes a
    /// checkpoint every `saveEvery` steps and, at the end, the checkpoint, the adapter and `loss.svg`.
    public func run(folder: String?, onStep: (TrainingProgress) throws -> Void = { _ in }) throws -> TrainingSummary {
        if let folder { try lock(folder) }
        defer { if ownsLock { unlock() } }
        if let folder {
            try StepCommit.recover(folder, holding: folderLock)
            Self.removeStaleTemporaries(in: folder)
        }
        if trainer.step == 0 { try validate() }  // the loss before training, for the curve and the summary
        let sessionStart = DispatchTime.now().uptimeNanoseconds, firstStep = trainer.step
        var windowLoss = 0.0, windowSteps = 0, windowTokens = 0, windowStart = sessionStart, sessionTokens = 0
        func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

        while trainer.step < settings.iterations {
            let batches = (0..<settings.gradAccumulationSteps).map { _ in stream.next() }
            let result: Trainer.StepResult
            do { result = try trainer.step(batches) } catch let e as NonFiniteTrainingError {
                let kept = folder.map { f in savedStep.map { "\(f) keeps the adapter and checkpoint of step \($0)" } ?? "nothing was saved to \(f)" }
                throw LoRAError("training stopped at step \(e.step): \(e.problem); \(kept ?? "nothing was saved") (\(NonFiniteTrainingError.usualCauses))")
            }
            let step = trainer.step, last = step == settings.iterations
            trainedTokens += result.tokens; sessionTokens += result.tokens
            windowLoss += result.loss; windowSteps += 1; windowTokens += result.tokens
            history.train.append(.init(step: step, loss: result.loss))

            var report: TrainingProgress.Report? = nil
            let evaluate = validationSet != nil && (last || (settings.stepsPerEval > 0 && step % settings.stepsPerEval == 0))
            if step % settings.stepsPerReport == 0 || last || evaluate {
                let validationLoss = evaluate ? try validate() : nil
                report = .init(loss: windowLoss / Double(windowSteps), tokensPerSecond: Double(windowTokens) / seconds(since: windowStart),
                               validationLoss: validationLoss)
                windowLoss = 0; windowSteps = 0; windowTokens = 0; windowStart = DispatchTime.now().uptimeNanoseconds
            }
            let sessionSeconds = seconds(since: sessionStart)
            let save = folder != nil && (last || (settings.saveEvery > 0 && step % settings.saveEvery == 0))
            if let folder, save { try saveCheckpoint(to: folder, seconds: secondsBefore + sessionSeconds) }
            let perStep = sessionSeconds / Double(step - firstStep)
            try onStep(TrainingProgress(step: step, totalSteps: settings.iterations, loss: result.loss, learningRate: result.learningRate,
                                        gradNorm: result.gradNorm, trainedTokens: trainedTokens, seconds: secondsBefore + sessionSeconds,
                                        tokensPerSecond: Double(sessionTokens) / sessionSeconds,
                                        secondsLeft: perStep * Double(settings.iterations - step), report: report, savedCheckpoint: save))
        }
        return TrainingSummary(steps: trainer.step, trainedTokens: trainedTokens, seconds: secondsBefore + seconds(since: sessionStart),
                               history: history)
    }

    private func saveCheckpoint(to folder: String, seconds: Double) throws {
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
            let svgPath = staging + "/loss.svg"
            do { try history.svg(title: "LoRA fine-tuning loss").write(toFile: svgPath, atomically: false, encoding: .utf8) } catch {
                throw LoRAError("cannot write \(svgPath): \(String(cString: strerror(errno)))")
            }
        }
        savedStep = trainer.step
    }

    /// Files a killed run left half-written under the temporary names this loop writes to ("NAME.tmp-PID").
    static func removeStaleTemporaries(in folder: String) {
        let ours = [TrainingCheckpoint.fileName, "adapter_model.safetensors", "adapter_config.json", "loss.svg"].map { $0 + ".tmp-" }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        where ours.contains(where: { name.hasPrefix($0) && name.dropFirst($0.count).allSatisfy(\.isNumber) }) {
            try? FileManager.default.removeItem(atPath: folder + "/" + name)
        }
    }

    private func adapterConfigJSON() throws -> String {
        var config = adapter.config
        config.baseModelNameOrPath = nil
        return String(decoding: try config.json(), as: UTF8.self)
    }
}
