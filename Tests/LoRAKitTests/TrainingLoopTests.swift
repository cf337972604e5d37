import XCTest
@testable import LoRAKit

/// The fine-tuning run: batches, checkpoints and resuming. The reference for a resumed run is the
/// same run left uninterrupted.
final class TrainingLoopTests: XCTestCase {
    static let tiny = ModelConfig(hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKVHeads: 2,
                                  vocabSize: 50, tieWordEmbeddings: true)

    /// Eleven examples of varied lengths, every token after the first a target.
    static let examples: DataSet = {
        var r = SeededRandom(seed: 42)
        return DataSet(examples: (0..<11).map { i in
            let n = 4 + i % 5
            return Example(tokens: (0..<n).map { _ in Int32(r.next() % 50) }, isTarget: (0..<n).map { $0 > 0 })
        })
    }()

    func settings(iterations: Int) -> TrainingSettings {
        var s = TrainingSettings()
        s.iterations = iterations; s.batchSize = 3; s.gradAccumulationSteps = 2; s.learningRate = 1e-2
        s.schedule = .cosine; s.warmup = 2; s.seed = 9; s.saveEvery = 3; s.stepsPerReport = 2
        return s
    }

    static let dropoutLoRA = LoRAConfig(r: 4, loraAlpha: 8, loraDropout: 0.2, targetModules: .allLinear)

    func makeLoop(iterations: Int, config: any AdapterConfiguration = dropoutLoRA, method: TrainingMethod = .lora) throws -> TrainingLoop {
        let model = LlamaModel.random(config: Self.tiny, seed: 1)
        let adapter = try Adapter.attach(to: model, config: config, seed: 9)
        var settings = settings(iterations: iterations)
        settings.method = method
        return try TrainingLoop(model: model, adapter: adapter, trainingSet: Self.examples, validationSet: Self.examples,
                                settings: settings, padId: 0)
    }

    func bits(_ loop: TrainingLoop) -> [[UInt32]] { loop.adapter.parameters.map { $0.value.array.map(\.bitPattern) } }

    func testBatchStreamResumedFromItsPositionContinuesTheSameSequence() {
        var a = BatchStream(set: Self.examples, batchSize: 3, padId: 0, seed: 4)
        XCTAssertEqual(a.batchesPerEpoch, 4)
        for _ in 0..<6 { _ = a.next() }  // into the second epoch
        var b = BatchStream(set: Self.examples, batchSize: 3, padId: 0, position: a.position)
        for _ in 0..<7 { XCTAssertEqual(a.next().tokens, b.next().tokens) }
        // Each epoch holds every example exactly once.
        var c = BatchStream(set: Self.examples, batchSize: 3, padId: 0, seed: 4)
        let epoch = (0..<4).map { _ in c.next() }
        XCTAssertEqual(epoch.map(\.batchSize), [3, 3, 3, 2])
        XCTAssertEqual(epoch.map { $0.targets.filter { $0 != Batch.ignoreIndex }.count }.reduce(0, +), Self.examples.targetCount)
    }

    func testEpochsCountOptimizerSteps() {
        // 11 examples in batches of 3 → 4 batches per epoch; 3 epochs = 12 batches = 6 steps of 2.
        XCTAssertEqual(TrainingLoop.iterations(epochs: 3, examples: 11, batchSize: 3, gradAccumulationSteps: 2), 6)
        XCTAssertEqual(TrainingLoop.iterations(epochs: 1, examples: 11, batchSize: 3, gradAccumulationSteps: 3), 2)
    }

