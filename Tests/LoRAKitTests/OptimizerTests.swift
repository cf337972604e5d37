import XCTest
@testable import LoRAKit

/// AdamW, clipping and schedules against values computed by hand (in Double) from PyTorch's and
/// transformers' published formulas.
final class OptimizerTests: XCTestCase {
    func testAdamWTwoStepsAtDefaultEpsMatchHandComputation() {
        let p = Parameter(name: "w", value: Tensor(shape: [3], values: [1, -2, 0.5]))
        let opt = AdamW(parameters: [p], learningRate: 0.1, weightDecay: 0.1)
        let grads: [[Double]] = [[0.5, -1e-3, 0], [0.25, 2e-3, -4]]
        var w: [Double] = [1, -2, 0.5], m = [0.0, 0, 0], v = [0.0, 0, 0]
        for (t, g) in grads.enumerated() {
            for i in 0..<3 { p.grad[i] = Float(g[i]) }
            opt.update()
            let step = Double(t + 1)
            for i in 0..<3 {
                w[i] *= 1 - 0.1 * 0.1
                m[i] = 0.9 * m[i] + 0.1 * g[i]
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i]
                let mHat = m[i] / (1 - pow(0.9, step)), vHat = v[i] / (1 - pow(0.999, step))
                w[i] -= 0.1 * mHat / (vHat.squareRoot() + 1e-8)
            }
            for i in 0..<3 { XCTAssertEqual(Double(p.value[i]), w[i], accuracy: 1e-6, "step \(t + 1) element \(i)") }
        }
        XCTAssertEqual(opt.step, 2)
    }

    func testClippingScalesToMaxNormAndReportsNormBeforeClipping() {
        let a = Parameter(name: "a", value: Tensor(shape: [2])), b = Parameter(name: "b", value: Tensor(shape: [1]))
        a.grad[0] = 3; a.grad[1] = 0; b.grad[0] = 4  // norm 5
        XCTAssertEqual(clipGradientNorm([a, b], maxNorm: 1), 5, accuracy: 1e-6)
        let coef = Float(1 / (5 + 1e-6))
        XCTAssertEqual(a.grad[0], 3 * coef, accuracy: 1e-7)
        XCTAssertEqual(b.grad[0], 4 * coef, accuracy: 1e-7)
        XCTAssertEqual(clipGradientNorm([a, b], maxNorm: 10), 1, accuracy: 1e-5)
        XCTAssertEqual(b.grad[0], 4 * coef, accuracy: 1e-7, "no clipping below the limit")
    }

    func testSchedulesFollowTransformersFormulas() {
        // warmup 2 of 10 steps: step 1 → 0.5; linear step 6 → (10 − 6) / 8; cosine step 6 → ½(1 + cos(π·4/8)).
        XCTAssertEqual(LRSchedule.linear.factor(step: 1, warmup: 2, totalSteps: 10), 0.5)
        XCTAssertEqual(LRSchedule.linear.factor(step: 6, warmup: 2, totalSteps: 10), 0.5)
        XCTAssertEqual(LRSchedule.cosine.factor(step: 6, warmup: 2, totalSteps: 10), 0.5, accuracy: 1e-7)
        XCTAssertEqual(LRSchedule.cosine.factor(step: 2, warmup: 2, totalSteps: 10), 1)
        XCTAssertEqual(LRSchedule.cosine.factor(step: 10, warmup: 2, totalSteps: 10), 0, accuracy: 1e-7)
        XCTAssertEqual(LRSchedule.constant.factor(step: 0, warmup: 2, totalSteps: 10), 0)
        XCTAssertEqual(LRSchedule.constant.factor(step: 7, warmup: 2, totalSteps: 10), 1)
        XCTAssertEqual(LRSchedule.linear.factor(step: 12, warmup: 2, totalSteps: 10), 0)
    }
}
