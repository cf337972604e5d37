import ArgumentParser
import Foundation
import LoRAKit

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Write a GGUF model as a Hugging Face folder (config.json, model.safetensors) that transformers loads.",
        discussion: "Quantized tensors are expanded exactly (the values ggml's dequantization gives) and stored as --dtype.")

    @Option(help: "A .gguf file, or smollm2-135m.")
    var model: String

    @Option(help: "Output folder.")
    var output: String

    @Option(help: "f32, f16 or bf16.")
    var dtype: String = "f32"

    func run() throws {
        try Lora.reportingErrors {
            guard let type = ExportDType(rawValue: dtype) else { throw LoRAError("--dtype must be f32, f16 or bf16 (got \(dtype))") }
            let path = try ModelLocation.path(model)
            guard path.hasSuffix(".gguf") else { throw LoRAError("\(path) is not a .gguf file") }
            let m = try LlamaModel.load(gguf: path)
            guard m.config.ropeFrequencyFactors == nil else {
                throw LoRAError("\(path) stores its RoPE scaling as rope_freqs.weight, which config.json cannot express yet")
            }
            let gguf = try GGUFFile(path: path)
            let tokenizerJSON = try Tokenizer.tokenizerJSON(gguf: gguf)
            try m.saveHuggingFace(to: output, dtype: type)
            try writeTokenizerFiles(tokenizerJSON, gguf)
            print("wrote \(output) (\(m.config.numLayers) layers, \(m.config.parameterCount) parameters, \(dtype))")
        }
    }

    /// tokenizer.json from the GGUF's vocabulary, and tokenizer_config.json with its special tokens
    /// and chat template, so transformers' AutoTokenizer loads the folder.
    private func writeTokenizerFiles(_ json: [String: Any], _ gguf: GGUFFile) throws {
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        func token(_ key: String) -> String? { gguf.metadata[key]?.intValue.flatMap { $0 < tokens.count ? tokens[$0] : nil } }
        var config: [String: Any] = ["tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": false,
                                     "model_max_length": gguf.metadata[(gguf.architecture ?? "llama") + ".context_length"]?.intValue ?? 2048]
        if let t = token("tokenizer.ggml.bos_token_id") { config["bos_token"] = t }
        if let t = token("tokenizer.ggml.eos_token_id") { config["eos_token"] = t }
        if let t = token("tokenizer.ggml.padding_token_id") { config["pad_token"] = t }
        if let t = token("tokenizer.ggml.unknown_token_id") { config["unk_token"] = t }
        if let template = gguf.metadata["tokenizer.chat_template"]?.stringValue { config["chat_template"] = template }
        for (name, object) in [("tokenizer.json", json), ("tokenizer_config.json", config)] {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            try data.write(to: URL(fileURLWithPath: output + "/" + name), options: .atomic)
        }
    }
}