    /// A stop request (Ctrl-C in `lora train`) saves the step it came after, off the save schedule, and
    /// resuming from there ends on the uninterrupted run's bits; the step-numbered adapters kept are the
    /// last saves', each equal to the adapter of its step.
    func testStoppingSavesTheStepAndKeepsTheLastSavesAdapters() throws {
        let whole = try makeLoop(iterations: 8)
        _ = try whole.run(folder: try temporaryDirectory("whole"))
        let folder = try temporaryDirectory("stopped")
        let first = try makeLoop(iterations: 8)
        first.shouldStop = { first.step == 5 }
        let stopped = try first.run(folder: folder)
        XCTAssertTrue(stopped.stopped)
        XCTAssertEqual(stopped.steps, 5)
        let second = try makeLoop(iterations: 8)
        try second.resume(from: folder)
        XCTAssertEqual(second.step, 5, "saved at the stop, not at the schedule's step 3")
        XCTAssertFalse(try second.run(folder: folder).stopped)
        XCTAssertEqual(bits(second), bits(whole))

        var keep = settings(iterations: 8)
        keep.keepCheckpoints = 2  // saves at 3, 6 and 8
        let model = LlamaModel.random(config: Self.tiny, seed: 1)
        let kept = try TrainingLoop(model: model, adapter: try Adapter.attach(to: model, config: Self.dropoutLoRA, seed: 9),
                                    trainingSet: Self.examples, settings: keep, padId: 0)
        let keptFolder = try temporaryDirectory("kept")
        _ = try kept.run(folder: keptFolder)
        let names = try FileManager.default.contentsOfDirectory(atPath: keptFolder).filter { $0.hasSuffix("_adapters") }.sorted()
        XCTAssertEqual(names, ["0000006_adapters", "0000008_adapters"])
        XCTAssertEqual(FileManager.default.contents(atPath: keptFolder + "/0000008_adapters/adapter_model.safetensors"),
                       FileManager.default.contents(atPath: keptFolder + "/adapter_model.safetensors"))
        let six = try Adapter.load(from: keptFolder + "/0000006_adapters", into: LlamaModel.random(config: Self.tiny, seed: 1))
        let stoppedAtSix = try makeLoop(iterations: 8)
        stoppedAtSix.shouldStop = { stoppedAtSix.step == 6 }
        _ = try stoppedAtSix.run(folder: nil)
        XCTAssertEqual(six.parameters.map { $0.value.array.map(\.bitPattern) }, bits(stoppedAtSix))
    }

    func testAbandoningAStepSavesTheOneBeforeAndResumesBitForBit() throws {
        let whole = try makeLoop(iterations: 8)
        _ = try whole.run(folder: try temporaryDirectory("whole"))
        let folder = try temporaryDirectory("abandoned")
        let first = try makeLoop(iterations: 8)
        var checks = 0  // the tiny model's 2 blocks: checks 1–2 in step 5's forward, 3–4 in its backward
        first.model.abandonsStep = {
            guard first.step == 4 else { return false }
            checks += 1
            return checks == 3
        }
        let summary = try first.run(folder: folder)
        XCTAssertTrue(summary.stopped && summary.abandoned)
        XCTAssertEqual(summary.steps, 4)
        XCTAssertEqual(checks, 3)
        let second = try makeLoop(iterations: 8)
        try second.resume(from: folder)
        XCTAssertEqual(second.step, 4, "the step before the abandoned one, saved off the schedule (every 3)")
        XCTAssertFalse(try second.run(folder: folder).stopped)
        // The data position and the dropout generators were rewound to where step 4 left them.
        XCTAssertEqual(bits(second), bits(whole))
    }

    func testResumingFromACheckpointEndsWithTheSameBitsAsAnUninterruptedRun() throws {
        let whole = try makeLoop(iterations: 8)
        let wholeSummary = try whole.run(folder: try temporaryDirectory("whole"))

        // The "interrupted" run: 4 steps with checkpoints every 3 leave the checkpoint of step 3.
        let folder = try temporaryDirectory("resumed")
        let first = try makeLoop(iterations: 8)
        var steps = 0
        struct Stop: Error {}
        XCTAssertThrowsError(try first.run(folder: folder) { p in steps = p.step; if p.step == 4 { throw Stop() } })
        XCTAssertEqual(steps, 4)

        let second = try makeLoop(iterations: 8)
        try second.resume(from: folder)
        XCTAssertEqual(second.step, 3)
        let summary = try second.run(folder: folder)
        XCTAssertEqual(bits(second), bits(whole))
        XCTAssertEqual(summary.history.train.map(\.loss), wholeSummary.history.train.map(\.loss))
        XCTAssertEqual(summary.history.validation, wholeSummary.history.validation)
        XCTAssertEqual(summary.trainedTokens, wholeSummary.trainedTokens)
        XCTAssertEqual(summary.history.validation.map(\.step), [0, 8])
        XCTAssertLessThan(summary.history.validation[1].loss, summary.history.validation[0].loss)
        // The adapter written at the end is the trained one.
        let reloaded = try Adapter.load(from: folder, into: LlamaModel.random(config: Self.tiny, seed: 1))
        XCTAssertEqual(reloaded.parameters.map { $0.value.array.map(\.bitPattern) }, bits(whole))
    }

