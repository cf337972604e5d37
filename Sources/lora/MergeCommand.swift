import ArgumentParser
import Foundation
import LoRAKit

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Fold a LoRA adapter into its base model and write a Hugging Face model folder.",
        discussion: "The output (config.json, model.safetensors, tokenizer files) loads with transformers' from_pretrained.")

    @Option(help: "Base model: a Hugging Face folder (config.json + model.safetensors).")
    var model: String

    @Option(help: "Adapter folder in PEFT's format (adapter_config.json + adapter_model.safetensors).")
    var adapterPath: String = "adapters"

    @Option(help: "Output folder for the merged model.")
    var output: String

    @Option(help: "Storage type of the written weights: f32, f16 or bf16.")
    var dtype: String = "f32"

    func run() throws {
        try Lora.reportingErrors {
            guard let type = ExportDType(rawValue: dtype) else {
                throw LoRAError("--dtype must be one of f32, f16, bf16 (got \(dtype))")
            }
            let base = try LlamaModel.load(folder: model)
            let adapter = try LoRAAdapter.load(from: adapterPath, into: base)
            try adapter.merge()
            try base.saveHuggingFace(to: output, dtype: type)
            print("merged \(adapter.modules.count) LoRA modules (\(adapter.parameterCount) parameters) into \(output)")
        }
    }
}
