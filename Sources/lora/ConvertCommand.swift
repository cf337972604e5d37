import ArgumentParser
import Foundation
import LoRAKit

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Write a GGUF model as a Hugging Face folder (config.json, model.safetensors) that transformers loads.",
        discussion: "Quantized tensors are expanded exactly (the values ggml's dequantization gives) and stored as --dtype.")

    @Option(name: [.short, .long], help: "A .gguf file, smollm2-135m, or a Hub id ORG/NAME/FILE.gguf.")
    var model: String

    @Option(help: "Output folder.")
    var output: String

    @Option(help: "f32, f16 or bf16.")
    var dtype: String = "f32"

    @Flag(help: "Replace an existing output file or non-empty folder.")
    var force = false

    func run() throws {
        try Lora.reportingErrors {
            guard let type = ExportDType(rawValue: dtype) else { throw LoRAError("--dtype must be f32, f16 or bf16 (got \(dtype))") }
            let path = try ModelLocation.path(model)
            guard path.hasSuffix(".gguf") else { throw LoRAError("\(path) is not a .gguf file") }
            try OutputPath.check(output, force: force)
            let m = try LlamaModel.load(gguf: path)
            try OutputPath.write(output, force: force) { try m.saveHuggingFace(to: $0, dtype: type) }
            print("wrote \(output) (\(m.config.numLayers) layers, \(m.config.parameterCount) parameters, \(dtype))")
        }
    }
}
