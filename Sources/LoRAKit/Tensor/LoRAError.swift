/// Every failure LoRAKit reports to a user: one sentence that names the file, tensor or value at fault.
public struct LoRAError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
