import ArgumentParser
import Foundation
import LoRAKit

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Describe a model (Hugging Face folder, .gguf file, smollm2-135m) or a PEFT LoRA adapter folder.",
        discussion: """
            Reads headers and metadata only: nothing is dequantized and no base model is needed for an adapter. \
            For an adapter it lists every adapted site with the shapes of A and B, the scaling s and ‖ΔW‖_F = ‖s·B·A‖_F (computed at r×r cost); the total row gives \
            all trainable parameters and the root sum of squares of the sites' norms.
            """)

    @Argument(help: "A model folder, a .gguf file, smollm2-135m, a Hub id ORG/NAME, or an adapter folder.")
    var path: String

    func run() throws {
        try Lora.reportingErrors {
            let fm = FileManager.default
            var target = try ModelLocation.path(path)
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: target, isDirectory: &isDir) else { throw LoRAError("\(target) does not exist") }
            // A file of a model or adapter folder stands for the folder.
            let folderFiles = ["adapter_config.json", "adapter_model.safetensors", "config.json", "model.safetensors"]
            if !isDir.boolValue, folderFiles.contains((target as NSString).lastPathComponent) {
                target = (target as NSString).deletingLastPathComponent
                if target.isEmpty { target = "." }
                isDir = true
            }
            if isDir.boolValue {
                try StepCommit.recover(target)  // a training run killed while saving into this folder
                if fm.fileExists(atPath: target + "/adapter_config.json") {
                    let steps = try StepCommit.steps(in: target)
                    let peftType = try AdapterMethods.peftType(folder: target)
                    if peftType == AdaLoRAConfig.peftType {
                        let summary = try AdaLoRASummary.load(folder: target)
                        try AdapterValues.requireFinite(folder: target)
                        print(Self.describe(summary, trainingSteps: steps), terminator: "")
                    } else if peftType == VeRAConfig.peftType {
                        let summary = try VeRASummary.load(folder: target)
                        try AdapterValues.requireFinite(folder: target)
                        print(Self.describe(summary, trainingSteps: steps), terminator: "")
                    } else {
                        let summary = try AdapterSummary.load(folder: target)
                        try AdapterValues.requireFinite(folder: target)
                        print(Self.describe(summary, trainingSteps: steps), terminator: "")
                    }
                } else if fm.fileExists(atPath: target + "/config.json") {
                    print(Self.describe(try ModelSummary.load(folder: target)), terminator: "")
                } else {
                    throw LoRAError("\(target) is a folder with neither config.json (a Hugging Face model) nor adapter_config.json (a LoRA adapter)")
                }
            } else if Self.isGGUF(target) {
                print(Self.describe(try ModelSummary.load(gguf: target)), terminator: "")
            } else {
                throw LoRAError("\(target) is neither a model (a Hugging Face folder or a .gguf file) nor a LoRA adapter folder")
            }
        }
    }

    static func isGGUF(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: 4)) == Data("GGUF".utf8)
    }

    // MARK: formatting

    static func describe(_ m: ModelSummary) -> String {
        var rows: [(String, String)] = []
        func add(_ key: String, _ value: String?) { if let value { rows.append((key, value)) } }
        let isAdapter = m.ggufType == "adapter"
        let kind = isAdapter ? "llama.cpp LoRA adapter (GGUF v\(m.formatVersion ?? 0))"
            : m.format == .gguf ? "GGUF v\(m.formatVersion ?? 0) model" : "Hugging Face model folder"
        add("name", m.name)
        var arch = m.architecture
        if let c = m.architectureClass { arch += " (\(c))" }
        if !isAdapter { arch += m.supported ? "" : " — not supported by swift-lora" }
        add("architecture", arch)
        add("layers", m.layers.map(String.init))
        add("hidden size", m.hiddenSize.map(String.init))
        if let h = m.heads { add("heads / kv heads", "\(h) / \(m.kvHeads ?? h)") }
        add("head dim", m.headDim.map(String.init))
        add("intermediate size", m.intermediateSize.map(String.init))
        add("vocab", m.vocabSize.map(String.init))
        add("context length", m.contextLength.map(String.init))
        add("rope theta", m.ropeTheta.map { number($0) })
        add("rope scaling", m.ropeScaling)
        add("tied embeddings", m.tiedEmbeddings.map { $0 ? "yes" : "no" })
        add("lora alpha", m.adapterAlpha.map { number($0) })
        add("parameters", count(m.parameterCount))
        add("tensors", "\(m.tensorCount)")
        add(m.format == .gguf ? "ggml types" : "dtypes", m.tensorTypes.map { "\($0.name) ×\($0.count)" }.joined(separator: ", "))
        add(m.format == .gguf ? "file type" : "config dtype", m.declaredType)
        add("on disk", "\(bytes(m.diskBytes)) (\(grouped(m.diskBytes)) bytes)")
        if !isAdapter {
            add("tokenizer", m.tokenizer ?? "none")
            add("chat template", m.hasChatTemplate ? "yes" : "no")
        }
        return "\(m.path): \(kind)\n" + keyValues(rows)
    }

    /// `trainingSteps`: the steps stamped in the adapter and in the folder's checkpoint, when a training run saved them.
    static func describe(_ a: AdapterSummary, trainingSteps: (adapter: Int?, checkpoint: Int?) = (nil, nil)) -> String {
        let c = a.config
        var rows: [(String, String)] = []
        let method = "\(a.peftType) (rsLoRA: \(c.useRSLoRA ? "yes" : "no"), DoRA: \(a.useDoRA ? "yes" : "no"), init: \(a.initialization))"
        rows.append(("method", method))
        let s = c.useRSLoRA ? Double(c.loraAlpha) / Double(c.r).squareRoot() : Double(c.loraAlpha) / Double(c.r)
        rows.append(("r / alpha", "\(c.r) / \(number(Double(c.loraAlpha))) (s = \(c.useRSLoRA ? "alpha/√r" : "alpha/r") = \(number(s)))"))
        if !c.rankPattern.isEmpty {
            rows.append(("rank pattern", c.rankPattern.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")))
        }
        if !c.alphaPattern.isEmpty {
            rows.append(("alpha pattern", c.alphaPattern.sorted { $0.key < $1.key }.map { "\($0.key): \(number(Double($0.value)))" }.joined(separator: ", ")))
        }
        rows.append(("dropout", number(Double(c.loraDropout))))
        rows.append(("target modules", a.targetModules.joined(separator: ", ")))
        if let layers = c.layersToTransform { rows.append(("layers", layers.map(String.init).joined(separator: ", "))) }
        rows.append(("base model", c.baseModelNameOrPath ?? "(not recorded)"))
        if let t = a.taskType { rows.append(("task type", t)) }
        if let v = a.peftVersion { rows.append(("peft version", v)) }
        rows.append(("adapted sites", "\(a.sites.count)"))
        let sharing = a.sites.filter { $0.sharesWith != nil }
        if !sharing.isEmpty {
            let pairs = Set(sharing.compactMap(\.sharesWith)).count
            rows.append(("shared pairs", "\(sharing.count) sites read another site's A and B (\(pairs) pair\(pairs == 1 ? "" : "s"), as LoRA-Drop trains them)"))
        }
        rows.append(("trainable params", count(a.parameterCount)))
        rows.append(("dtypes", a.dtypes.map { "\($0.name) ×\($0.count)" }.joined(separator: ", ")))
        rows.append(("on disk", "\(bytes(a.diskBytes)) (\(grouped(a.diskBytes)) bytes)"))
        if trainingSteps.adapter != nil || trainingSteps.checkpoint != nil {
            let checkpoint = trainingSteps.checkpoint.map { "step \($0)" } ?? "none"
            rows.append(("training step", "\(trainingSteps.adapter.map(String.init) ?? "not recorded") (checkpoint: \(checkpoint))"))
        }
        var out = "\(a.folder): PEFT LoRA adapter\n" + keyValues(rows) + "\n"

        var header = ["site", "rank", "A", "B", "params", "s", "‖ΔW‖_F"]
        var table = a.sites.map { site in
            [site.path, "\(site.rank)", site.shapeA.map(String.init).joined(separator: "×"),
             site.shapeB.map(String.init).joined(separator: "×"), grouped(site.parameterCount), number(site.scaling),
             String(format: "%.6g", site.deltaNorm)] + (sharing.isEmpty ? [] : [site.sharesWith ?? ""])
        }
        let total = a.sites.reduce(0.0) { $0 + $1.deltaNorm * $1.deltaNorm }.squareRoot()
        table.append(["total", "", "", "", grouped(a.parameterCount), "", String(format: "%.6g", total)] + (sharing.isEmpty ? [] : [""]))
        var right = [false, true, true, true, true, true, true]
        if !sharing.isEmpty { header.append("pair of"); right.append(false) }
        out += alignedTable(header: header, rows: table, rightAligned: right, ruleBeforeLast: true)
        if a.useDoRA {
            out += "note: DoRA also rescales each column by its magnitude vector; ‖ΔW‖_F here is of s·B·A alone\n"
        }
        if !a.otherTensors.isEmpty {
            out += "note: \(a.otherTensors.count) other tensor(s), not LoRA parameters: \(a.otherTensors.joined(separator: ", "))\n"
        }
        for w in a.warnings { out += "warning: \(w)\n" }
        if let adapter = trainingSteps.adapter, let checkpoint = trainingSteps.checkpoint, adapter != checkpoint {
            out += "warning: the adapter is of step \(adapter) but checkpoint.safetensors of step \(checkpoint)\n"
        }
        return out
    }

    static func describe(_ a: VeRASummary, trainingSteps: (adapter: Int?, checkpoint: Int?) = (nil, nil)) -> String {
        let c = a.config
        var rows: [(String, String)] = [
            ("method", "VERA (shared random projections; per layer λ_d and λ_b train)"),
            ("r", "\(c.r) (d_initial \(number(Double(c.dInitial))), projection_prng_key \(c.projectionPRNGKey))"),
            ("projections", "vera_A \(a.projectionA.map(String.init).joined(separator: "×")), vera_B \(a.projectionB.map(String.init).joined(separator: "×"))"),
            ("dropout", number(Double(c.veraDropout))),
            ("target modules", "\(c.targetModules)"),
        ]
        rows += commonRows(layers: c.layersToTransform, baseModel: c.baseModelNameOrPath, sites: a.sites.count,
                           parameters: a.parameterCount, diskBytes: a.diskBytes, trainingSteps: trainingSteps)
        var out = "\(a.folder): PEFT VeRA adapter\n" + keyValues(rows) + "\n"
        var table = a.sites.map { site in
            [site.path, "\(site.rank)", "\(site.outFeatures)", grouped(site.rank + site.outFeatures),
             String(format: "%.6g", site.normD), String(format: "%.6g", site.normB)]
        }
        table.append(["total", "", "", grouped(a.parameterCount), "", ""])
        out += alignedTable(header: ["site", "λ_d", "λ_b", "params", "‖λ_d‖", "‖λ_b‖"], rows: table,
                            rightAligned: [false, true, true, true, true, true], ruleBeforeLast: true)
        return out
    }

    static func describe(_ a: AdaLoRASummary, trainingSteps: (adapter: Int?, checkpoint: Int?) = (nil, nil)) -> String {
        let c = a.config
        let ranks = a.sites.map(\.rank), mean = Double(ranks.reduce(0, +)) / Double(max(1, ranks.count))
        var rows: [(String, String)] = [
            ("method", "ADALORA (SVD form P·Λ·Q; rank moved between layers by importance)"),
            ("ranks", "init_r \(c.initR) → target_r \(c.targetR); final \(ranks.reduce(0, +)) in all, \(String(format: "%.2f", mean)) on average"
                + (c.rankPattern == nil ? " (no allocation yet: every site holds init_r)" : "")),
            ("schedule", "tinit \(c.tinit), tfinal \(c.tfinal), deltaT \(c.deltaT), total_step \(c.totalStep.map(String.init) ?? "not set")"),
            ("alpha", "\(number(Double(c.loraAlpha))) (s = \(String(format: "%.6g", Double(c.loraAlpha) / (Double(c.initR) + 1e-5))))"),
            ("dropout", number(Double(c.loraDropout))),
            ("target modules", "\(c.targetModules)"),
        ]
        rows += commonRows(layers: c.layersToTransform, baseModel: c.baseModelNameOrPath, sites: a.sites.count,
                           parameters: a.parameterCount, diskBytes: a.diskBytes, trainingSteps: trainingSteps)
        var out = "\(a.folder): PEFT AdaLoRA adapter\n" + keyValues(rows) + "\n"
        var table = a.sites.map { site in
            [site.path, "\(site.rank)", "\(site.outFeatures)×\(site.inFeatures)", grouped(site.parameterCount), String(format: "%.6g", site.normE)]
        }
        table.append(["total", "\(ranks.reduce(0, +))", "", grouped(a.parameterCount), ""])
        out += alignedTable(header: ["site", "rank", "W", "params", "‖Λ‖"], rows: table,
                            rightAligned: [false, true, true, true, true], ruleBeforeLast: true)
        return out
    }

    /// The rows every method's adapter description ends its settings with.
    static func commonRows(layers: [Int]?, baseModel: String?, sites: Int, parameters: Int, diskBytes: Int,
                           trainingSteps: (adapter: Int?, checkpoint: Int?)) -> [(String, String)] {
        var rows: [(String, String)] = []
        if let layers { rows.append(("layers", layers.map(String.init).joined(separator: ", "))) }
        rows.append(("base model", baseModel ?? "(not recorded)"))
        rows.append(("adapted sites", "\(sites)"))
        rows.append(("trainable params", count(parameters)))
        rows.append(("on disk", "\(bytes(diskBytes)) (\(grouped(diskBytes)) bytes)"))
        if trainingSteps.adapter != nil || trainingSteps.checkpoint != nil {
            let checkpoint = trainingSteps.checkpoint.map { "step \($0)" } ?? "none"
            rows.append(("training step", "\(trainingSteps.adapter.map(String.init) ?? "not recorded") (checkpoint: \(checkpoint))"))
        }
        return rows
    }

    /// "key   value" lines with the values in one column.
    static func keyValues(_ rows: [(String, String)]) -> String {
        let width = rows.map { $0.0.count }.max() ?? 0
        return rows.map { "  " + $0.0.padding(toLength: width + 2, withPad: " ", startingAt: 0) + $0.1 + "\n" }.joined()
    }

    /// Columns padded to their widest cell (counted in characters), two spaces apart.
    static func alignedTable(header: [String], rows: [[String]], rightAligned: [Bool], ruleBeforeLast: Bool) -> String {
        let all = [header] + rows
        let widths = header.indices.map { i in all.map { $0[i].count }.max()! }
        func line(_ cells: [String]) -> String {
            let padded = cells.indices.map { i -> String in
                let pad = String(repeating: " ", count: widths[i] - cells[i].count)
                return rightAligned[i] ? pad + cells[i] : cells[i] + pad
            }
            return "  " + padded.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) + "\n"
        }
        var out = line(header)
        for (i, row) in rows.enumerated() {
            if ruleBeforeLast && i == rows.count - 1 {
                out += "  " + String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1)) + "\n"
            }
            out += line(row)
        }
        return out
    }

    /// 1234567 → "1,234,567".
    static func grouped(_ n: Int) -> String {
        let digits = String(abs(n))
        var out = ""
        for (i, ch) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return (n < 0 ? "-" : "") + out
    }

    /// 134515008 → "134,515,008 (134.5M)"; 512 → "512".
    static func count(_ n: Int) -> String { n < 1000 ? "\(n)" : "\(grouped(n)) (\(short(n)))" }

    /// 134515008 → "134.5M".
    static func short(_ n: Int) -> String {
        let x = Double(n)
        if x >= 1e9 { return String(format: "%.2fB", x / 1e9) }
        if x >= 1e6 { return String(format: "%.1fM", x / 1e6) }
        if x >= 1e3 { return String(format: "%.1fK", x / 1e3) }
        return "\(n)"
    }

    static func bytes(_ n: Int) -> String {
        let x = Double(n)
        if n >= 1 << 30 { return String(format: "%.2f GiB", x / Double(1 << 30)) }
        if n >= 1 << 20 { return String(format: "%.1f MiB", x / Double(1 << 20)) }
        if n >= 1 << 10 { return String(format: "%.1f KiB", x / Double(1 << 10)) }
        return "\(n) B"
    }

    /// Integers without a fraction, others with up to 6 significant digits.
    static func number(_ x: Double) -> String {
        x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(format: "%.6g", x)
    }
}
