import XCTest
@testable import LoRAKit

/// TrainingLoopTests' run (its settings, model and adapter), saving every `saveEvery` steps.
private func settings(iterations: Int, saveEvery: Int = 3) -> TrainingSettings {
    var s = TrainingSettings()
    s.iterations = iterations; s.batchSize = 3; s.gradAccumulationSteps = 2; s.learningRate = 1e-2
    s.schedule = .cosine; s.warmup = 2; s.seed = 9; s.saveEvery = saveEvery; s.stepsPerReport = 2
    return s
}

private func makeLoop(iterations: Int, saveEvery: Int = 3) throws -> TrainingLoop {
    let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
    let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 4, loraAlpha: 8, loraDropout: 0.2, targetModules: .allLinear),
                                         seed: 9)
    return try TrainingLoop(model: model, adapter: adapter, trainingSet: TrainingLoopTests.examples,
                            validationSet: TrainingLoopTests.examples, settings: settings(iterations: iterations, saveEvery: saveEvery),
                            padId: 0)
}

/// A run whose numbers blow up stops at that step and keeps the last good step on disk; nothing
/// non-finite is saved, merged, or drawn into an endless loop.
final class NumericalGuardTests: XCTestCase {
    func makeLoop(_ settings: TrainingSettings) throws -> TrainingLoop {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: .allLinear), seed: 9)
        return try TrainingLoop(model: model, adapter: adapter, trainingSet: TrainingLoopTests.examples, settings: settings, padId: 0)
    }

    func testANaNLossStopsTrainingAtItsStepAndKeepsThePreviousStepOnDisk() throws {
        let loop = try makeLoop(settings(iterations: 6, saveEvery: 1)), folder = try temporaryDirectory()
        var saved: [[UInt32]] = []
        XCTAssertThrowsError(try loop.run(folder: folder) { p in
            guard p.step == 3 else { return }
            saved = loop.adapter.parameters.map { $0.value.array.map(\.bitPattern) }
            loop.adapter.sites(of: LoRA.self)[0].adapter.b.value[0] = .nan  // step 4's forward turns NaN
        }) { error in
            XCTAssertEqual("\(error)", "training stopped at step 4: the loss is NaN; \(folder) keeps the adapter and checkpoint of step 3 "
                           + "(usual causes: a learning rate too high, --max-grad-norm 0 (no gradient clipping), or values in the data "
                           + "or model that overflow Float32)")
        }
        XCTAssertEqual(loop.step, 3)
        let steps = try StepCommit.steps(in: folder)
        XCTAssertEqual(steps.adapter, 3)
        XCTAssertEqual(steps.checkpoint, 3)
        let reloaded = try Adapter.load(from: folder, into: LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1))
        XCTAssertEqual(reloaded.parameters.map { $0.value.array.map(\.bitPattern) }, saved)
    }

    /// Without clipping, learning rates of 1e30 and 3e38 blow the weights up within a few steps;
    /// whatever step that happens at, what is on disk is the step before it, finite.
    func testAbsurdLearningRatesWithoutClippingNeverLeaveANonFiniteAdapter() throws {
        for rate: Float in [1e30, 3e38] {
            var s = settings(iterations: 20, saveEvery: 1)
            s.learningRate = rate; s.maxGradNorm = nil; s.warmup = 0; s.schedule = .constant
            let loop = try makeLoop(s), folder = try temporaryDirectory()
            XCTAssertThrowsError(try loop.run(folder: folder)) { error in
                XCTAssertTrue("\(error)".hasPrefix("training stopped at step \(loop.step + 1): "), "\(error)")
            }
            let steps = try StepCommit.steps(in: folder)
            XCTAssertEqual(steps.adapter, steps.checkpoint)
            if loop.step > 0 {
                XCTAssertEqual(steps.adapter, loop.step)
                XCTAssertNoThrow(try AdapterValues.requireFinite(folder: folder))
            } else {
                XCTAssertNil(steps.adapter)
            }
        }
    }

    func testNonFiniteAdapterValuesAreAnErrorNamingTheTensorAndMergeRefusesThem() throws {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 2, targetModules: .allLinear), seed: 3)
        let site = adapter.sites(of: LoRA.self)[1]
        site.adapter.b.value[0] = 1
        site.adapter.a.value[5] = .infinity
        let folder = try temporaryDirectory()
        try adapter.save(to: folder)
        XCTAssertThrowsError(try AdapterValues.requireFinite(folder: folder)) {
            XCTAssertEqual("\($0)", "\(folder)/adapter_model.safetensors: tensor \(site.adapter.a.name) holds a non-finite value (inf) at index 5; the adapter is broken")
        }
        let before = model.sites.map { $0.linear.weight.array.map(\.bitPattern) }
        XCTAssertThrowsError(try adapter.merge()) {
            XCTAssertTrue("\($0)".hasPrefix("merging the adapter into \(site.site.path) would give a non-finite weight"), "\($0)")
        }
        // Refused before any change: no layer is merged, every weight is as it was.
        XCTAssertFalse(model.sites.contains { $0.linear.isMerged })
        XCTAssertEqual(model.sites.map { $0.linear.weight.array.map(\.bitPattern) }, before)
    }

    /// Regression: a history holding ±1e308 (a diverged run) made the axis rounding loop forever.
    func testLossCurveOfExtremeLossesIsDrawnQuickly() {
        var h = TrainingHistory()
        h.train = [1e308, -1e308, 5e-324, .nan, .infinity, -.infinity].enumerated().map { .init(step: $0.offset + 1, loss: $0.element) }
        h.validation = [.init(step: 1, loss: .greatestFiniteMagnitude), .init(step: 6, loss: -.greatestFiniteMagnitude)]
        let start = Date()
        let svg = h.svg()
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
        XCTAssertFalse(svg.contains("nan") || svg.contains("inf"), svg)
        XCTAssertEqual(LossChart.roundTicks(-1.1e308, 1.1e308).map { String(format: "%g", $0) },
                       ["-1e+308", "-5e+307", "0", "5e+307", "1e+308"])
        // Every loss equal and huge (the case that looped: ±0.5 cannot move 1e300, so the tick spacing
        // was 0): widened by a millionth instead.
        var flat = TrainingHistory()
        flat.train = [.init(step: 1, loss: 1e300), .init(step: 2, loss: 1e300)]
        XCTAssertTrue(flat.svg().contains("points=\"60.0,205.0 700.0,205.0\""), flat.svg())
        flat.train = [.init(step: 7, loss: 1e308)]
        XCTAssertTrue(flat.svg().contains("points=\"60.0,205.0\""), flat.svg())
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
        // Ticks that adding 1 cannot move, an empty range, and a subnormal one: few or none, never a hang.
        XCTAssertLessThanOrEqual(LossChart.roundTicks(1e300, 1e300 * (1 + 1e-15)).count, 8)
        XCTAssertEqual(LossChart.roundTicks(5, 5), [])
        XCTAssertEqual(LossChart.roundTicks(0, 5e-324), [])
        XCTAssertEqual(LossChart.roundTicks(-.infinity, 1), [])
    }
}

