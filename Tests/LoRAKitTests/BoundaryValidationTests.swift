import Foundation
import XCTest
@testable import LoRAKit

/// Every number read from a model, adapter, checkpoint or setting is checked before use: the crafted
/// inputs of issue 9 (absurd sizes, zero or negative counts and ids, out-of-range indices) are
/// refused with one sentence naming the value, never a trap or an absurd allocation.
final class BoundaryValidationTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws { directory = try temporaryDirectory("bounds") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    /// Asserts that `expression` throws a LoRAError whose message is exactly `message`.
    private func assertRefuses(_ expression: @autoclosure () throws -> some Any, _ message: String,
                               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), file: file, line: line) { error in
            guard let error = error as? LoRAError else { return XCTFail("expected a LoRAError, got \(error)", file: file, line: line) }
            XCTAssertEqual(error.message, message, file: file, line: line)
        }
    }

    /// A copy of a fixture folder whose JSON file `name` is edited by `edit`; returns the copy's path.
    private func copy(_ fixture: String, editing name: String, _ edit: (inout [String: Any]) -> Void) throws -> String {
        let folder = directory + "/\(UUID().uuidString.prefix(8))"
        try FileManager.default.copyItem(atPath: fixturesPath + "/" + fixture, toPath: folder)
        let path = folder + "/" + name
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        edit(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        return folder
    }

    // MARK: config.json and GGUF model metadata

    func testModelConfigJSONWithZeroOrAbsurdSizesIsRefused() throws {
        func refuses(_ edit: @escaping (inout [String: Any]) -> Void, _ problem: String, line: UInt = #line) throws {
            let folder = try copy("llama_tied/model", editing: "config.json", edit)
            assertRefuses(try LlamaModel.load(folder: folder), "\(folder)/config.json: \(problem)", line: line)
        }
        try refuses({ $0["num_attention_heads"] = 0 }, "num_attention_heads is 0; it must be between 1 and 4096")
        try refuses({ $0["num_key_value_heads"] = 0 }, "num_key_value_heads is 0; it must be between 1 and 4")
        try refuses({ $0["num_key_value_heads"] = 3 }, "num_attention_heads 4 is not a multiple of num_key_value_heads 3")
        try refuses({ $0["head_dim"] = 15 }, "head_dim is 15; it must be even (rotary embeddings turn pairs of values)")
        try refuses({ $0["head_dim"] = -16 }, "head_dim is -16; it must be between 2 and 1048576")
        try refuses({ $0["hidden_size"] = 1 << 40 }, "hidden_size is 1099511627776; it must be between 1 and 1048576")
        try refuses({ $0["hidden_size"] = 1e30 }, "\"hidden_size\" must be an integer")
        try refuses({ $0["intermediate_size"] = -1 }, "intermediate_size is -1; it must be between 1 and 1048576")
        try refuses({ $0["num_hidden_layers"] = 0 }, "num_hidden_layers is 0; it must be between 1 and 4096")
        try refuses({ $0["vocab_size"] = 0 }, "vocab_size is 0; it must be between 1 and 16777216")
        try refuses({ $0["vocab_size"] = Int.max }, "vocab_size is 9223372036854775807; it must be between 1 and 16777216")
        try refuses({ $0["max_position_embeddings"] = 0 }, "max_position_embeddings is 0; it must be at least 1")
        try refuses({ $0["rms_norm_eps"] = 0 }, "rms_norm_eps is 0.0; it must be a finite number above 0")
        try refuses({ $0["rope_parameters"] = ["rope_type": "default", "rope_theta": -1] }, "rope_theta is -1.0; it must be a finite number above 0")
        try refuses({ $0["rope_parameters"] = ["rope_type": "linear", "factor": 0] }, "rope_scaling.factor is 0.0; it must be a finite number above 0")
        try refuses({ $0["rope_parameters"] = ["rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 4] },
                    "rope_scaling.high_freq_factor is 4.0; it must be above low_freq_factor 4.0")
        try refuses({ $0["num_attention_heads"] = 4096; $0["num_key_value_heads"] = 4096; $0["head_dim"] = 1024 },
                    "num_attention_heads × head_dim = 4096 × 1024 is more than 1048576")
        // The tensors in the file must have the config's shapes.
        let folder = try copy("llama_tied/model", editing: "config.json") { $0["vocab_size"] = 255 }
        assertRefuses(try LlamaModel.load(folder: folder),
                      "tensor model.embed_tokens.weight has shape [256, 64], expected [255, 64] from config.json")
    }

    func testModelConfigWithoutHeadsDoesNotDivideByZero() {
        let config = ModelConfig(hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 0, numKVHeads: 0, vocabSize: 10)
        XCTAssertEqual(config.headDim, 0)
        assertRefuses(try config.validate(source: "test"), "test: num_attention_heads is 0; it must be between 1 and 4096")
    }

    /// A GGUF holding llama metadata and a [vocab × hidden] token_embd.weight, the rest of the model absent.
    private func ggufModel(_ edit: (inout GGUFWriter) -> Void) throws -> String {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("llama.embedding_length", .uint32(8))
        w.set("llama.feed_forward_length", .uint32(16))
        w.set("llama.block_count", .uint32(1))
        w.set("llama.attention.head_count", .uint32(2))
        w.set("llama.attention.head_count_kv", .uint32(1))
        w.set("llama.context_length", .uint32(64))
        edit(&w)
        let values = [Float](repeating: 0.5, count: 5 * 8)
        try values.withUnsafeBufferPointer { try w.addTensor("token_embd.weight", rows: 5, columns: 8, values: $0, as: .F32) }
        let path = directory + "/\(UUID().uuidString.prefix(8)).gguf"
        try w.write(to: path)
        return path
    }

    func testGGUFModelMetadataWithZeroHeadsIsRefusedByItsKey() throws {
        var path = try ggufModel { $0.set("llama.attention.head_count", .uint32(0)) }
        assertRefuses(try LlamaModel.load(gguf: path), "\(path): llama.attention.head_count is 0; it must be between 1 and 4096")
        path = try ggufModel { $0.set("llama.attention.head_count_kv", .uint32(0)) }
        assertRefuses(try LlamaModel.load(gguf: path), "\(path): llama.attention.head_count_kv is 0; it must be between 1 and 2")
        path = try ggufModel { $0.set("llama.block_count", .int32(-1)) }
        assertRefuses(try LlamaModel.load(gguf: path), "\(path): llama.block_count is -1; it must be between 1 and 4096")
        path = try ggufModel { $0.set("llama.rope.freq_base", .float32(.infinity)) }
        assertRefuses(try LlamaModel.load(gguf: path), "\(path): llama.rope.freq_base is inf; it must be a finite number above 0")
        // Well-formed metadata gets past the config to the first missing tensor.
        path = try ggufModel { _ in }
        assertRefuses(try LlamaModel.load(gguf: path), "There is no tensor named blk.0.attn_norm.weight in GGUF file \(path).")
    }

    // MARK: adapter_config.json

    func testAdapterConfigWithAbsurdRankAlphaOrDropoutIsRefused() throws {
        let model = try LlamaModel.load(folder: fixturesPath + "/llama_tied/model")
        func refuses(_ edit: @escaping (inout [String: Any]) -> Void, _ problem: String, line: UInt = #line) throws {
            let folder = try copy("llama_tied/adapter", editing: "adapter_config.json", edit)
            assertRefuses(try Adapter.load(from: folder, into: model), "\(folder)/adapter_config.json: \(problem)", line: line)
            XCTAssertTrue(model.trainableParameters.isEmpty, "a refused adapter left modules attached", line: line)
        }
        try refuses({ $0["r"] = 1 << 40 }, "r must be positive and at most 8192 (got 1099511627776)")
        try refuses({ $0["r"] = Int.max }, "r must be positive and at most 8192 (got 9223372036854775807)")
        try refuses({ $0["r"] = -4 }, "r must be positive and at most 8192 (got -4)")
        try refuses({ $0["r"] = 4.5 }, "r must be an integer")
        try refuses({ $0["rank_pattern"] = ["q_proj": 1 << 40] }, "rank_pattern[\"q_proj\"] must be positive and at most 8192 (got 1099511627776)")
        try refuses({ $0["rank_pattern"] = ["q\nproj": 0] }, "rank_pattern[\"q\\nproj\"] must be positive and at most 8192 (got 0)")
        try refuses({ $0["lora_alpha"] = 1e39 }, "lora_alpha must be a finite number above 0 (got inf)")
        try refuses({ $0["lora_alpha"] = -8 }, "lora_alpha must be a finite number above 0 (got -8.0)")
        try refuses({ $0["alpha_pattern"] = ["v_proj": 0] }, "alpha_pattern[\"v_proj\"] must be a finite number above 0 (got 0.0)")
        try refuses({ $0["lora_dropout"] = 1 }, "lora_dropout must be at least 0 and below 1 (got 1.0)")
        try refuses({ $0["lora_dropout"] = -0.5 }, "lora_dropout must be at least 0 and below 1 (got -0.5)")
        try refuses({ $0["layers_to_transform"] = [0, 1e30] }, "layers_to_transform must be an integer")
        // The fixture itself still loads.
        let adapter = try Adapter.load(from: fixturesPath + "/llama_tied/adapter", into: model)
        XCTAssertEqual(adapter.sites(of: LoRA.self).first?.adapter.rank, 4)
    }

    /// A matrix that claims any size and holds nothing: the adapter's size check must refuse before allocating.
    private final class HugeMatrix: PackedMatrix, @unchecked Sendable {
        let rows: Int, columns: Int
        init(rows: Int, columns: Int) { self.rows = rows; self.columns = columns }
        var byteCount: Int { 0 }
        func unpack(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) { fatalError("never read") }
    }

    func testAdapterLargerThanTheMemoryBoundIsRefusedBeforeAllocating() throws {
        let tiny = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        let b = tiny.blocks[0]
        let wide = Linear(matrix: FrozenMatrix(packed: HugeMatrix(rows: 1 << 20, columns: 1 << 20)))
        let block = TransformerBlock(attentionNorm: b.attentionNorm, q: wide, k: b.k, v: b.v, o: b.o, mlpNorm: b.mlpNorm,
                                     gate: b.gate, up: b.up, down: b.down)
        let model = LlamaModel(config: tiny.config, embedding: tiny.embedding, blocks: [block], norm: tiny.norm, head: tiny.head)
        // 8192 × (2^20 + 2^20) = 2^34 values.
        assertRefuses(try Adapter.attach(to: model, config: LoRAConfig(r: 8192, targetModules: .names(["q_proj"]))),
                      "an adapter with these settings on model.layers.0.self_attn.q_proj and the other targeted layers would have more than 4294967296 parameters; lower the rank or the targets")
        assertRefuses(try Adapter.attach(to: tiny, config: LoRAConfig(r: 0)),
                      "the adapter config: r must be positive and at most 8192 (got 0)")
    }

    func testAdapterSummaryRefusesARankAboveTheLimitWithoutFormingItsProducts() throws {
        let folder = try copy("llama_tied/adapter", editing: "adapter_config.json") { _ in }
        var writer = SafetensorsWriter()
        // Empty tensors cost no bytes in the file, but a rank of 10^9 would make a 10^18-value Gram matrix.
        writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", shape: [1_000_000_000, 0], floats: [])
        writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", shape: [0, 1_000_000_000], floats: [])
        try writer.write(to: folder + "/adapter_model.safetensors")
        assertRefuses(try AdapterSummary.load(folder: folder),
                      "\(folder)/adapter_model.safetensors: module model.layers.0.self_attn.q_proj has rank 1000000000, more than the 8192 LoRAKit accepts")
    }

    // MARK: Training settings

    func testTrainingSettingsValidateNamesTheOption() {
        func refuses(_ edit: (inout TrainingSettings) -> Void, _ message: String, line: UInt = #line) {
            var s = TrainingSettings()
            edit(&s)
            assertRefuses(try s.validate(), message, line: line)
        }
        XCTAssertNoThrow(try TrainingSettings().validate())
        refuses({ $0.iterations = 0 }, "--iters must be between 1 and 100000000 (got 0)")
        refuses({ $0.iterations = Int.max }, "--iters must be between 1 and 100000000 (got 9223372036854775807)")
        refuses({ $0.batchSize = 1 << 32 }, "--batch-size must be between 1 and 65536 (got 4294967296)")
        refuses({ $0.gradAccumulationSteps = -1 }, "--grad-accumulation-steps must be between 1 and 65536 (got -1)")
        refuses({ $0.warmup = -1 }, "--warmup must be between 0 and 100000000 (got -1)")
        refuses({ $0.stepsPerReport = 0 }, "--steps-per-report must be between 1 and 100000000 (got 0)")
        refuses({ $0.stepsPerEval = -3 }, "--steps-per-eval must be between 0 and 100000000 (got -3)")
        refuses({ $0.saveEvery = Int.min }, "--save-every must be between 0 and 100000000 (got -9223372036854775808)")
        refuses({ $0.validationBatches = 0 }, "--val-batches must be at least 1 (got 0)")
        refuses({ $0.learningRate = .nan }, "--learning-rate must be a finite number above 0 (got nan)")
        refuses({ $0.learningRate = 0 }, "--learning-rate must be a finite number above 0 (got 0.0)")
        refuses({ $0.maxGradNorm = .infinity }, "--max-grad-norm must be a finite number above 0, or off (got inf)")
        refuses({ $0.weightDecay = -0.1 }, "--weight-decay must be a finite number of at least 0 (got -0.1)")
    }

    // MARK: Checkpoints

    /// TrainingLoopTests' run: 11 examples in batches of 3, 2 batches per step, a checkpoint every 3 steps.
    private func makeLoop(iterations: Int) throws -> TrainingLoop {
        let model = LlamaModel.random(config: TrainingLoopTests.tiny, seed: 1)
        let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 4, loraAlpha: 8, loraDropout: 0.2, targetModules: .allLinear),
                                             seed: 9)
        var s = TrainingSettings()
        s.iterations = iterations; s.batchSize = 3; s.gradAccumulationSteps = 2; s.learningRate = 1e-2
        s.seed = 9; s.saveEvery = 3; s.stepsPerReport = 2
        return try TrainingLoop(model: model, adapter: adapter, trainingSet: TrainingLoopTests.examples,
                                validationSet: TrainingLoopTests.examples, settings: s, padId: 0)
    }

    /// Trains 3 steps into a folder, then rewrites its checkpoint's state with `edit`; returns the
    /// message of what resuming a 6-step run from it throws, with the path as CHECKPOINT.
    private func resumeFromEdited(_ edit: (inout TrainingCheckpoint.State) -> Void) throws -> String {
        let folder = try temporaryDirectory("checkpoint")
        _ = try makeLoop(iterations: 3).run(folder: folder)
        let path = folder + "/" + TrainingCheckpoint.fileName
        let file = try SafetensorsFile(path: path)
        var state = try JSONDecoder().decode(TrainingCheckpoint.State.self, from: Data(file.metadata["state"]!.utf8))
        edit(&state)
        var writer = SafetensorsWriter()
        writer.metadata = file.metadata
        writer.metadata["state"] = String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
        for name in file.names { writer.add(name, shape: try file.info(name).shape, floats: try file.floats(name)) }
        try writer.write(to: path)
        do { try makeLoop(iterations: 6).resume(from: folder) } catch let error as LoRAError {
            return error.message.replacingOccurrences(of: path, with: "CHECKPOINT")
        }
        return "(resumed)"
    }

    func testCheckpointNumbersAreCheckedAgainstTheRun() throws {
        // The run: 11 examples in batches of 3 (4 per epoch), 2 per step; 3 steps = 6 batches of at most 8 tokens.
        XCTAssertEqual(try resumeFromEdited { $0.data.index = -1 }, "CHECKPOINT is damaged: batch -1 of an epoch of 4 batches")
        XCTAssertEqual(try resumeFromEdited { $0.data.index = 5 }, "CHECKPOINT is damaged: batch 5 of an epoch of 4 batches")
        XCTAssertEqual(try resumeFromEdited { $0.data.epoch = Int.max }, "CHECKPOINT is damaged: epoch 9223372036854775807 after 6 batches")
        XCTAssertEqual(try resumeFromEdited { $0.step = -1 }, "CHECKPOINT is damaged: its step is -1")
        XCTAssertEqual(try resumeFromEdited { $0.trainedTokens = -5 }, "CHECKPOINT is damaged: -5 trained tokens after 6 batches")
        XCTAssertEqual(try resumeFromEdited { $0.trainedTokens = 145 }, "CHECKPOINT is damaged: 145 trained tokens after 6 batches")
        XCTAssertEqual(try resumeFromEdited { $0.seconds = -1 }, "CHECKPOINT is damaged: -1.0 seconds of training")
        XCTAssertEqual(try resumeFromEdited { $0.history.train.append(.init(step: 99, loss: 1)) },
                       "CHECKPOINT is damaged: its training loss history has a point at step 99")
        XCTAssertEqual(try resumeFromEdited { $0.history.train.append(.init(step: 3, loss: 1)) },
                       "CHECKPOINT is damaged: its training loss history has a point at step 3")
        XCTAssertEqual(try resumeFromEdited { $0.history.validation = [.init(step: 0, loss: -1)] },
                       "CHECKPOINT is damaged: its validation loss history holds -1.0 at step 0")
        // Unedited, it resumes.
        XCTAssertEqual(try resumeFromEdited { _ in }, "(resumed)")
    }

    // MARK: GGUF tokenizers

    private func ggufTokenizer(_ edit: (inout GGUFWriter) -> Void) throws -> String {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("tokenizer.ggml.model", .string("llama"))
        w.set("tokenizer.ggml.tokens", .array(.string(["<unk>", "<s>", "</s>", "▁a", "b"])))
        w.set("tokenizer.ggml.scores", .array(.float32([0, 0, 0, -1, -2])))
        w.set("tokenizer.ggml.token_type", .array(.int32([2, 3, 3, 1, 1])))
        w.set("tokenizer.ggml.bos_token_id", .uint32(1))
        w.set("tokenizer.ggml.eos_token_id", .uint32(2))
        edit(&w)
        let path = directory + "/\(UUID().uuidString.prefix(8)).gguf"
        try w.write(to: path)
        return path
    }

    func testGGUFTokenizerWithBadVocabularyOrSpecialIdsIsRefusedByKey() throws {
        func refuses(_ edit: (inout GGUFWriter) -> Void, _ problem: String, line: UInt = #line) throws {
            let path = try ggufTokenizer(edit)
            assertRefuses(try Tokenizer.load(gguf: GGUFFile(path: path)), "\(path): \(problem)", line: line)
            assertRefuses(try Tokenizer.huggingFaceFiles(gguf: GGUFFile(path: path)), "\(path): \(problem)", line: line)
        }
        try refuses({ $0.set("tokenizer.ggml.tokens", .array(.string([]))) }, "tokenizer.ggml.tokens is empty")
        try refuses({ $0.set("tokenizer.ggml.scores", .array(.float32([0, 0]))) },
                    "tokenizer.ggml.scores has 2 entries but tokenizer.ggml.tokens has 5")
        try refuses({ $0.set("tokenizer.ggml.token_type", .array(.int32([1, 1, 1, 1, 1, 1, 1]))) },
                    "tokenizer.ggml.token_type has 7 entries but tokenizer.ggml.tokens has 5")
        try refuses({ $0.set("tokenizer.ggml.bos_token_id", .int32(-1)) },
                    "tokenizer.ggml.bos_token_id is -1, not a token id of the 5-token vocabulary")
        try refuses({ $0.set("tokenizer.ggml.padding_token_id", .uint32(UInt32.max)) },
                    "tokenizer.ggml.padding_token_id is 4294967295, not a token id of the 5-token vocabulary")
        try refuses({ $0.set("tokenizer.ggml.eos_token_id", .uint32(5)) },
                    "tokenizer.ggml.eos_token_id is 5, not a token id of the 5-token vocabulary")
        try refuses({ $0.set("tokenizer.ggml.unknown_token_id", .string("0")) },
                    "tokenizer.ggml.unknown_token_id is a STRING, not a token id of the 5-token vocabulary")
        // The well-formed vocabulary loads, with its ids.
        let tokenizer = try Tokenizer.load(gguf: GGUFFile(path: try ggufTokenizer { $0.set("tokenizer.ggml.padding_token_id", .uint32(0)) }))
        XCTAssertEqual([tokenizer.bosTokenId, tokenizer.eosTokenId, tokenizer.padTokenId], [1, 2, 0])
    }

    /// A special token named in tokenizer_config.json whose id lies beyond the token-id range: the
    /// vocabulary already refuses that id, before the special token could carry it into Int32 ids.
    func testTokenizerConfigSpecialTokenWithAnIdBeyondInt32IsRefused() throws {
        let folder = try copy("tiny_chat", editing: "tokenizer.json") { json in
            var model = json["model"] as! [String: Any], vocab = model["vocab"] as! [String: Any]
            vocab["<huge>"] = 1 << 40
            model["vocab"] = vocab
            json["model"] = model
        }
        let config = folder + "/tokenizer_config.json"
        var j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: config))) as? [String: Any])
        j["pad_token"] = "<huge>"
        try JSONSerialization.data(withJSONObject: j).write(to: URL(fileURLWithPath: config))
        assertRefuses(try Tokenizer.load(path: folder),
                      "\(folder)/tokenizer.json: vocab entry \"<huge>\" has id 1099511627776, outside 0...16777215")
    }
}
