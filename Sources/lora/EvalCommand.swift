import ArgumentParser
import Foundation
import LoRAKit

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Mean cross-entropy per predicted token and perplexity of a model (and adapter) on a data set.",
        discussion: """
            Text rows are the tokenizer's encoding with its default special tokens, then EOS; every token after \
            the first is predicted. Completion and chat rows follow the same rule on the rendered sequence, or \
            count only completion / assistant tokens with --mask-prompt.
            """)

    @Option(name: [.short, .long], help: ArgumentHelp(stringLiteral: ModelLocation.help + " Default: the adapter's base model.")) var model: String?
    @Option(help: "A folder with train/valid/test.jsonl (its --split is used) or a .jsonl file.") var data: String
    @Option(help: "Split of a data folder.") var split = "test"
    @Option(help: "A LoRA adapter to apply: a PEFT-format folder, or a llama.cpp LoRA .gguf file.") var adapterPath: String?
    @Option(help: "Longer rows are cut to this many tokens.") var maxSeqLength = 2048
    @Option(help: "Sequences per forward pass.") var batchSize = 4
    @Flag(help: "Count only completion / assistant tokens.") var maskPrompt = false
    @Option(help: PrecisionOption.help) var precision = "fp32"
    @Flag(help: "Print one JSON line {\"loss\", \"perplexity\", \"tokens\"}.") var json = false

    func run() throws {
        try Lora.reportingErrors {
            guard batchSize > 0, maxSeqLength > 1 else { throw LoRAError("--batch-size must be positive and --max-seq-length above 1") }
            let model = try ModelLocation.baseModel(model, adapterPath: adapterPath)
            let tokenizer = try ModelLocation.tokenizer(model)
            let base = try ModelLocation.load(model, precision: PrecisionOption.resolve(precision))
            if let adapterPath {
                try ModelLocation.attachAdapter(adapterPath, to: base)
                if !adapterPath.hasSuffix(".gguf") { try AdapterValues.requireFinite(folder: adapterPath) }  // the .gguf reader checks its own
            }
            let set = try DataSet(path: DataSet.path(data, split: split), tokenizer: tokenizer, maskPrompt: maskPrompt,
                                  maxSequenceLength: maxSeqLength)
            if set.truncated > 0 {
                // write(contentsOf:) throws where write(_:) would trap on a failed write.
                try? FileHandle.standardError.write(contentsOf: Data("note: \(set.truncated) rows were cut to \(maxSeqLength) tokens\n".utf8))
            }
            let pad = Int32(tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0)
            let (loss, count) = try base.evaluate(set, batchSize: batchSize, padId: pad)
            guard count > 0 else { throw LoRAError("the data set has no predicted tokens") }
            if json {
                let line: [String: Any] = ["loss": loss, "perplexity": exp(loss), "tokens": count]
                print(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print(String(format: "loss %.6f, perplexity %.4f over %d tokens (%d sequences)", loss, exp(loss), count, set.examples.count))
            }
        }
    }
}
