import Foundation

/// What the trainer and checkpoints need of an optimizer: the parameters it trains, their two
/// Adam moments (checkpoints save them by parameter name), the step counter, and one update from the
/// current gradients at the learning rate the trainer sets each step.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    /// The run's learning rate for the next update (schedule applied); parameter groups scale it.
    var learningRate: Float { get set }
    /// First and second moments, one each per parameter, in `parameters` order.
    var m: [Tensor] { get }
    var v: [Tensor] { get }
    var step: Int { get }
    /// Applies one update from the parameters' current gradients.
    func update()
    /// Restores the step counter (when resuming from a checkpoint; m and v are restored by the caller).
    func restore(step: Int)
}

extension Optimizer {
    public func zeroGrad() { for p in parameters { p.grad.zero() } }
}
