import ArgumentParser
import Foundation
import LoRAKit

struct ExportAdapterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-adapter",
        abstract: "Write a PEFT-format LoRA adapter as a llama.cpp LoRA GGUF (llama-cli -m BASE.gguf --lora FILE).",
        discussion: """
            The base model is read for its architecture and the order llama.cpp keeps q/k rows in. llama.cpp \
            scales every module by one alpha/r, so per-module scalings (rsLoRA, rank or alpha patterns) are folded into B.
            """)

    @Option(help: "The adapter's base model: a Hugging Face folder, a .gguf file, smollm2-135m, or a Hub id ORG/NAME.") var model: String
    @Option(help: "Adapter folder in PEFT's format.") var adapterPath = "adapters"
    @Option(help: "The .gguf file to write.") var output: String

    func run() throws {
        try Lora.reportingErrors {
            guard output.hasSuffix(".gguf") else { throw LoRAError("--output must be a .gguf file (got \(output))") }
            guard !FileManager.default.fileExists(atPath: output) else { throw LoRAError("output file \(output) already exists") }
            let base = try ModelLocation.load(model)
            let adapter = try Adapter.load(from: adapterPath, into: base)
            try adapter.saveLlamaCpp(to: output)
            print("wrote \(adapter.modules.count) LoRA modules (\(adapter.parameterCount) parameters) to \(output)")
        }
    }
}
