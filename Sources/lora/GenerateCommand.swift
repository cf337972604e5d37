import ArgumentParser
import Foundation
import LoRAKit

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from a prompt, streaming it as it comes, with or without a LoRA adapter.",
        discussion: """
            The prompt goes through the model's chat template as a user message when the model has one \
            (--no-chat sends it as plain text). Without --model the base model is the one the adapter names \
            (base_model_name_or_path).
            """)

    @Option(name: [.short, .long], help: ArgumentHelp(stringLiteral: ModelLocation.help + " Default: the adapter's base model."))
    var model: String?

    @Option(help: "A LoRA adapter to apply (unmerged): a PEFT-format folder, or a llama.cpp LoRA .gguf file.")
    var adapterPath: String?

    @Option(help: PrecisionOption.help)
    var precision = "fp32"

    @Flag(help: "With a quantized model (GGUF: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K): round each token's activations to 8 bits per block of 32 for the weights' products, as llama.cpp does. Faster, but the tokens may then differ from the exact model's (transformers').")
    var quantizeActivations = false

    @Option(name: [.short, .long], help: "The prompt; - reads it from standard input.")
    var prompt: String

    @Flag(inversion: .prefixedNo, help: "Wrap the prompt as a user message in the model's chat template (default: when the model has one).")
    var chat: Bool?

    @Option(name: [.customLong("system-prompt"), .customLong("system")], help: "A system message for the chat template.")
    var system: String?

    @Option(help: "Most tokens to generate.")
    var maxTokens = 256

    @Option(name: .customLong("temp"), help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(help: "Nucleus sampling: keep the most likely tokens up to this probability.")
    var topP: Float = 1

    @Option(help: "Keep the k most likely tokens (0: all).")
    var topK = 0

    @Option(help: "Drop tokens less likely than this fraction of the most likely one.")
    var minP: Float = 0

    @Option(help: "Penalize tokens already in the text (1: off).")
    var repetitionPenalty: Float = 1

    @Option(help: "Seed for sampling.")
    var seed: UInt64 = 0

    @Option(parsing: .singleValue, help: "Stop when the text contains this string (repeatable).")
    var stop: [String] = []

    func run() throws {
        try Lora.reportingErrors {
            guard maxTokens > 0 else { throw LoRAError("--max-tokens must be positive") }
            guard temperature >= 0, topP > 0, topP <= 1, minP >= 0, minP < 1, topK >= 0, repetitionPenalty > 0 else {
                throw LoRAError("sampling settings out of range (temp ≥ 0, 0 < top-p ≤ 1, 0 ≤ min-p < 1, top-k ≥ 0, repetition-penalty > 0)")
            }
            let model = try ModelLocation.baseModel(model, adapterPath: adapterPath)
            let prompt = try self.prompt == "-" ? Self.standardInput() : self.prompt
            let tokenizer = try ModelLocation.tokenizer(model)
            let base = try ModelLocation.load(model, precision: PrecisionOption.resolve(precision))
            base.quantizesDecodeActivations = quantizeActivations
            if quantizeActivations && !base.hasQ8DecodeProducts {
                let why = "warning: --quantize-activations changes nothing here: no weight is of a type with an 8-bit dot kernel (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K) on this CPU (AVX-512 VNNI or AVX2)\n"
                try? FileHandle.standardError.write(contentsOf: Data(why.utf8))
            }
            if let adapterPath {
                try ModelLocation.attachAdapter(adapterPath, to: base)
            }
            let ids = try promptIds(tokenizer, prompt: prompt, model: model)
            SlowPathNotice.warnIfSlow()
            var stopTokens = Set<Int32>()
            if let eos = tokenizer.eosTokenId { stopTokens.insert(Int32(eos)) }
            var streamer = StopStringStreamer(stops: stop)
            var decoder = StreamingDecoder(tokenizer, skipSpecialTokens: true)
            let result = try Generator(model: base).generate(
                prompt: ids.map(Int32.init), maxTokens: maxTokens,
                sampling: SamplingSettings(temperature: temperature, topP: topP, topK: topK, minP: minP,
                                           repetitionPenalty: repetitionPenalty, seed: seed),
                stopTokens: stopTokens) { token in
                    let more = streamer.push(decoder.push(Int(token)))
                    fflush(nil)  // all output streams: stdout is a C global Swift 6 will not touch
                    return more
                }
            streamer.finish(decoder.finish())
            print()
            fflush(nil)
            let report = String(format: "prompt: %d tokens, %.1f tokens/s; generation: %d tokens, %.1f tokens/s (stopped: %@)",
                                ids.count, Double(ids.count) / max(result.promptSeconds, 1e-9), result.tokens.count,
                                Double(result.tokens.count) / max(result.generationSeconds, 1e-9), result.stoppedBy)
            try? FileHandle.standardError.write(contentsOf: Data((report + "\n").utf8))  // write(_:) traps when the write fails
        }
    }

    /// All of standard input, for --prompt -.
    static func standardInput() throws -> String {
        let data = FileHandle.standardInput.readDataToEndOfFile()
        guard let text = String(data: data, encoding: .utf8) else { throw LoRAError("the prompt on standard input is not UTF-8 text") }
        guard !text.isEmpty else { throw LoRAError("--prompt - read an empty prompt from standard input") }
        return text
    }

    private func promptIds(_ tokenizer: Tokenizer, prompt: String, model: String) throws -> [Int] {
        if chat == nil && tokenizer.chatTemplate == nil && system != nil {
            throw LoRAError("--system-prompt needs a chat template, and \(model) has none")
        }
        guard chat ?? (tokenizer.chatTemplate != nil) else {
            if system != nil { throw LoRAError("--system-prompt goes through the chat template; drop --no-chat") }
            return tokenizer.encode(prompt, addSpecialTokens: true)
        }
        guard let source = tokenizer.chatTemplate else { throw LoRAError("\(model) has no chat template; drop --chat") }
        var messages: [ChatMessage] = []
        if let system { messages.append(ChatMessage(role: "system", content: system)) }
        messages.append(ChatMessage(role: "user", content: prompt))
        let text = try ChatTemplate(source).render(
            messages: messages, addGenerationPrompt: true,
            bosToken: tokenizer.bosTokenId.flatMap(tokenizer.tokenString), eosToken: tokenizer.eosTokenId.flatMap(tokenizer.tokenString))
        // As transformers' apply_chat_template: the rendered text already holds the special tokens.
        return tokenizer.encode(text, addSpecialTokens: false)
    }
}

/// Prints generated text as it arrives, holding back only what could be the start of a stop string.
struct StopStringStreamer {
    let stops: [String]
    private var pending = ""
    private(set) var stopped = false

    init(stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Adds text; returns false once a stop string has appeared (the text before it is printed).
    mutating func push(_ text: String) -> Bool {
        pending += text
        if let cut = stops.compactMap({ pending.range(of: $0)?.lowerBound }).min() {
            print(pending[..<cut], terminator: "")
            pending = ""
            stopped = true
            return false
        }
        let hold = max(0, (stops.map(\.count).max() ?? 1) - 1)
        let emit = pending.count - hold
        if emit > 0 {
            let split = pending.index(pending.startIndex, offsetBy: emit)
            print(pending[..<split], terminator: "")
            pending = String(pending[split...])
        }
        return true
    }

    mutating func finish(_ text: String) {
        if !stopped { _ = push(text) }
        if !stopped { print(pending, terminator: "") }
        pending = ""
    }
}
