import Foundation
import XCTest
@testable import LoRAKit

/// End to end on the real SmolLM2-135M-Instruct (GGUF: Q4_1 blocks, Q8_0 embedding), against
/// transformers on the same file dequantized to float32 (scripts/make_smollm2_reference.py).
/// .ci/run fetches the model (scripts/fetch_smollm2.sh); elsewhere the tests skip without it.
final class SmolLM2Tests: XCTestCase {
    static var modelPath: String {
        if let p = ProcessInfo.processInfo.environment["LORA_SMOLLM2_GGUF"] { return p }
        let cache = ProcessInfo.processInfo.environment["LORA_CACHE"]
            ?? ((ProcessInfo.processInfo.environment["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/swift-lora")
        return cache + "/SmolLM2-135M-Instruct.Q4_1.gguf"
    }

    func model(dequantize: Bool = false) throws -> LlamaModel {
        guard FileManager.default.fileExists(atPath: Self.modelPath) else {
            if ProcessInfo.processInfo.environment["CI"] != nil { XCTFail("CI must fetch \(Self.modelPath) first") }
            throw XCTSkip("\(Self.modelPath) not present (bash scripts/fetch_smollm2.sh fetches it)")
        }
        return try LlamaModel.load(gguf: Self.modelPath, dequantize: dequantize)
    }

    var reference: [String: Any] {
        get throws {
            let data = try Data(contentsOf: URL(fileURLWithPath: fixturesPath + "/smollm2/reference.json"))
            return try JSONSerialization.jsonObject(with: data) as! [String: Any]
        }
    }

    func testLossOnCommittedTextEqualsTransformers() throws {
        let model = try model()
        XCTAssertTrue(model.blocks[0].q.matrix.isPacked && model.embedding.isPacked, "the base stays quantized")
        XCTAssertEqual(model.config.numLayers, 30)
        let ref = try reference
        let ids = (ref["text_ids"] as! [Int]).map(Int32.init)
        let (loss, tokens) = try model.loss(Batch(batchSize: 1, seqLen: ids.count, inputIds: ids, labels: ids))
        let expected = (ref["loss"] as! NSNumber).doubleValue
        XCTAssertEqual(tokens, ids.count - 1)
        XCTAssertEqual(loss, expected, accuracy: 1e-4 * expected, "loss \(loss) vs transformers \(expected)")
    }

    func testGreedyGenerationEqualsTransformers() throws {
        let model = try model()
        let ref = try reference
        let prompt = (ref["prompt_ids"] as! [Int]).map(Int32.init), expected = (ref["generated"] as! [Int]).map(Int32.init)
        let result = try Generator(model: model).generate(prompt: prompt, maxTokens: expected.count)
        XCTAssertEqual(result.tokens, expected)
    }

    /// Decoding reads the Q4_1 and Q8_0 rows with the quantized dot kernels (q and k through the RoPE
    /// row order): each token's logits equal the dense model's, the weights dequantized at load.
    func testDecodingKernelsGiveTheDequantizedModelsLogits() throws {
        let packed = try model(), dense = try model(dequantize: true)
        try XCTSkipIf(QuantizedDot.kernel(for: .Q4_1) == nil, "no quantized dot kernel on this CPU")
        let c1 = KVCache(model: packed, capacity: 16), c2 = KVCache(model: dense, capacity: 16)
        _ = try packed.forward(tokens: [1, 504, 3365], cache: c1)
        _ = try dense.forward(tokens: [1, 504, 3365], cache: c2)
        for t: Int32 in [28, 905, 17] {
            let a = try packed.forward(tokens: [t], cache: c1), b = try dense.forward(tokens: [t], cache: c2)
            XCTAssertLessThan(relativeError(a.array, b.array), 1e-5, "token \(t)")
        }
    }
}

extension SmolLM2Tests {
    /// The model written back as GGUF (F32, then Q8_0) reads back with the same loss (F32: the same
    /// values; Q8_0: re-quantized, so close), with every metadata key of the original carried over.
    func testGGUFExportRoundTrips() throws {
        let model = try model()
        let ids = (try reference["text_ids"] as! [Int]).map(Int32.init)
        let batch = Batch(batchSize: 1, seqLen: ids.count, inputIds: ids, labels: ids)
        let loss = try model.loss(batch).loss
        let dir = try temporaryDirectory()
        try model.saveGGUF(to: dir + "/f32.gguf", type: .F32)
        let f32 = try LlamaModel.load(gguf: dir + "/f32.gguf")
        XCTAssertEqual(try f32.loss(batch).loss, loss, accuracy: 1e-5 * loss)
        try model.saveGGUF(to: dir + "/q8.gguf", type: .Q8_0)
        let q8File = try GGUFFile(path: dir + "/q8.gguf"), original = try GGUFFile(path: Self.modelPath)
        XCTAssertEqual(Set(q8File.metadataKeys), Set(original.metadataKeys))
        XCTAssertEqual(q8File.metadata["tokenizer.ggml.tokens"], original.metadata["tokenizer.ggml.tokens"])
        XCTAssertEqual(try q8File.info("blk.0.ffn_up.weight").type, .Q8_0)
        XCTAssertEqual(try LlamaModel.load(gguf: dir + "/q8.gguf").loss(batch).loss, loss, accuracy: 2e-2 * loss)

        // With no type given, each tensor keeps its type in the base (Q4_1, Q8_0 and F32 here), so the
        // file keeps the base's size; requantizing dequantized Q4_1 blocks changes the loss but little.
        try model.saveGGUF(to: dir + "/base.gguf", type: nil)
        let same = try GGUFFile(path: dir + "/base.gguf")
        XCTAssertEqual(Set(same.tensorNames), Set(original.tensorNames))
        for name in original.tensorNames { XCTAssertEqual(try same.info(name).type, try original.info(name).type, name) }
        let size = { (path: String) in try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int }
        XCTAssertEqual(Double(try size(dir + "/base.gguf")), Double(try size(Self.modelPath)), accuracy: 1e-3 * Double(try size(Self.modelPath)))
        XCTAssertEqual(try LlamaModel.load(gguf: dir + "/base.gguf").loss(batch).loss, loss, accuracy: 1e-2 * loss)
    }
}

extension SmolLM2Tests {
    /// `lora convert`'s path: the GGUF written as a Hugging Face folder reloads with the same loss.
    func testConvertedFolderGivesTheSameLoss() throws {
        let model = try model()
        let ids = (try reference["text_ids"] as! [Int]).map(Int32.init)
        let batch = Batch(batchSize: 1, seqLen: ids.count, inputIds: ids, labels: ids)
        let out = try temporaryDirectory() + "/hf"
        try model.saveHuggingFace(to: out)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as! [String: Any]
        XCTAssertEqual(config["model_type"] as? String, "llama")
        XCTAssertEqual(config["tie_word_embeddings"] as? Bool, true)
        // The GGUF's tokenizer.ggml.bos_token_id and eos_token_id, as gguf-py reads them (1 and 2; the
        // Hugging Face SmolLM2-135M-Instruct config.json says the same).
        let generation = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/generation_config.json"))) as! [String: Any]
        for json in [config, generation] {
            XCTAssertEqual(json["bos_token_id"] as? Int, 1)
            XCTAssertEqual(json["eos_token_id"] as? Int, 2)
        }
        let expected = (try reference["loss"] as! NSNumber).doubleValue
        let converted = try LlamaModel.load(folder: out)
        XCTAssertEqual(try converted.loss(batch).loss, expected, accuracy: 1e-4 * expected)

        // An adapter made on the GGUF base (PEFT names, q/k in Hugging Face's order) applies unchanged
        // to the converted Hugging Face folder.
        let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 4, loraAlpha: 8, targetModules: .allLinear), seed: 5)
        var random = SeededRandom(seed: 6)
        for (_, lora) in adapter.sites(of: LoRA.self) { for i in 0..<lora.b.value.count { lora.b.value[i] = random.uniform(-0.05, 0.05) } }
        let adapted = try model.loss(batch).loss
        XCTAssertGreaterThan(abs(adapted - expected), 1e-3, "the adapter changes the loss")
        try adapter.save(to: out + "-adapter")
        _ = try Adapter.load(from: out + "-adapter", into: converted)
        XCTAssertEqual(try converted.loss(batch).loss, adapted, accuracy: 1e-5 * adapted)
    }
}

