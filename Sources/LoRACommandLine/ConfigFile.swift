import Foundation
import LoRAKit
import Yams

/// A YAML file of command settings: a mapping whose keys are the command's long option names,
/// with dashes or underscores (`batch_size: 8` or `batch-size: 8`). Flags given on the command
/// line win over the file. JSON is YAML too: `lora train` reads back the training_args.json it
/// wrote with this type.
public struct ConfigFile {
    public let path: String
    private var values: [String: Node]
    /// Each setting's key as the file spells it, and the file it came from, for error messages.
    private var spelling: [String: String]
    private var origin: [String: String] = [:]

    /// An empty configuration, for runs without a file.
    public init() { path = ""; values = [:]; spelling = [:] }

    /// These settings, and those of `lower` that this file does not set.
    public func overlaid(on lower: ConfigFile) -> ConfigFile {
        var merged = self
        for (key, value) in lower.values where values[key] == nil {
            merged.values[key] = value
            merged.spelling[key] = lower.spelling[key]
            merged.origin[key] = lower.origin[key] ?? lower.path
        }
        return merged
    }

    /// Whether the file sets `key`.
    public func has(_ key: String) -> Bool { values[key] != nil }

    public init(path: String, allowedKeys: Set<String>) throws {
        self.path = path
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw LoRAError("cannot read config file \(path)") }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw LoRAError("\(path) is not valid YAML: \(String(describing: error).split(separator: "\n").joined(separator: " "))")
        }
        guard let root else { values = [:]; spelling = [:]; return }
        guard let mapping = root.mapping else { throw LoRAError("\(path) must be a mapping of setting: value") }
        var values: [String: Node] = [:], spelling: [String: String] = [:]
        for (key, value) in mapping {
            guard let name = key.string?.replacingOccurrences(of: "_", with: "-") else { throw LoRAError("\(path): a key is not a string") }
            guard allowedKeys.contains(name) else {
                // String(reflecting:) quotes and escapes the key, so the message stays one line.
                throw LoRAError("\(path): unknown setting \(String(reflecting: key.string!)) (the settings are the long option names, e.g. batch_size)")
            }
            values[name] = value
            spelling[name] = key.string!
        }
        self.values = values
        self.spelling = spelling
    }

    private func fail(_ key: String, _ kind: String) -> LoRAError {
        LoRAError("\(origin[key] ?? path): \(spelling[key] ?? key) must be \(kind)")
    }

    public func string(_ key: String) throws -> String? {
        guard let node = values[key] else { return nil }
        // A list (e.g. targets: [q_proj, v_proj]) reads as its comma-joined items.
        if let items = node.sequence {
            let strings = items.compactMap(\.string)
            guard strings.count == items.count else { throw fail(key, "a string or a list of strings") }
            return strings.joined(separator: ",")
        }
        guard let s = node.string, node.scalar != nil else { throw fail(key, "a string") }
        return s
    }

    public func int(_ key: String) throws -> Int? {
        guard let node = values[key] else { return nil }
        // Yams reads YAML 1.1's base-60 integers ("1:30") with arithmetic that traps on overflow (a fuzz
        // finding); no setting is one, so such a value is simply not an integer.
        guard let text = node.scalar?.string, !text.contains(":"), let v = node.int else { throw fail(key, "an integer") }
        return v
    }

    public func float(_ key: String) throws -> Float? {
        guard let node = values[key] else { return nil }
        guard let v = node.float else { throw fail(key, "a number") }
        return Float(v)
    }

    public func bool(_ key: String) throws -> Bool? {
        guard let node = values[key] else { return nil }
        guard let v = node.bool else { throw fail(key, "true or false") }
        return v
    }
}

/// The settings a `lora train` config file may hold: every long option but --config itself.
public let trainSettingNames: Set<String> = [
    "model", "data", "adapter-path", "iters", "epochs", "batch-size", "grad-accumulation-steps", "learning-rate", "lr-schedule",
    "warmup", "max-grad-norm", "weight-decay", "max-seq-length", "seed", "steps-per-report", "steps-per-eval", "val-batches",
    "save-every", "resume", "grad-checkpoint", "num-layers", "rank", "alpha", "dropout", "targets", "use-rslora", "init",
    "mask-prompt", "metrics-file", "method", "lora-plus-ratio", "use-dora", "projection-prng-key", "precision",
    "keep-checkpoints", "save-best", "init-r", "target-r", "tinit", "tfinal", "delta-t", "drop-probe-steps", "drop-sample-ratio",
    "drop-threshold",
]
