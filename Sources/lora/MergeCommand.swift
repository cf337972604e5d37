import ArgumentParser
import Foundation
import LoRAKit

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Fold a LoRA adapter into its base model and write the merged model.",
        discussion: """
            --format hf writes a Hugging Face folder (config.json, model.safetensors, tokenizer files) that \
            transformers loads; --format gguf writes a GGUF file that llama.cpp loads (the base must be a GGUF, \
            whose metadata and tokenizer are carried over).
            """)

    @Option(help: "Base model: a Hugging Face folder, a .gguf file, smollm2-135m, or a Hub id ORG/NAME.")
    var model: String

    @Option(help: "Adapter folder in PEFT's format (adapter_config.json + adapter_model.safetensors).")
    var adapterPath: String = "adapters"

    @Option(help: "Output: a folder for --format hf, a .gguf file for --format gguf.")
    var output: String

    @Option(help: "hf or gguf.")
    var format: String = "hf"

    @Option(help: "Storage type of the written weights: f32, f16, bf16 (hf) or f32, f16, q8_0 (gguf).")
    var dtype: String = "f32"

    @Flag(help: "Replace an existing output file or non-empty folder.")
    var force = false

    func run() throws {
        try Lora.reportingErrors {
            let gguf: GGMLType?
            switch (format, dtype) {
            case ("hf", _):
                guard ExportDType(rawValue: dtype) != nil else { throw LoRAError("--dtype for --format hf must be f32, f16 or bf16 (got \(dtype))") }
                gguf = nil
            case ("gguf", "f32"): gguf = .F32
            case ("gguf", "f16"): gguf = .F16
            case ("gguf", "q8_0"): gguf = .Q8_0
            case ("gguf", _): throw LoRAError("--dtype for --format gguf must be f32, f16 or q8_0 (got \(dtype))")
            default: throw LoRAError("--format must be hf or gguf (got \(format))")
            }
            try OutputPath.check(output, force: force)
            let base = try ModelLocation.load(model)
            let adapter = try Adapter.load(from: adapterPath, into: base)
            try AdapterValues.requireFinite(folder: adapterPath)
            try adapter.merge()  // refuses non-finite merged weights
            try OutputPath.write(output, force: force) { path in
                if let gguf { try base.saveGGUF(to: path, type: gguf) } else { try base.saveHuggingFace(to: path, dtype: ExportDType(rawValue: dtype)!) }
            }
            print("merged \(adapter.modules.count) LoRA modules (\(adapter.parameterCount) parameters) into \(output)")
        }
    }
}