extension SmolLM2Tests {
    /// The tokenizer built from the GGUF's metadata encodes the committed text exactly as transformers
    /// did (the reference ids), and as the SmolLM2 tokenizer.json fixture does.
    func testTokenizerFromGGUFMetadataMatches() throws {
        _ = try model()  // skips when the file is absent
        let tokenizer = try Tokenizer.load(gguf: GGUFFile(path: Self.modelPath))
        let text = try String(contentsOfFile: fixturesPath + "/smollm2/text.txt", encoding: .utf8)
        XCTAssertEqual(tokenizer.encode(text, addSpecialTokens: true), try reference["text_ids"] as! [Int])
        XCTAssertEqual(tokenizer.decode(tokenizer.encode(text)), text)
        XCTAssertEqual(tokenizer.eosTokenId, 2)
        XCTAssertEqual(tokenizer.chatTemplate?.contains("<|im_start|>"), true)
        let json = try Tokenizer.load(path: fixturesPath + "/tokenizers/smollm2/tokenizer.json")
        let sample = try String(contentsOfFile: fixturesPath + "/tokenizers/text.txt", encoding: .utf8)
        XCTAssertEqual(tokenizer.encode(sample, addSpecialTokens: true), json.encode(sample, addSpecialTokens: true))
    }
}

