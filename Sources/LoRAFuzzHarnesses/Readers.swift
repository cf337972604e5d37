import Foundation
import LoRACommandLine
import LoRAKit

/// The harness bodies: each feeds bytes to one reader the way the CLI does, then uses what it read, so
/// values that pass the reader but break their first user are found too. Readers that only take a path
/// get the bytes through a file in a per-process scratch folder.
enum Readers {
    // MARK: model files

    static func safetensors(_ bytes: [UInt8]) throws {
        let file = try SafetensorsFile(path: Scratch.write(bytes, as: "fuzz.safetensors"))
        for info in file.tensors.values {
            if info.dtype.isFloatingPoint { _ = try file.floats(info.name) } else { _ = try file.ints(info.name) }
        }
    }

    /// The header alone (metadata and tensor infos), then every tensor's data as floats: fast enough
    /// for tens of millions of inputs, where `gguf` also builds the tokenizer and the model.
    static func ggufHeader(_ bytes: [UInt8]) throws {
        let file = try GGUFFile(path: Scratch.write(bytes, as: "fuzz.gguf"))
        for key in file.metadataKeys { _ = file.metadata[key]?.arrayValue?.values }
        for name in file.tensors.keys { _ = try file.floats(name) }
    }

    static func gguf(_ bytes: [UInt8]) throws {
        let path = Scratch.write(bytes, as: "fuzz.gguf")
        let file = try GGUFFile(path: path)
        let tokenizer = Result { try Tokenizer.load(gguf: file) }
        _ = try LlamaModel.load(gguf: path)
        try use(tokenizer.get())
    }

    static func modelConfig(_ bytes: [UInt8]) throws {
        let config = try ModelConfig.load(path: Scratch.write(bytes, as: "config.json"))
        _ = config.parameterCount
    }

    /// Reads the config (any method), then attaches it to a tiny model, where its rank and targets are used.
    static func adapterConfig(_ bytes: [UInt8]) throws {
        let config = try AdapterMethods.loadConfig(path: Scratch.write(bytes, as: "adapter_config.json"))
        _ = try Adapter.attach(to: LlamaModel.random(config: TinyRun.config, seed: 1), config: config)
    }

    // MARK: text

    static func tokenizerJSON(_ bytes: [UInt8]) throws {
        try use(Tokenizer(data: Data(bytes)))
    }

    /// Encodes and decodes text with special tokens, then decodes ids at and beyond the vocabulary's ends.
    /// Batches and the embedding trust encoded ids, so one outside the vocabulary is a finding too.
    static func use(_ tokenizer: Tokenizer) {
        let ids = encode(Fixtures.sampleText, tokenizer)
        _ = tokenizer.decode(ids + [0, 1, tokenizer.vocabSize - 1, tokenizer.vocabSize, -1])
    }

    /// Arbitrary text through real tokenizers (byte-level BPE with its regex, and SentencePiece-style BPE).
    static func tokenize(_ bytes: [UInt8]) throws {
        let text = String(decoding: bytes, as: UTF8.self)
        for tokenizer in Fixtures.tokenizers {
            _ = tokenizer.decode(encode(text, tokenizer))
        }
    }

    static func encode(_ text: String, _ tokenizer: Tokenizer) -> [Int] {
        let ids = tokenizer.encode(text, addSpecialTokens: true)
        if let bad = ids.first(where: { !(0..<tokenizer.vocabSize).contains($0) }) {
            fatalError("encode produced id \(bad), outside the vocabulary of \(tokenizer.vocabSize) tokens")
        }
        return ids
    }