/// The commit protocol of a step's files (StepCommit): every state a kill can leave, built by
/// hand from the files of two real steps, recovers to a checkpoint and adapter of one step.
final class StepCommitTests: XCTestCase {
    let files = ["checkpoint.safetensors", "adapter_model.safetensors", "adapter_config.json", "loss.svg"]
    let fm = FileManager.default

    /// The saved files after step 1 and after step 2 of a run, in two folders.
    func twoSteps() throws -> (String, String) {
        let loop = try makeLoop(iterations: 2, saveEvery: 1)
        let run = try temporaryDirectory("run"), step1 = try temporaryDirectory("step1")
        _ = try loop.run(folder: run) { p in
            if p.step == 1 { for f in self.files { try self.fm.copyItem(atPath: run + "/" + f, toPath: step1 + "/" + f) } }
        }
        return (step1, run)
    }

    func copy(_ names: [String], from source: String, to folder: String) throws {
        try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
        for f in names { try fm.copyItem(atPath: source + "/" + f, toPath: folder + "/" + f) }
    }

    func contents(_ folder: String) throws -> [String] { try fm.contentsOfDirectory(atPath: folder).filter { $0 != ".lock" }.sorted() }

    func testEveryInterruptedStateRecoversToOneStep() throws {
        let (step1, step2) = try twoSteps()
        XCTAssertEqual(try StepCommit.steps(in: step1).adapter, 1)
        XCTAssertEqual(try StepCommit.steps(in: step2).adapter, 2)
        let pending = StepCommit.pending, committed = StepCommit.committed
        // (name, files of step 1 in the folder, files of step 2 in the folder, in .save-pending, in .save-committed (nil: no
        // such folder)) → the step after recovery
        let cases: [(String, [String], [String], [String], [String]?, Int?)] = [
            ("first save killed while writing", [], [], ["checkpoint.safetensors"], nil, nil),
            ("first save killed before its commit", [], [], files, nil, nil),
            ("first save committed, nothing moved", [], [], [], files, 2),
            ("first save committed, half moved", [], Array(files[0..<2]), [], Array(files[2...]), 2),
            ("later save killed while writing", files, [], Array(files[0..<3]), nil, 1),
            ("later save committed, nothing moved", files, [], [], files, 2),
            ("later save committed, checkpoint moved", Array(files[1...]), [files[0]], [], Array(files[1...]), 2),
            ("later save committed, all moved", [], files, [], [], 2),
            ("no save under way", files, [], [], nil, 1),
            ("committed, and a newer one pending", files, [], Array(files[0..<1]), files, 2),
        ]
        for (name, old, new, inPending, inCommitted, expected) in cases {
            let folder = try temporaryDirectory()
            try copy(old, from: step1, to: folder)
            try copy(new, from: step2, to: folder)
            if !inPending.isEmpty { try copy(inPending, from: step2, to: folder + "/" + pending) }
            if let inCommitted { try copy(inCommitted, from: step2, to: folder + "/" + committed) }
            let steps = try StepCommit.steps(in: folder)
            XCTAssertEqual(steps.adapter, expected, name)
            XCTAssertEqual(steps.checkpoint, expected, name)
            XCTAssertEqual(try contents(folder), expected == nil ? [] : files.sorted(), name)
            if let expected {
                // The checkpoint resumes, and the adapter loads.
                let loop = try makeLoop(iterations: 5)
                try loop.resume(from: folder)
                XCTAssertEqual(loop.step, expected, name)
                XCTAssertNoThrow(try Adapter.load(from: folder, into: LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)), name)
            }
        }
    }

    func testLoadingAnAdapterFinishesACommittedSave() throws {
        let (_, step2) = try twoSteps()
        let folder = try temporaryDirectory()
        try copy(files, from: step2, to: folder + "/" + StepCommit.committed)
        let adapter = try Adapter.load(from: folder, into: LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1))
        XCTAssertEqual(adapter.modules.count, 14)
        XCTAssertEqual(try contents(folder), files.sorted())
    }

    /// While another run holds the folder's lock, a reader leaves its save alone.
    func testRecoveryLeavesALockedFolderAlone() throws {
        let (_, step2) = try twoSteps()
        let folder = try temporaryDirectory()
        try copy(files, from: step2, to: folder + "/" + StepCommit.pending)
        let lock = try AdapterFolderLock(folder: folder)
        try StepCommit.recover(folder)
        XCTAssertEqual(try contents(folder), [StepCommit.pending])
        lock.release()
        try StepCommit.recover(folder)
        XCTAssertEqual(try contents(folder), [])
    }
}