    /// Every method's state is in the checkpoint: LoRA+'s groups, LoRA-FA's optimizer (A frozen but
    /// saved), DoRA's magnitudes and VeRA's shared projections all resume to the uninterrupted bits.
    func testEveryMethodResumesBitForBit() throws {
        let cases: [(String, any AdapterConfiguration, TrainingMethod)] = [
            ("lora-plus", Self.dropoutLoRA, .loraPlus), ("lora-fa", Self.dropoutLoRA, .loraFA),
            ("dora", LoRAConfig(r: 4, loraAlpha: 8, targetModules: .allLinear, useDoRA: true), .lora),
            ("vera", VeRAConfig(r: 8, targetModules: .allLinear), .lora),
            // Stopped after the allocations of steps 2 and 3, before the final one at 5: the smoothed
            // importances and the masks must come back from the checkpoint.
            ("adalora", AdaLoRAConfig(initR: 6, targetR: 3, loraAlpha: 8, loraDropout: 0.2, targetModules: .allLinear,
                                      tinit: 1, tfinal: 1, totalStep: 6), .lora),
        ]
        for (name, config, method) in cases {
            let whole = try makeLoop(iterations: 6, config: config, method: method)
            _ = try whole.run(folder: try temporaryDirectory("whole-" + name))
            let folder = try temporaryDirectory("resumed-" + name)
            struct Stop: Error {}
            XCTAssertThrowsError(try makeLoop(iterations: 6, config: config, method: method).run(folder: folder) { p in
                if p.step == 4 { throw Stop() }
            })
            let second = try makeLoop(iterations: 6, config: config, method: method)
            try second.resume(from: folder)
            XCTAssertEqual(second.step, 3, name)
            _ = try second.run(folder: folder)
            let weights = { (loop: TrainingLoop) in loop.adapter.weights.map { $0.value.array.map(\.bitPattern) } }
            XCTAssertEqual(weights(second), weights(whole), "\(name): resumed run ends with other bits")
            XCTAssertNotEqual(weights(whole), weights(try makeLoop(iterations: 6, config: config, method: method)), "\(name) trained nothing")
        }
    }

