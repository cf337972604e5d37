import Foundation

/// A method's own part in every optimizer step, for methods that do more than descend the model's
/// loss: AdaLoRA adds an orthogonality penalty and moves rank between layers after each update;
/// LoRA-Drop measures its layers during a probe.
public protocol TrainingHook: AnyObject {
    /// Called after the batches' backward pass and before clipping: adds the gradient of the method's
    /// own loss term to the parameters' gradients and returns the term, which the step's loss includes.
    func addLossTerm(step: Int) -> Double
    /// Called after the optimizer's update of `step` (counted from 1).
    func afterUpdate(step: Int)
    /// What the hook carries from step to step, which checkpoints keep so that a resumed run goes on
    /// bit for bit: tensors under unique names, and the rest as JSON.
    var checkpointTensors: [(name: String, value: Tensor)] { get }
    func checkpointState() throws -> Data?
    /// Restores what `checkpointState` returned (the tensors are read back by the checkpoint).
    func restore(checkpointState: Data?) throws
}

extension TrainingHook {
    public func addLossTerm(step: Int) -> Double { 0 }
    public func afterUpdate(step: Int) {}
    public var checkpointTensors: [(name: String, value: Tensor)] { [] }
    public func checkpointState() throws -> Data? { nil }
    public func restore(checkpointState: Data?) throws {}
}
