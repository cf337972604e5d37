/// A trainable tensor and its gradient, which backward passes accumulate into (+=).
public final class Parameter: @unchecked Sendable {
    public let name: String
    public let value: Tensor
    public let grad: Tensor

    public init(name: String, value: Tensor) {
        self.name = name
        self.value = value
        self.grad = Tensor(shape: value.shape)
    }

    /// Another name for `other`'s value and gradient (one tensor that several layers read and train).
    public init(name: String, sharing other: Parameter) {
        self.name = name
        self.value = other.value
        self.grad = other.grad
    }
}
