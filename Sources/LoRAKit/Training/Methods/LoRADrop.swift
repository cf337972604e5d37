import Foundation

/// LoRA-Drop (Zhou et al., COLING 2025, arXiv 2402.07721): a short probe run trains LoRA on every
/// targeted layer over a sample of the data; each layer's importance is the mean over the sample's
/// tokens of ‖s·B·A·x‖², the energy its update adds to the layer's output; the most important layers
/// keep their own pair until their share of the total reaches the threshold, and the others share one
/// pair per shape. The full run then trains that adapter, which saves as a plain PEFT LoRA (a shared
/// pair under each sharing layer's keys).
public enum LoRADrop {
    public struct Settings: Sendable, Equatable {
        /// Optimizer steps of the probe run.
        public var probeSteps = 20
        /// The share of the training examples the probe trains and measures on.
        public var sampleRatio = 0.2
        /// Layers are kept, most important first, until their importances add up to this share.
        public var threshold = 0.9
        public init() {}

        public func validate() throws {
            guard (1...TrainingSettings.maximumSteps).contains(probeSteps) else {
                throw LoRAError("--drop-probe-steps must be between 1 and \(TrainingSettings.maximumSteps) (got \(probeSteps))")
            }
            guard sampleRatio > 0 && sampleRatio <= 1 else { throw LoRAError("--drop-sample-ratio must be above 0 and at most 1 (got \(sampleRatio))") }
            guard threshold > 0 && threshold <= 1 else { throw LoRAError("--drop-threshold must be above 0 and at most 1 (got \(threshold))") }
        }
    }

    /// What the probe decided, as written to `lora_drop.json` beside the adapter.
    public struct Selection: Codable, Sendable, Equatable {
        public struct Site: Codable, Sendable, Equatable {
            public var site: String
            /// The layer's share of the summed importance (all shares add up to 1).
            public var importance: Double
            public var kept: Bool
            /// For a layer that is not kept: the layer whose pair it reads (the first of its shape).
            public var sharesWith: String?

            enum CodingKeys: String, CodingKey { case site, importance, kept, sharesWith = "shares_with" }
        }
        public var threshold: Double
        public var probeSteps: Int
        public var sampleExamples: Int
        /// In model order.
        public var sites: [Site]

        enum CodingKeys: String, CodingKey { case threshold, probeSteps = "probe_steps", sampleExamples = "sample_examples", sites }

        /// The groups of sites that read one pair, owner first: what `Adapter.attach(sharing:)` takes.
        public var sharedGroups: [[String]] {
            var groups: [String: [String]] = [:], order: [String] = []
            for s in sites where !s.kept {
                let owner = s.sharesWith ?? s.site
                if groups[owner] == nil { order.append(owner); groups[owner] = [owner] }
                if owner != s.site { groups[owner]!.append(s.site) }
            }
            return order.map { groups[$0]! }
        }

        public static let fileName = "lora_drop.json"

        public func write(to folder: String) throws {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let path = folder + "/" + Self.fileName
            try LoRAError.writing(path) { try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic) }
        }