extension SmolLM2Tests {
    /// `lora eval`'s rule on {"text"} rows, against transformers (scripts/make_eval_reference.py).
    func testEvalLossEqualsTransformers() throws {
        let model = try model()
        let tokenizer = try Tokenizer.load(gguf: GGUFFile(path: Self.modelPath))
        let set = try DataSet(path: fixturesPath + "/smollm2/eval.jsonl", tokenizer: tokenizer)
        var total = 0.0, count = 0
        for batch in set.batches(size: 2, padId: 2) {
            let (loss, n) = try model.loss(batch)
            total += loss * Double(n); count += n
        }
        let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixturesPath + "/smollm2/eval_reference.json"))) as! [String: Any]
        let expected = (ref["loss"] as! NSNumber).doubleValue
        XCTAssertEqual(count, (ref["tokens"] as! NSNumber).intValue)
        XCTAssertEqual(total / Double(count), expected, accuracy: 1e-4 * expected)
    }
}

extension SmolLM2Tests {
    /// With the activations rounded to 8 bits per block (llama.cpp's way), each decoding step's logits
    /// stay near the exact model's, and greedy decoding still gives transformers' tokens on the
    /// committed prompt.
    func testQuantizedActivationsKeepTheGreedyTokens() throws {
        try XCTSkipIf(QuantizedDot.q8Kernel(for: .Q4_1) == nil, "no 8-bit dot kernel on this CPU")
        let exact = try model(), rounded = try model()
        rounded.quantizesDecodeActivations = true
        let c1 = KVCache(model: exact, capacity: 16), c2 = KVCache(model: rounded, capacity: 16)
        _ = try exact.forward(tokens: [1, 504, 3365], cache: c1)
        _ = try rounded.forward(tokens: [1, 504, 3365], cache: c2)
        for t: Int32 in [28, 905, 17] {
            let a = try exact.forward(tokens: [t], cache: c1), b = try rounded.forward(tokens: [t], cache: c2)
            // Measured 0.065, 0.039 and 0.035 for these three tokens; 8-bit rounding of every
            // layer's input compounds through 30 blocks, so the bound is loose but far below a
            // wrong kernel's (order 1).
            XCTAssertLessThan(relativeError(b.array, a.array), 0.1, "token \(t)")
        }
        let ref = try reference
        let prompt = (ref["prompt_ids"] as! [Int]).map(Int32.init), expected = (ref["generated"] as! [Int]).map(Int32.init)
        let result = try Generator(model: rounded).generate(prompt: prompt, maxTokens: expected.count)
        XCTAssertEqual(result.tokens, expected)
    }
}