    static func chatTemplate(_ bytes: [UInt8]) throws {
        let template = try ChatTemplate(String(decoding: bytes, as: UTF8.self))
        _ = try template.render(messages: Fixtures.conversation, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
    }

    static func dataSet(_ bytes: [UInt8]) throws {
        let path = Scratch.write(bytes, as: "data.jsonl")
        _ = try DataSet(path: path, tokenizer: Fixtures.chatTokenizer, maskPrompt: true, maxSequenceLength: 64)
    }

    static func yamlConfig(_ bytes: [UInt8]) throws {
        let file = try ConfigFile(path: Scratch.write(bytes, as: "config.yaml"), allowedKeys: trainSettingNames)
        for key in trainSettingNames {
            _ = try? file.string(key)
            _ = try? file.int(key)
            _ = try? file.float(key)
            _ = try? file.bool(key)
        }
    }

    // MARK: checkpoints

    /// Resumes a tiny run from the bytes as its checkpoint, then trains it to the end, so a state
    /// that resumes but points outside the data is found.
    static func checkpoint(_ bytes: [UInt8]) throws {
        let folder = Scratch.folder + "/checkpoint"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        _ = Scratch.write(bytes, as: "checkpoint/checkpoint.safetensors")
        let loop = try TinyRun.loop(iterations: 4)
        try loop.resume(from: folder)
        _ = try loop.run(folder: nil)
    }
}

/// The run whose checkpoints the checkpoint harness reads; the seed is one of its checkpoints.
public enum TinyRun {
    static let config = ModelConfig(hiddenSize: 16, intermediateSize: 32, numLayers: 2, numHeads: 2, numKVHeads: 1,
                                    vocabSize: 20, tieWordEmbeddings: true)

    static let examples = DataSet(examples: (0..<5).map { i in
        let n = 3 + i
        return Example(tokens: (0..<n).map { Int32(($0 * 7 + i) % 20) }, isTarget: (0..<n).map { $0 > 0 })
    })

    static func loop(iterations: Int) throws -> TrainingLoop {
        var settings = TrainingSettings()
        settings.iterations = iterations
        settings.batchSize = 2
        settings.learningRate = 1e-2
        settings.saveEvery = 0
        settings.seed = 3
        let model = LlamaModel.random(config: config, seed: 1)
        let adapter = try Adapter.attach(to: model, config: LoRAConfig(r: 2, loraAlpha: 4, loraDropout: 0.1, targetModules: .allLinear),
                                             seed: 2)
        return try TrainingLoop(model: model, adapter: adapter, trainingSet: examples, settings: settings, padId: 0)
    }

    /// The checkpoint of this run after 2 of its steps: the checkpoint harness's seed.
    public static func checkpointSeed() throws -> [UInt8] {
        let folder = Scratch.folder + "/seed"
        try? FileManager.default.removeItem(atPath: folder)
        _ = try loop(iterations: 2).run(folder: folder)
        return Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/checkpoint.safetensors")))
    }
}

/// What the harnesses read besides their input: fixtures of the test suite.
enum Fixtures {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Tests/LoRAKitTests/Fixtures").standardized.path

    static func tokenizer(_ name: String) -> Tokenizer {
        do { return try Tokenizer.load(path: folder + "/" + name) } catch { fatalError("fuzz fixture: \(error)") }
    }

    /// SmolLM2's byte-level BPE, and a SentencePiece-style BPE.
    static let tokenizers = [tokenizer("tokenizers/smollm2"), tokenizer("tokenizers/sp_bpe")]
    /// A small tokenizer with a chat template, for data sets.
    static let chatTokenizer = tokenizer("tiny_chat")

    static let sampleText = "Hello, world! It's 2024: naïve café — 東京 🙂\n\t  <|im_start|>user\nx<|im_end|>"
    static let conversation = [
        ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi!"),
        ChatMessage(role: "assistant", content: "Hello."), ChatMessage(role: "user", content: "Bye"),
    ]
}

/// A folder of this process's own for the files harnesses write.
enum Scratch {
    static let folder: String = {
        let path = (NSTemporaryDirectory() as NSString).appendingPathComponent("lora-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    /// Writes `bytes` to `name` in the folder: plainly, as atomic writes cost a temporary file and a rename per input.
    static func write(_ bytes: [UInt8], as name: String) -> String {
        let path = folder + "/" + name
        guard let file = fopen(path, "wb") else { fatalError("cannot write \(path)") }
        let written = fwrite(bytes, 1, bytes.count, file)
        guard fclose(file) == 0, written == bytes.count else { fatalError("cannot write \(path)") }
        return path
    }
}