final class AdapterFolderLockTests: XCTestCase {
    func testASecondHolderIsRefusedWithThePidUntilTheFirstReleases() throws {
        let folder = try temporaryDirectory()
        let first = try AdapterFolderLock(folder: folder)
        XCTAssertThrowsError(try AdapterFolderLock(folder: folder)) {
            XCTAssertEqual("\($0)", "\(folder) is in use by another lora train (pid \(getpid()))")
        }
        // A training loop on the folder is refused too, before it trains.
        let loop = try makeLoop(iterations: 2)
        XCTAssertThrowsError(try loop.run(folder: folder)) { XCTAssertTrue("\($0)".hasSuffix("is in use by another lora train (pid \(getpid()))")) }
        XCTAssertEqual(loop.step, 0)
        first.release()
        XCTAssertNoThrow(try AdapterFolderLock(folder: folder))
        // A loop releases the lock it took when its run ends, and keeps one it was given.
        _ = try loop.run(folder: folder)
        XCTAssertNoThrow(try AdapterFolderLock(folder: folder).release())
        let given = try AdapterFolderLock(folder: folder)
        let second = try makeLoop(iterations: 1)
        second.folderLock = given
        _ = try second.run(folder: folder)
        XCTAssertThrowsError(try AdapterFolderLock(folder: folder))
    }
}

