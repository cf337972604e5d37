import Foundation

/// Checks on the values an adapter file holds (its structure is checked when it is loaded).
public enum AdapterValues {
    /// Throws, naming the tensor, when a float tensor of `folder`'s adapter_model.safetensors holds
    /// a NaN or ±Inf: such an adapter turns every output it touches into NaN.
    public static func requireFinite(folder: String) throws {
        let path = folder + "/adapter_model.safetensors"
        let file = try SafetensorsFile(path: path)
        for name in file.names where [.F32, .F16, .BF16, .F64].contains(file.tensors[name]!.dtype) {
            let values = try file.floats(name)
            if let i = values.withUnsafeBufferPointer({ firstNonFinite($0) }) {
                throw LoRAError("\(path): tensor \(name) holds a non-finite value (\(nonFiniteText(values[i]))) at index \(i); the adapter is broken")
            }
        }
    }
}
