import Foundation

/// Everything a run needs to continue exactly where it stopped, in one safetensors file
/// (`checkpoint.safetensors` in the adapter folder): the adapter's tensors, AdamW's moments
/// ("optimizer.m.NAME", "optimizer.v.NAME") and, as JSON in the metadata, the step, the data
/// position, every dropout generator and the loss history. Saved with the adapter of the same step
/// by `StepCommit`, so a run killed at any moment leaves a whole checkpoint and adapter of one step.
struct TrainingCheckpoint {
    static let fileName = "checkpoint.safetensors"
    static let format = "swift-lora-checkpoint-1"

    struct State: Codable {
        var step: Int
        var settings: TrainingSettings
        var adapterConfig: String
        var dataFingerprint: UInt64
        var data: BatchStream.Position
        var dropoutRandom: [SeededRandom]
        var trainedTokens: Int
        var seconds: Double
        var history: TrainingHistory
    }

    static func save(_ state: State, optimizer: AdamW, to folder: String) throws {
        var writer = SafetensorsWriter()
        let json = try JSONEncoder().encode(state)
        writer.metadata = ["format": format, "state": String(decoding: json, as: UTF8.self)]
        for (i, p) in optimizer.parameters.enumerated() {
            writer.add(p.name, shape: p.value.shape, floats: UnsafeBufferPointer(p.value.buffer))
            writer.add("optimizer.m." + p.name, shape: p.value.shape, floats: UnsafeBufferPointer(optimizer.m[i].buffer))
            writer.add("optimizer.v." + p.name, shape: p.value.shape, floats: UnsafeBufferPointer(optimizer.v[i].buffer))
        }
        try writer.write(to: folder + "/" + fileName)
    }

    /// Reads the checkpoint in `folder` into the optimizer's parameters and moments; returns its state.
    static func load(from folder: String, into optimizer: AdamW) throws -> State {
        let path = folder + "/" + fileName
        guard FileManager.default.fileExists(atPath: path) else { throw LoRAError("\(folder) has no \(fileName) to resume from") }
        let file = try SafetensorsFile(path: path)
        let state = try state(of: file)
        for (i, p) in optimizer.parameters.enumerated() {
            for (name, tensor) in [(p.name, p.value), ("optimizer.m." + p.name, optimizer.m[i]), ("optimizer.v." + p.name, optimizer.v[i])] {
                guard let info = file.tensors[name], info.shape == tensor.shape else {
                    throw LoRAError("\(path) does not fit this adapter (tensor \(name) is missing or has another shape)")
                }
                try file.floats(name, into: tensor.data, count: tensor.count)
            }
        }
        return state
    }

    /// The training state in the checkpoint at `path`.
    static func state(at path: String) throws -> State { try state(of: SafetensorsFile(path: path)) }

    private static func state(of file: SafetensorsFile) throws -> State {
        guard file.metadata["format"] == format, let json = file.metadata["state"] else {
            throw LoRAError("\(file.path) is not a swift-lora training checkpoint")
        }
        do { return try JSONDecoder().decode(State.self, from: Data(json.utf8)) } catch {
            throw LoRAError("\(file.path) has an unreadable training state")
        }
    }

    /// FNV-1a over the examples' tokens and targets: tells whether a resumed run trains on the same data.
    static func fingerprint(_ set: DataSet) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: UInt64) { h = (h ^ v) &* 0x100_0000_01b3 }
        for e in set.examples {
            mix(UInt64(e.tokens.count))
            for (t, target) in zip(e.tokens, e.isTarget) { mix(UInt64(UInt32(bitPattern: t)) << 1 | (target ? 1 : 0)) }
        }
        return h
    }
}
