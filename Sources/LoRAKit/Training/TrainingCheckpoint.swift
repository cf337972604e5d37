import Foundation

/// Everything a run needs to continue exactly where it stopped, in one safetensors file
/// (`checkpoint.safetensors` in the adapter folder): the adapter's tensors, AdamW's moments
/// ("optimizer.m.NAME", "optimizer.v.NAME") and, as JSON in the metadata, the step, the data
/// position, every dropout generator and the loss history. Saved with the adapter of the same step
/// by `StepCommit`, so a run killed at any moment leaves a whole checkpoint and adapter of one step.
struct TrainingCheckpoint {
    static let fileName = "checkpoint.safetensors"
    static let format = "swift-lora-checkpoint-1"

    struct State: Codable {
        var step: Int
        var settings: TrainingSettings
        var adapterConfig: String
        var dataFingerprint: UInt64
        var data: BatchStream.Position
        /// Each adapter's random generators (`LinearAdapter.generators`), in site order.
        var generators: [[SeededRandom]]
        var trainedTokens: Int
        var seconds: Double
        var history: TrainingHistory
        /// Each training hook's JSON state (`TrainingHook.checkpointState`), in order; nil for none.
        var hookStates: [String?] = []

        init(step: Int, settings: TrainingSettings, adapterConfig: String, dataFingerprint: UInt64, data: BatchStream.Position,
             generators: [[SeededRandom]], trainedTokens: Int, seconds: Double, history: TrainingHistory) {
            self.step = step
            self.settings = settings
            self.adapterConfig = adapterConfig
            self.dataFingerprint = dataFingerprint
            self.data = data
            self.generators = generators
            self.trainedTokens = trainedTokens
            self.seconds = seconds
            self.history = history
        }

        private enum CodingKeys: String, CodingKey {
            case step, settings, adapterConfig, dataFingerprint, data, generators, trainedTokens, seconds, history, hookStates
        }
        /// Checkpoints written before the adapter family kept one LoRA dropout generator per site.
        private enum LegacyKeys: String, CodingKey { case dropoutRandom }

        init(from decoder: any Swift.Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            step = try c.decode(Int.self, forKey: .step)
            settings = try c.decode(TrainingSettings.self, forKey: .settings)
            adapterConfig = try c.decode(String.self, forKey: .adapterConfig)
            dataFingerprint = try c.decode(UInt64.self, forKey: .dataFingerprint)
            data = try c.decode(BatchStream.Position.self, forKey: .data)
            if let generators = try c.decodeIfPresent([[SeededRandom]].self, forKey: .generators) {
                self.generators = generators
            } else {
                generators = try decoder.container(keyedBy: LegacyKeys.self).decode([SeededRandom].self, forKey: .dropoutRandom).map { [$0] }
            }
            trainedTokens = try c.decode(Int.self, forKey: .trainedTokens)
            seconds = try c.decode(Double.self, forKey: .seconds)
            history = try c.decode(TrainingHistory.self, forKey: .history)
            hookStates = try c.decodeIfPresent([String?].self, forKey: .hookStates) ?? []
        }

        /// Checks every number against the run it is to continue (same settings and data, which the
        /// caller has compared), so a damaged or crafted checkpoint is refused instead of indexing,
        /// allocating or counting with its numbers.
        func check(path: String, stream: BatchStream, settings: TrainingSettings) throws {
            func fail(_ what: String) -> LoRAError { LoRAError("\(path) is damaged: \(what)") }
            // Saturating: a bound past Int's range is no bound.
            func product(_ a: Int, _ b: Int) -> Int {
                let (p, overflow) = a.multipliedReportingOverflow(by: b)
                return overflow ? .max : p
            }
            guard (0...TrainingSettings.maximumSteps).contains(step) else { throw fail("its step is \(step)") }
            // A step takes gradAccumulationSteps batches and an epoch at least one, so these bound the position.
            let batches = product(step, settings.gradAccumulationSteps)
            guard (0...batches).contains(data.epoch) else { throw fail("epoch \(data.epoch) after \(batches) batches") }
            guard (0...stream.batchesPerEpoch).contains(data.index) else {
                throw fail("batch \(data.index) of an epoch of \(stream.batchesPerEpoch) batches")
            }
            let longest = stream.set.examples.map(\.tokens.count).max() ?? 0
            guard (0...product(product(batches, stream.batchSize), longest)).contains(trainedTokens) else {
                throw fail("\(trainedTokens) trained tokens after \(batches) batches")
            }
            guard seconds.isFinite && seconds >= 0 else { throw fail("\(seconds) seconds of training") }
            // At most one point per step, in order, none after the checkpoint's step; losses are cross-entropies.
            func checkCurve(_ points: [TrainingHistory.Point], _ name: String, from first: Int) throws {
                var previous = first - 1
                for point in points {
                    guard point.step > previous && point.step <= step else {
                        throw fail("its \(name) loss history has a point at step \(point.step)")
                    }
                    guard point.loss.isFinite && point.loss >= 0 else {
                        throw fail("its \(name) loss history holds \(point.loss) at step \(point.step)")
                    }
                    previous = point.step
                }
            }
            try checkCurve(history.train, "training", from: 1)
            try checkCurve(history.validation, "validation", from: 0)
        }
    }

