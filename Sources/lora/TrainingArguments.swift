import Foundation
import LoRACommandLine
import LoRAKit

/// A training run's settings as `lora train` resolved them, under the long option names (the keys of
/// a -c file): saved with every step as training_args.json, so that `lora train --resume
/// --adapter-path A` needs no other option and the folder says how its adapter was made.
struct TrainingArguments {
    static let fileName = "training_args.json"
    private var values: [String: Any] = [:]

    subscript(key: String) -> Any? {
        get { values[key] }
        set {
            // A Float as its shortest decimal (1e-4, not 9.99999974737875e-05), which reads back as the same Float.
            if let f = newValue as? Float { values[key] = Double("\(f)")! } else { values[key] = newValue }
        }
    }

    func json() throws -> Data {
        try JSONSerialization.data(withJSONObject: values, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    }

    /// The settings saved in `folder`, or none when it has no such file (a run saved before this file existed).
    static func read(folder: String) throws -> ConfigFile {
        let path = folder + "/" + fileName
        guard FileManager.default.fileExists(atPath: path) else { return ConfigFile() }
        return try ConfigFile(path: path, allowedKeys: trainSettingNames)
    }
}