    func testValidationRunsAtItsOwnIntervalWhateverTheReportInterval() throws {
        let model = LlamaModel.random(config: Self.tiny, seed: 1)
        let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 2, targetModules: .allLinear))
        var s = settings(iterations: 7)
        s.stepsPerEval = 3; s.stepsPerReport = 5
        var reports: [Int] = []
        let loop = try TrainingLoop(model: model, adapter: adapter, trainingSet: Self.examples, validationSet: Self.examples,
                                    settings: s, padId: 0)
        let summary = try loop.run(folder: nil) { p in if p.report != nil { reports.append(p.step) } }
        XCTAssertEqual(summary.history.validation.map(\.step), [0, 3, 6, 7])
        XCTAssertEqual(reports, [3, 5, 6, 7])
    }

    func testResumeRefusesOtherSettingsOrData() throws {
        let folder = try temporaryDirectory()
        _ = try makeLoop(iterations: 3).run(folder: folder)
        let model = LlamaModel.random(config: Self.tiny, seed: 1)
        let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 4, loraAlpha: 8, loraDropout: 0.2, targetModules: .allLinear))
        var other = settings(iterations: 6)
        other.learningRate = 2e-2
        let loop = try TrainingLoop(model: model, adapter: adapter, trainingSet: Self.examples, settings: other, padId: 0)
        XCTAssertThrowsError(try loop.resume(from: folder)) { XCTAssertTrue("\($0)".contains("learning rate 0.01 in the checkpoint, 0.02 requested"), "\($0)") }
        let fewer = DataSet(examples: Array(Self.examples.examples.dropLast()))
        let loop2 = try TrainingLoop(model: model, adapter: adapter, trainingSet: fewer, settings: settings(iterations: 6), padId: 0)
        XCTAssertThrowsError(try loop2.resume(from: folder)) { XCTAssertTrue("\($0)".contains("training data differs"), "\($0)") }
        let loop3 = try TrainingLoop(model: model, adapter: adapter, trainingSet: Self.examples, settings: settings(iterations: 3), padId: 0)
        XCTAssertThrowsError(try loop3.resume(from: folder)) { XCTAssertTrue("\($0)".contains("the end of a 3-step run"), "\($0)") }
        XCTAssertThrowsError(try loop3.resume(from: try temporaryDirectory("empty"))) {
            XCTAssertTrue("\($0)".contains("no checkpoint.safetensors"), "\($0)")
        }
    }

    func testLossCurveSVGPlacesPointsOnTheAxes() {
        var h = TrainingHistory()
        h.train = [.init(step: 1, loss: 2), .init(step: 3, loss: 1)]
        h.validation = [.init(step: 3, loss: 1.5)]
        let svg = h.svg()
        // Losses span [1, 2], padded 5% → [0.95, 2.05]; plot area x 60…700, y 40…370.
        // Step 1 at x = 60; loss 2 at y = 40 + (2.05 − 2)/1.1·330 = 55; step 3 at x = 700; loss 1 at y = 355.
        XCTAssertTrue(svg.contains("points=\"60.0,55.0 700.0,355.0\""), svg)
        // Validation 1.5 at y = 40 + 0.55/1.1·330 = 205.
        XCTAssertTrue(svg.contains("<circle cx=\"700.0\" cy=\"205.0\""), svg)
        XCTAssertEqual(h.bestValidation, .init(step: 3, loss: 1.5))
        XCTAssertEqual(LossChart.roundTicks(0.95, 2.05), [1, 1.2, 1.4, 1.6, 1.8, 2])
        XCTAssertEqual(LossChart.roundTicks(1, 150), [50, 100, 150])  // 149/4 = 37.25: 20 is under 0.7 × that, 50 is not
        XCTAssertEqual(LossChart.roundTicks(0, 2.32), [0, 0.5, 1, 1.5, 2])
        XCTAssertEqual(h.movingAverage([.init(step: 1, loss: 1), .init(step: 2, loss: 3), .init(step: 3, loss: 5)], window: 2).map(\.loss), [1, 2, 4])
    }
}

/// `lora eval`'s rule on a Hugging Face folder against transformers. Reference: for f in chat text
/// completion; do python scripts/make_cli_fixture.py --eval-reference Fixtures/tiny_chat_eval/$f.jsonl; done
final class HuggingFaceEvalTests: XCTestCase {
    func testEvalEqualsTransformersOnEveryRowFormat() throws {
        let folder = fixturesPath + "/tiny_chat", data = fixturesPath + "/tiny_chat_eval"
        let model = try LlamaModel.load(folder: folder)
        let tokenizer = try Tokenizer.load(path: folder)
        let reference = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: data + "/reference.json"))) as! [String: [String: Any]]
        for format in ["chat", "text", "completion"] {
            let set = try DataSet(path: "\(data)/\(format).jsonl", tokenizer: tokenizer)
            let (loss, tokens) = try model.evaluate(set, batchSize: 2, padId: Int32(tokenizer.padTokenId!))
            let expected = reference[format]!["loss"] as! Double
            XCTAssertEqual(tokens, reference[format]!["tokens"] as! Int, format)
            XCTAssertEqual(loss, expected, accuracy: 1e-4 * expected, format)
        }
    }

    func testPaddingNeverCountsInTheLoss() throws {
        // Rows of different lengths: one at a time (no padding) and three per padded batch give the same loss.
        let folder = fixturesPath + "/tiny_chat"
        let model = try LlamaModel.load(folder: folder), tokenizer = try Tokenizer.load(path: folder)
        let set = try DataSet(path: fixturesPath + "/tiny_chat_eval/chat.jsonl", tokenizer: tokenizer, maskPrompt: true)
        XCTAssertNotEqual(Set(set.examples.map(\.tokens.count)).count, 1)
        let single = try model.evaluate(set, batchSize: 1, padId: 0), padded = try model.evaluate(set, batchSize: 3, padId: 0)
        XCTAssertEqual(single.tokens, padded.tokens)
        XCTAssertEqual(single.loss, padded.loss, accuracy: 1e-6 * single.loss)
    }
}