    /// Writes every adapter tensor (trained or frozen), the optimizer's moments of the trained ones and
    /// the hooks' tensors.
    static func save(_ state: State, weights: [Parameter], optimizer: any Optimizer, hooks: [any TrainingHook] = [],
                     to folder: String) throws {
        var writer = SafetensorsWriter()
        let json = try JSONEncoder().encode(state)
        writer.metadata = ["format": format, "state": String(decoding: json, as: UTF8.self)]
        for p in weights { writer.add(p.name, shape: p.value.shape, floats: UnsafeBufferPointer(p.value.buffer)) }
        for (i, p) in optimizer.parameters.enumerated() {
            writer.add("optimizer.m." + p.name, shape: p.value.shape, floats: UnsafeBufferPointer(optimizer.m[i].buffer))
            writer.add("optimizer.v." + p.name, shape: p.value.shape, floats: UnsafeBufferPointer(optimizer.v[i].buffer))
        }
        for (name, value) in hooks.flatMap(\.checkpointTensors) {
            writer.add(name, shape: value.shape, floats: UnsafeBufferPointer(value.buffer))
        }
        try writer.write(to: folder + "/" + fileName)
    }

    /// Reads the checkpoint in `folder` into the adapter's tensors, the optimizer's moments and the
    /// hooks' tensors; returns its state.
    /// `check` sees the state before any tensor is read, so that a run with other settings is told
    /// which, rather than that a tensor has another shape.
    static func load(from folder: String, weights: [Parameter], into optimizer: any Optimizer, hooks: [any TrainingHook] = [],
                     check: (State) throws -> Void = { _ in }) throws -> State {
        let path = folder + "/" + fileName
        guard FileManager.default.fileExists(atPath: path) else { throw LoRAError("\(folder) has no \(fileName) to resume from") }
        let file = try SafetensorsFile(path: path)
        let state = try state(of: file)
        try check(state)
        var tensors = weights.map { ($0.name, $0.value) }
        for (i, p) in optimizer.parameters.enumerated() {
            tensors += [("optimizer.m." + p.name, optimizer.m[i]), ("optimizer.v." + p.name, optimizer.v[i])]
        }
        tensors += hooks.flatMap(\.checkpointTensors)
        for (name, tensor) in tensors {
            guard let info = file.tensors[name], info.shape == tensor.shape else {
                throw LoRAError("\(path) does not fit this adapter (tensor \(name) is missing or has another shape)")
            }
            try file.floats(name, into: tensor.data, count: tensor.count)
        }
        return state
    }

    /// The training state in the checkpoint at `path`.
    static func state(at path: String) throws -> State { try state(of: SafetensorsFile(path: path)) }

    private static func state(of file: SafetensorsFile) throws -> State {
        guard file.metadata["format"] == format, let json = file.metadata["state"] else {
            throw LoRAError("\(file.path) is not a swift-lora training checkpoint")
        }
        do { return try JSONDecoder().decode(State.self, from: Data(json.utf8)) } catch {
            throw LoRAError("\(file.path) has an unreadable training state")
        }
    }

    /// FNV-1a over the examples' tokens and targets: tells whether a resumed run trains on the same data.
    static func fingerprint(_ set: DataSet) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: UInt64) { h = (h ^ v) &* 0x100_0000_01b3 }
        for e in set.examples {
            mix(UInt64(e.tokens.count))
            for (t, target) in zip(e.tokens, e.isTarget) { mix(UInt64(UInt32(bitPattern: t)) << 1 | (target ? 1 : 0)) }
        }
        return h
    }
}
