import Foundation
import LoRAKit

/// One reader of outside input driven by arbitrary bytes. A run either accepts the input or refuses it
/// with a `LoRAError`; anything else (a trap, a sanitizer report, another error type, more than a second)
/// is a finding. The fuzz executable runs these under libFuzzer; the regression tests replay the
/// committed findings through the same functions.
public struct FuzzHarness: Sendable {
    public let name: String
    private let body: @Sendable ([UInt8]) throws -> Void

    init(_ name: String, _ body: @escaping @Sendable ([UInt8]) throws -> Void) {
        self.name = name
        self.body = body
    }

    public enum Outcome: Equatable, Sendable {
        case accepted
        case refused(String)
        /// An error other than `LoRAError`: the CLI would print it, but not as one sentence of ours.
        case otherError(String)
    }

    /// Runs one input. Messages name the harness's scratch files without their folder (`fuzz.gguf`).
    public func run(_ bytes: [UInt8]) -> Outcome {
        do {
            try body(bytes)
            return .accepted
        } catch let error as LoRAError {
            return .refused(error.description.replacingOccurrences(of: Scratch.folder + "/", with: ""))
        } catch {
            return .otherError(String(describing: error))
        }
    }

    public static let all: [FuzzHarness] = [
        FuzzHarness("safetensors", Readers.safetensors),
        FuzzHarness("gguf-header", Readers.ggufHeader),
        FuzzHarness("gguf", Readers.gguf),
        FuzzHarness("tokenizer", Readers.tokenizerJSON),
        FuzzHarness("tokenize", Readers.tokenize),
        FuzzHarness("chat-template", Readers.chatTemplate),
        FuzzHarness("model-config", Readers.modelConfig),
        FuzzHarness("adapter-config", Readers.adapterConfig),
        FuzzHarness("dataset", Readers.dataSet),
        FuzzHarness("yaml-config", Readers.yamlConfig),
        FuzzHarness("checkpoint", Readers.checkpoint),
    ]

    public static func named(_ name: String) -> FuzzHarness? { all.first { $0.name == name } }
}
