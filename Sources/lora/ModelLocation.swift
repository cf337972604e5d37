import Foundation
import LoRAKit

/// Resolves `--model`: a Hugging Face folder, a .gguf file, a short name of a model that
/// scripts/fetch_smollm2.sh puts in the cache, or a Hub id (ORG/NAME, ORG/NAME@REVISION,
/// ORG/NAME/FILE.gguf) that is not a local path, from the Hugging Face cache or downloaded into it.
enum ModelLocation {
    static let aliases = ["smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf"]

    static var cacheFolder: String {
        let env = ProcessInfo.processInfo.environment
        return env["LORA_CACHE"] ?? ((env["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/swift-lora")
    }

    static func path(_ spec: String) throws -> String {
        guard let file = aliases[spec.lowercased()] else {
            // A local path wins over a Hub id of the same spelling, as in transformers' from_pretrained.
            guard !FileManager.default.fileExists(atPath: spec), let id = HubModelID(spec) else { return spec }
            return try HubClient().resolve(id, progress: DownloadDisplay(repo: id.repo).show)
        }
        let path = cacheFolder + "/" + file
        guard FileManager.default.fileExists(atPath: path) else {
            throw LoRAError("\(spec) is not in the cache yet (\(path)); run: bash scripts/fetch_smollm2.sh")
        }
        return path
    }

    /// Loads the base model, its products in `precision`; a GGUF's weights stay quantized unless `dequantize`.
    static func load(_ spec: String, dequantize: Bool = false, precision: Precision = .fp32) throws -> LlamaModel {
        let path = try path(spec)
        let model = path.hasSuffix(".gguf") ? try LlamaModel.load(gguf: path, dequantize: dequantize) : try LlamaModel.load(folder: path)
        model.precision = precision
        return model
    }

    /// The model's tokenizer: tokenizer.json in a Hugging Face folder, or a GGUF's metadata.
    static func tokenizer(_ spec: String) throws -> Tokenizer {
        let path = try path(spec)
        if path.hasSuffix(".gguf") { return try Tokenizer.load(gguf: GGUFFile(path: path)) }
        return try Tokenizer.load(path: path)
    }
}
