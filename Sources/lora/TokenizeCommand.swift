import ArgumentParser
import Foundation
import LoRAKit

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of a text (standard input when no text is given).",
        discussion: "Like encode(text, add_special_tokens=False) by default; special tokens written in the text are recognised.")

    @Option(name: [.short, .long], help: "A Hugging Face folder (tokenizer.json), a .gguf file, smollm2-135m, or a Hub id ORG/NAME.")
    var model: String

    @Flag(help: "Print one JSON line {\"ids\": [...], \"tokens\": [...]}.")
    var json = false

    @Flag(help: "Add the special tokens the tokenizer's post-processor adds (BOS/EOS).")
    var addSpecialTokens = false

    @Argument(help: "The text to tokenize.")
    var text: String?

    func run() throws {
        try Lora.reportingErrors {
            let tokenizer = try ModelLocation.tokenizer(model)
            let input = text ?? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            let ids = tokenizer.encode(input, addSpecialTokens: addSpecialTokens)
            if json {
                let line: [String: Any] = ["ids": ids, "tokens": ids.map { tokenizer.tokenString($0) ?? "" }]
                print(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self))
            } else {
                print(ids.map(String.init).joined(separator: " "))
            }
        }
    }
}