        public static func read(folder: String) throws -> Selection {
            let path = folder + "/" + fileName
            guard let data = FileManager.default.contents(atPath: path) else { throw LoRAError("cannot read \(path)") }
            guard let selection = try? JSONDecoder().decode(Selection.self, from: data) else {
                throw LoRAError("\(path) is not a LoRA-Drop selection")
            }
            return selection
        }
    }

    /// Picks the sites to keep from each site's importance (in model order): sorted by importance,
    /// kept until the kept shares reach `threshold` (the site that crosses it is kept); the others
    /// share one pair with the first other site of their shape.
    public static func select(importances: [(site: LinearSite, importance: Double)], threshold: Double, probeSteps: Int,
                              sampleExamples: Int) -> Selection {
        let total = importances.reduce(0) { $0 + $1.importance }
        let shares = importances.map { total > 0 ? $0.importance / total : 1 / Double(importances.count) }
        var kept = Set<Int>(), cumulative = 0.0
        for i in shares.indices.sorted(by: { shares[$0] != shares[$1] ? shares[$0] > shares[$1] : $0 < $1 }) {
            if cumulative >= threshold { break }
            kept.insert(i)
            cumulative += shares[i]
        }
        var owners: [[Int]: String] = [:]
        let sites = importances.enumerated().map { i, entry -> Selection.Site in
            let shape = [entry.site.linear.inFeatures, entry.site.linear.outFeatures]
            guard !kept.contains(i) else { return .init(site: entry.site.path, importance: shares[i], kept: true, sharesWith: nil) }
            if let owner = owners[shape] { return .init(site: entry.site.path, importance: shares[i], kept: false, sharesWith: owner) }
            owners[shape] = entry.site.path
            return .init(site: entry.site.path, importance: shares[i], kept: false, sharesWith: nil)
        }
        return Selection(threshold: threshold, probeSteps: probeSteps, sampleExamples: sampleExamples, sites: sites)
    }

    /// The probe: trains `config` (a LoRA on every targeted layer) for `settings.probeSteps` steps on
    /// a seeded sample of `trainingSet`, measures each layer's importance, detaches the probe, and
    /// returns the selection.
    public static func probe(model: LlamaModel, config: LoRAConfig, trainingSet: DataSet, training: TrainingSettings,
                             settings: Settings, padId: Int32) throws -> Selection {
        try settings.validate()
        let sample = Self.sample(trainingSet, ratio: settings.sampleRatio, seed: training.seed)
        let adapter = try Adapter.attach(to: model, config: config, seed: training.seed)
        defer { try? adapter.detach() }
        var probeTraining = training
        probeTraining.iterations = settings.probeSteps
        probeTraining.stepsPerEval = 0
        probeTraining.saveEvery = 0
        probeTraining.warmup = min(training.warmup, settings.probeSteps - 1)
        _ = try TrainingLoop(model: model, adapter: adapter, trainingSet: sample, settings: probeTraining, padId: padId).run(folder: nil)
        let importances = try measure(model: model, adapter: adapter, sample: sample)
        return select(importances: zip(adapter.modules, importances).map { ($0.site, $1) }, threshold: settings.threshold,
                      probeSteps: settings.probeSteps, sampleExamples: sample.examples.count)
    }

    /// ceil(ratio · n) examples, at least one, drawn without replacement with a seeded shuffle.
    static func sample(_ set: DataSet, ratio: Double, seed: UInt64) -> DataSet {
        let n = set.examples.count, count = max(1, min(n, Int((ratio * Double(n)).rounded(.up))))
        var order = Array(0..<n), random = SeededRandom(seed: seed &+ 0x10ad)
        for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, Int(random.next() % UInt64(i + 1))) }
        return DataSet(examples: order.prefix(count).sorted().map { set.examples[$0] }, format: set.format)
    }

    /// Mean over the sample's tokens of ‖s·B·A·x‖² per module, each example run alone (no padding).
    static func measure(model: LlamaModel, adapter: Adapter, sample: DataSet) throws -> [Double] {
        let probes = adapter.modules.map { m -> OutputEnergy in
            let probe = OutputEnergy(m.adapter, outFeatures: m.site.linear.outFeatures)
            m.site.linear.adapter = probe
            return probe
        }
        defer { for (m, probe) in zip(adapter.modules, probes) { m.site.linear.adapter = probe.inner } }
        for example in sample.examples where !example.tokens.isEmpty {
            let n = example.tokens.count
            _ = try model.logits(Batch(batchSize: 1, seqLen: n, tokens: example.tokens, targets: Array(repeating: Batch.ignoreIndex, count: n)))
        }
        return probes.map { $0.rows > 0 ? $0.energy / Double($0.rows) : 0 }
    }

    /// Wraps an adapter in inference: adds its output as usual and sums the squares of what it added.
    final class OutputEnergy: LinearAdapter, @unchecked Sendable {
        let inner: any LinearAdapter
        private(set) var energy = 0.0
        private(set) var rows = 0
        private let outFeatures: Int

        init(_ inner: any LinearAdapter, outFeatures: Int) {
            self.inner = inner
            self.outFeatures = outFeatures
        }

        var parameters: [Parameter] { inner.parameters }
        func savedFloatsPerRow(training: Bool) -> Int { inner.savedFloatsPerRow(training: training) }
        func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, saved: UnsafeMutablePointer<Float>, training: Bool) {
            let n = rows * outFeatures
            let delta = UnsafeMutablePointer<Float>.allocate(capacity: n)
            defer { delta.deallocate() }
            delta.initialize(repeating: 0, count: n)
            inner.forward(x: x, rows: rows, y: delta, saved: saved, training: training)
            var sum = 0.0
            for i in 0..<n { sum += Double(delta[i]) * Double(delta[i]); y[i] += delta[i] }
            energy += sum
            self.rows += rows
        }
        func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, saved: UnsafeMutablePointer<Float>,
                      dx: UnsafeMutablePointer<Float>?) {
            inner.backward(dy: dy, x: x, rows: rows, saved: saved, dx: dx)
        }
        func mergedWeight(_ weight: Tensor) -> Tensor { inner.mergedWeight(weight) }
        func unmergedWeight(_ merged: Tensor) -> Tensor { inner.unmergedWeight(merged) }
    }
}