final class MemoryEstimateTests: XCTestCase {
    /// The estimate's arena is the layout `Activations` allocates, with and without checkpointing.
    func testArenaEstimateIsWhatTheArenaAllocates() throws {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        _ = try Adapter.attach(to: model, config: LoRAConfig(r: 4, loraDropout: 0.1, targetModules: .allLinear))
        // bf16 (gate and up kept in bfloat16) last: it rounds the model's weights for good.
        for precision in Precision.allCases where precision.isAvailable {
            model.precision = precision
            for checkpointing in [false, true] {
                model.gradientCheckpointing = checkpointing
                for training in [false, true] {
                    let arena = Activations(model: model, batch: 3, seqLen: 17, training: training)
                    XCTAssertEqual(MemoryEstimate.arenaFloats(model: model, batch: 3, seqLen: 17, training: training),
                                   Double(arena.floatCount), "\(precision), checkpointing \(checkpointing), training \(training)")
                }
            }
        }
    }

    /// Against peaks measured with the release build on this project's CI machine (2 cores), SmolLM2-135M's
    /// shapes in Float32, LoRA r=8 on all linear layers:
    ///   .build/release/lora bench --steps 2 --warmup 0 [--seq-len 512] [--grad-checkpoint]
    /// → peak resident memory 1314 MB at 4 × 256, 2026 MB at 4 × 512, 836 MB at 4 × 512 with --grad-checkpoint.
    func testEstimateIsWithinAQuarterOfMeasuredPeaks() throws {
        let model = LlamaModel.random(config: .smolLM2_135M, seed: 1)
        _ = try Adapter.attach(to: model, config: LoRAConfig(r: 8, loraAlpha: 16, targetModules: .allLinear), seed: 2)
        for (seqLen, checkpointing, measuredMB) in [(256, false, 1314.0), (512, false, 2026), (512, true, 836)] {
            model.gradientCheckpointing = checkpointing
            let estimate = MemoryEstimate(model: model, batchSize: 4, seqLen: seqLen).totalBytes / 1_048_576
            XCTAssertEqual(estimate, measuredMB, accuracy: 0.25 * measuredMB, "4 × \(seqLen), checkpointing \(checkpointing)")
        }
    }

    func testARunOverTheLimitIsRefusedNamingTheFlags() throws {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        _ = try Adapter.attach(to: model, config: LoRAConfig(r: 4, targetModules: .allLinear))
        let estimate = MemoryEstimate(model: model, batchSize: 2, seqLen: 8)
        XCTAssertNoThrow(try estimate.check(available: 1e12, batchSize: 2, seqLen: 8, gradientCheckpointing: false))
        XCTAssertThrowsError(try estimate.check(available: 10 * 1_048_576, batchSize: 2, seqLen: 8, gradientCheckpointing: false)) {
            XCTAssertEqual("\($0)", "this run needs about \(estimate.summary) at its peak, but 10 MB are available; "
                           + "lower --batch-size (2) or --max-seq-length (longest sequence: 8 tokens), or add --grad-checkpoint")
        }
        XCTAssertEqual(MemoryEstimate.megabytes(1314 * 1_048_576), "1,314 MB")
        XCTAssertEqual(MemoryEstimate.megabytes(1e300), "9.54e+293 MB")
    }
}
