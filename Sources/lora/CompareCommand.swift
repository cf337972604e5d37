import ArgumentParser
import Foundation
import LoRAKit

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Train several methods on the same data, seed and budget, and compare them in one table.",
        discussion: """
            Each method runs as its own `lora train` (so each has its own peak memory) into DIR/METHOD, with \
            the same --model, --data, --iters and any other train option given here. Writes DIR/compare.md, \
            DIR/compare.csv and DIR/compare.svg (validation loss per step of every method). A method that fails \
            is reported in its row and the others still run; --resume skips the methods already done.
            """)

    static let allMethods = ["lora", "lora-plus", "lora-fa", "vera", "dora", "adalora", "lora-drop"]

    @Option(name: [.short, .long], help: "A Hugging Face folder, a .gguf file, smollm2-135m, or a Hub id ORG/NAME.") var model: String
    @Option(help: "A data folder (train.jsonl, valid.jsonl) or a .jsonl file.") var data: String
    @Option(help: "Comma-separated methods.") var methods: String = allMethods.joined(separator: ",")
    @Option(help: "The folder for the adapters (one subfolder per method) and the table.") var output: String
    @Option(parsing: .unconditional, help: "Optimizer steps per method (default: train's, 100).") var iters: Int?
    @Flag(help: "Skip the methods whose run in --output finished.") var resume = false
    @Argument(parsing: .allUnrecognized, help: "Any other `lora train` option, given to every method that reads it (e.g. --rank 8 --steps-per-eval 10; --rank, --alpha, --use-rslora and --init do not apply to vera).")
    var trainOptions: [String] = []

    func run() throws {
        try Lora.reportingErrors { try compare() }
    }

    private func compare() throws {
        let names = methods.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !names.isEmpty else { throw LoRAError("--methods names no method") }
        for name in names where !Self.allMethods.contains(name) {
            throw LoRAError("--methods: \(name) is not one of \(Self.allMethods.joined(separator: ", "))")
        }
        if let duplicate = names.first(where: { n in names.filter { $0 == n }.count > 1 }) { throw LoRAError("--methods names \(duplicate) twice") }
        // These belong to each method's run, which compare sets itself.
        for option in ["--method", "--adapter-path", "--summary-file", "--resume", "--config", "-c"] where trainOptions.contains(where: { $0 == option || $0.hasPrefix(option + "=") }) {
            throw LoRAError("\(option) is set by lora compare for each method; leave it out")
        }
        if let iters, iters < 1 { throw LoRAError("--iters must be at least 1 (got \(iters))") }
        try LoRAError.writing(output) { try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true) }

        var rows: [Row] = []
        for name in names {
            let folder = output + "/" + name, summaryPath = folder + "/summary.json"
            if resume, let done = try? Row(method: name, summaryPath: summaryPath) {
                print("\(name): done before (\(summaryPath))")
                rows.append(done)
                continue
            }
            try? FileManager.default.removeItem(atPath: summaryPath)
            print("\(name): training into \(folder) ...")
            var arguments = ["train", "--model", model, "--data", data, "--method", name, "--adapter-path", folder, "--summary-file", summaryPath]
            if let iters { arguments += ["--iters", "\(iters)"] }
            if resume && FileManager.default.fileExists(atPath: folder + "/checkpoint.safetensors") { arguments.append("--resume") }
            arguments += Self.options(trainOptions, for: name)
            let (status, lastError) = try Self.runTrain(arguments, log: folder + ".log")
            if status == 0, let row = try? Row(method: name, summaryPath: summaryPath) {
                rows.append(row)
                print(String(format: "%@: final validation loss %@, %.0f tok/s", name, row.finalValidation.map { String(format: "%.4f", $0) } ?? "-", row.tokensPerSecond))
            } else {
                let reason = lastError ?? "lora train exited with status \(status)"
                rows.append(Row(method: name, error: reason))
                print("\(name): failed: \(reason) (log: \(folder).log)")
            }
        }
        let table = Self.markdown(rows)
        print("\n" + table, terminator: "")
        try write(table, to: output + "/compare.md")
        try write(Self.csv(rows), to: output + "/compare.csv")
        var chart = LossChart(title: "Validation loss by method")
        for (i, row) in rows.enumerated() where !row.validation.isEmpty {
            chart.series.append(.init(label: row.method, points: row.validation, color: LossChart.palette[i % LossChart.palette.count], width: 2, dots: true))
        }
        try write(chart.svg(), to: output + "/compare.svg")
        print("wrote \(output)/compare.md, compare.csv and compare.svg")
        if rows.allSatisfy({ $0.error != nil }) { throw LoRAError("every method failed; see the logs in \(output)") }
    }

    /// Options that only one method reads go to that method alone; the LoRA pair's options go to all but
    /// VeRA (`veraSkips`).
    static let methodOptions: [String: String] = [
        "--init-r": "adalora", "--target-r": "adalora", "--tinit": "adalora", "--tfinal": "adalora", "--delta-t": "adalora",
        "--drop-probe-steps": "lora-drop", "--drop-sample-ratio": "lora-drop", "--drop-threshold": "lora-drop",
        "--lora-plus-ratio": "lora-plus", "--projection-prng-key": "vera",
    ]
    /// What VeRA does not read: its r is the rank of its shared projections (PEFT's default 256), not of a
    /// per-layer pair, and it has no scaling and no LoRA initialization.
    static let veraSkips: Set<String> = ["--rank", "--alpha", "--use-rslora", "--init"]
    /// `lora train`'s options that take no value.
    static let trainFlags: Set<String> = ["--grad-checkpoint", "--use-dora", "--use-rslora", "--mask-prompt"]

    static func options(_ all: [String], for method: String) -> [String] {
        var out: [String] = [], i = 0
        while i < all.count {
            let name = String(all[i].split(separator: "=", maxSplits: 1).first ?? "")
            let base = name.hasPrefix("--no-") ? "--" + name.dropFirst("--no-".count) : name
            let takesValue = name.hasPrefix("--") && !all[i].contains("=") && !trainFlags.contains(base)
            let group = Array(all[i..<min(all.count, i + (takesValue ? 2 : 1))])
            i += group.count
            if let only = methodOptions[name], only != method { continue }
            if method == "vera" && veraSkips.contains(base) { continue }
            out += group
        }
        return out
    }

    private func write(_ text: String, to path: String) throws {
        try LoRAError.writing(path) { try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic) }
    }

    /// Runs this executable's `train` with `arguments`, its output to `log`; the exit status and the
    /// last `error:` line it printed.
    static func runTrain(_ arguments: [String], log: String) throws -> (Int32, String?) {
        guard FileManager.default.createFile(atPath: log, contents: nil), let handle = FileHandle(forWritingAtPath: log) else {
            throw LoRAError("cannot write \(log)")
        }
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        do { try process.run() } catch { throw LoRAError("cannot start lora train: \(error.localizedDescription)") }
        process.waitUntilExit()
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let lastError = text.split(separator: "\n").last { $0.hasPrefix("error: ") }.map { String($0.dropFirst("error: ".count)) }
        return (process.terminationStatus, lastError)
    }

    /// One method's line of the table, from the summary its run wrote.
    struct Row {
        var method: String
        var error: String? = nil
        var parameters = 0, peakMemoryMB = 0.0, tokensPerSecond = 0.0, seconds = 0.0, adapterBytes = 0
        var finalTrain: Double?, bestValidation: Double?, finalValidation: Double?
        var validation: [TrainingHistory.Point] = []

        init(method: String, error: String) {
            self.method = method
            self.error = error
        }

        init(method: String, summaryPath: String) throws {
            guard let data = FileManager.default.contents(atPath: summaryPath),
                  let j = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let parameters = j["trainable_parameters"] as? Int, let memory = j["peak_memory_mb"] as? Double,
                  let speed = j["tokens_per_second"] as? Double, let seconds = j["seconds"] as? Double,
                  let bytes = j["adapter_bytes"] as? Int else {
                throw LoRAError("\(summaryPath) is not a lora train summary")
            }
            self.method = method
            self.parameters = parameters
            peakMemoryMB = memory
            tokensPerSecond = speed
            self.seconds = seconds
            adapterBytes = bytes
            finalTrain = j["final_train_loss"] as? Double
            bestValidation = j["best_validation_loss"] as? Double
            finalValidation = j["final_validation_loss"] as? Double
            validation = (j["validation_loss"] as? [[Double]] ?? []).compactMap { $0.count == 2 ? .init(step: Int($0[0]), loss: $0[1]) : nil }
        }

        static let header = ["method", "trainable params", "peak memory (MB)", "tokens/s", "wall time (s)", "final train loss",
                             "best val loss", "final val loss", "adapter size (KB)"]

        var cells: [String] {
            if let error { return [method, "failed: \(error)"] + Array(repeating: "", count: Self.header.count - 2) }
            func loss(_ v: Double?) -> String { v.map { String(format: "%.4f", $0) } ?? "-" }
            return [method, "\(parameters)", String(format: "%.0f", peakMemoryMB), String(format: "%.1f", tokensPerSecond),
                    String(format: "%.1f", seconds), loss(finalTrain), loss(bestValidation), loss(finalValidation),
                    String(format: "%.1f", Double(adapterBytes) / 1024)]
        }
    }

    static func markdown(_ rows: [Row]) -> String {
        func line(_ cells: [String]) -> String { "| " + cells.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |\n" }
        return line(Row.header) + "|" + Row.header.indices.map { $0 == 0 ? "---|" : "---:|" }.joined() + "\n" + rows.map { line($0.cells) }.joined()
    }

    static func csv(_ rows: [Row]) -> String {
        func field(_ s: String) -> String { s.contains(where: { ",\"\n".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }
        return ([Row.header] + rows.map(\.cells)).map { $0.map(field).joined(separator: ",") + "\n" }.joined()
    }
}
