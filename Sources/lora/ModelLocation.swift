import Foundation
import LoRAKit

/// Resolves `--model`: a Hugging Face folder, a .gguf file, a short name of a model that
/// scripts/fetch_smollm2.sh puts in the cache, or a Hub id (ORG/NAME, ORG/NAME@REVISION,
/// ORG/NAME/FILE.gguf) that is not a local path, from the Hugging Face cache or downloaded into it.
enum ModelLocation {
    static let aliases = ["smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf"]

    static let help = "A Hugging Face folder, a .gguf file, a hub id ORG/NAME, or smollm2-135m."

    /// --model, or when it is left out, the base model an adapter folder names (PEFT's
    /// base_model_name_or_path in adapter_config.json).
    static func baseModel(_ model: String?, adapterPath: String?) throws -> String {
        if let model { return model }
        guard let adapterPath else { throw LoRAError("--model is required") }
        let configPath = adapterPath + "/adapter_config.json"
        guard !adapterPath.hasSuffix(".gguf") else { throw LoRAError("--model is required with a llama.cpp adapter (\(adapterPath) names no base model)") }
        guard let data = FileManager.default.contents(atPath: configPath),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LoRAError("--model is required (\(configPath) cannot be read to find the base model)")
        }
        guard let name = json["base_model_name_or_path"] as? String, !name.isEmpty else {
            throw LoRAError("--model is required: \(configPath) names no base model (base_model_name_or_path)")
        }
        return name
    }

    static var cacheFolder: String {
        let env = ProcessInfo.processInfo.environment
        return env["LORA_CACHE"] ?? ((env["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/swift-lora")
    }

    static func path(_ spec: String) throws -> String {
        guard let file = aliases[spec.lowercased()] else {
            var isFolder: ObjCBool = false
            if FileManager.default.fileExists(atPath: spec, isDirectory: &isFolder) {
                // A local path wins over a Hub id of the same spelling, as in transformers' from_pretrained.
                guard isFolder.boolValue || spec.hasSuffix(".gguf") else {
                    throw LoRAError("model \(spec) is a file but not a .gguf; give the Hugging Face folder that holds it")
                }
                return spec
            }
            guard let id = HubModelID(spec) else {
                throw LoRAError("model \(spec) not found (--model takes a Hugging Face folder, a .gguf file, a hub id ORG/NAME or smollm2-135m)")
            }
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

    /// Puts `--adapter-path` on the model, unmerged: a PEFT folder, or a llama.cpp LoRA .gguf file.
    static func attachAdapter(_ path: String, to model: LlamaModel) throws {
        _ = try path.hasSuffix(".gguf") ? Adapter.loadLlamaCpp(from: path, into: model) : Adapter.load(from: path, into: model)
    }

    /// How a model is named where it is written down for later runs (an adapter's
    /// base_model_name_or_path, training_args.json): an alias as the file it stands for, a local path
    /// made absolute, anything else (a hub id) as given.
    static func canonicalName(_ spec: String) throws -> String {
        if aliases[spec.lowercased()] != nil { return try path(spec) }
        return FileManager.default.fileExists(atPath: spec) ? OutputPath.absolute(spec) : spec
    }
}
