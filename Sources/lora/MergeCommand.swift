import ArgumentParser
import Foundation
import LoRAKit

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Fold a LoRA adapter into its base model and write the merged model.",
        discussion: """
            --format hf writes a Hugging Face folder (config.json with the bos/eos ids, generation_config.json, \
            model.safetensors, tokenizer files) that transformers loads; --format gguf writes a GGUF file that \
            llama.cpp loads (the base must be a GGUF, whose metadata and tokenizer are carried over). An --output \
            ending in .gguf implies --format gguf. A GGUF's --dtype defaults to base: each matrix in the type it \
            has in the base GGUF (so the merged file is the size of the base; norms stay F32; a type LoRAKit \
            cannot write, such as Q3_K, becomes Q4_K). A K quant whose rows do not split into 256-value blocks \
            falls back as llama-quantize does (q4_k to Q5_0, q5_k to Q5_1, q6_k to Q8_0), and to F16 where even \
            those do not fit. A 4-bit merge can round much of a small adapter's change away; q8_0 keeps it.
            """)

    @Option(name: [.short, .long], help: ArgumentHelp(stringLiteral: "Base model: " + ModelLocation.help + " Default: the one the adapter names."))
    var model: String?

    @Option(help: "Adapter folder in PEFT's format (adapter_config.json + adapter_model.safetensors).")
    var adapterPath: String = "adapters"

    @Option(help: "Output: a folder for --format hf, a .gguf file for --format gguf.")
    var output: String

    @Option(help: "hf or gguf (default: gguf when --output ends in .gguf, else hf).")
    var format: String?

    @Option(help: "Storage type of the written weights. hf: f32 (default), f16, bf16. gguf: base (default), f32, f16, q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0.")
    var dtype: String?

    /// The GGUF storage types --dtype names, most precise first.
    static let ggufTypes: [(name: String, type: GGMLType)] = [
        ("f32", .F32), ("f16", .F16), ("q8_0", .Q8_0), ("q6_k", .Q6_K), ("q5_k", .Q5_K), ("q5_1", .Q5_1),
        ("q5_0", .Q5_0), ("q4_k", .Q4_K), ("q4_1", .Q4_1), ("q4_0", .Q4_0),
    ]

    @Flag(help: "Replace an existing output file or non-empty folder.")
    var force = false

    func run() throws {
        try Lora.reportingErrors {
            let target = try target()
            try OutputPath.check(output, force: force)
            // With --force the output is written beside the old one and renamed over it: its folder must take it.
            if force && OutputPath.isTaken(output) { try OutputPath.requireWritable(folder: (OutputPath.absolute(output) as NSString).deletingLastPathComponent) }
            else if target.isFolder { try OutputPath.requireWritable(folder: output) } else { try OutputPath.requireWritable(file: output) }
            let model = try ModelLocation.baseModel(model, adapterPath: adapterPath)
            if case .gguf(nil) = target { try Self.warnIfCoarse(ModelLocation.path(model)) }
            let base = try ModelLocation.load(model)
            let adapter = try Adapter.load(from: adapterPath, into: base)
            try AdapterValues.requireFinite(folder: adapterPath)
            try adapter.merge()  // refuses non-finite merged weights
            try OutputPath.createParent(of: output)
            try OutputPath.write(output, force: force) { path in
                switch target {
                case .folder(let dtype): try base.saveHuggingFace(to: path, dtype: dtype)
                case .gguf(let type): try base.saveGGUF(to: path, type: type)
                }
            }
            print("merged \(adapter.modules.count) LoRA modules (\(adapter.parameterCount) parameters) into \(output)")
        }
    }

    /// What to write: a Hugging Face folder, or a GGUF with every matrix as `type` (nil: as in the base).
    enum Target {
        case folder(ExportDType), gguf(GGMLType?)
        var isFolder: Bool { if case .folder = self { true } else { false } }
    }

    /// Written in a base's 4- or 5-bit type, a merged adapter's small change mostly rounds away (measured on
    /// SmolLM2's Q4_1 with a 10-step quickstart adapter: validation loss 1.8615 merged, against 1.4831
    /// unmerged and 1.4813 merged as q8_0); say so, since the default keeps the base's type.
    static func warnIfCoarse(_ path: String) throws {
        guard path.hasSuffix(".gguf"), let type = try GGUFFile(path: path).tensors["blk.0.attn_q.weight"]?.type,
              [.Q4_0, .Q4_1, .Q5_0, .Q5_1, .Q2_K, .Q3_K, .Q4_K, .Q5_K].contains(type) else { return }
        try? FileHandle.standardError.write(contentsOf: Data(("warning: the base stores its matrices as \(type), and the merged file keeps that type "
            + "and size; rounding to it can undo much of a small adapter's change (--dtype q8_0 keeps it, at about twice the size of a 4-bit file)\n").utf8))
    }

    /// --format and --dtype checked against each other and the output's extension.
    func target() throws -> Target {
        let impliedGGUF = output.lowercased().hasSuffix(".gguf")
        switch format ?? (impliedGGUF ? "gguf" : "hf") {
        case "hf":
            if impliedGGUF { throw LoRAError("--output \(output) ends in .gguf but --format hf writes a folder; drop --format hf to write a GGUF") }
            guard let dtype = ExportDType(rawValue: dtype ?? "f32") else { throw LoRAError("--dtype for --format hf must be f32, f16 or bf16 (got \(dtype!))") }
            return .folder(dtype)
        case "gguf":
            guard let dtype, dtype != "base" else { return .gguf(nil) }
            guard let type = Self.ggufTypes.first(where: { $0.name == dtype })?.type else {
                throw LoRAError("--dtype for --format gguf must be base, \(Self.ggufTypes.map(\.name).joined(separator: ", ")) (got \(dtype))")
            }
            return .gguf(type)
        case let other: throw LoRAError("--format must be hf or gguf (got \(other))")
        }
    }
}
