import Foundation
import XCTest
@testable import LoRAKit

/// The committed PyTorch fixtures (written by scripts/make_fixtures.py).
let fixturesPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

func temporaryDirectory(_ name: String = #function) throws -> String {
    let dir = NSTemporaryDirectory() + "lora-tests-\(getpid())-\(name.filter { $0.isLetter || $0.isNumber })-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// max |a − b| / max(max |b|, floor): the error relative to the reference's scale.
func relativeError(_ a: UnsafeBufferPointer<Float>, _ b: [Float], floor: Float = 1e-12) -> Float {
    precondition(a.count == b.count, "sizes differ: \(a.count) vs \(b.count)")
    var maxDiff: Float = 0, scale: Float = floor
    for i in 0..<b.count {
        maxDiff = max(maxDiff, abs(a[i] - b[i]))
        scale = max(scale, abs(b[i]))
    }
    return maxDiff / scale
}

func relativeError(_ a: [Float], _ b: [Float], floor: Float = 1e-12) -> Float {
    a.withUnsafeBufferPointer { relativeError($0, b, floor: floor) }
}

/// Fills a tensor with seeded uniform values in [-scale, scale).
func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var r = SeededRandom(seed: seed)
    let t = Tensor(shape: shape)
    for i in 0..<t.count { t[i] = r.uniform(-scale, scale) }
    return t
}
