// LoRA on a layer outside any language model: a two-layer MLP classifier whose first layer, fc1,
// gets a LoRA adapter. The base weights stay frozen; only A and B of fc1's adapter train. Then the
// adapter is merged into fc1 and the merged model must predict exactly what the unmerged one did.
//
//   swift run -c release MLPClassifier
import Foundation
import LoRAKit

let inputs = 16, hidden = 64, classes = 4, samples = 512
var random = SeededRandom(seed: 7)

// Data: four Gaussian clusters in 16 dimensions.
let centers = (0..<classes).map { _ in (0..<inputs).map { _ in random.normal() } }
var x = [Float](), labels = [Int32]()
for i in 0..<samples {
    let c = i % classes
    labels.append(Int32(c))
    x += (0..<inputs).map { centers[c][$0] + 0.8 * random.normal() }
}

// A frozen, randomly initialized MLP: fc1 (16 → 64), ReLU, fc2 (64 → 4).
@MainActor func randomWeight(_ out: Int, _ inp: Int) -> Tensor {
    let bound = 1 / Float(inp).squareRoot()
    return Tensor(shape: [out, inp], values: (0..<(out * inp)).map { _ in random.uniform(-bound, bound) })
}
let fc1 = Linear(weight: randomWeight(hidden, inputs), bias: Tensor(shape: [hidden]))
let fc2 = Linear(weight: randomWeight(classes, hidden))
let lora = LoRA(inFeatures: inputs, outFeatures: hidden, rank: 4, alpha: 8, name: "fc1", random: &random)
fc1.adapter = lora

// Buffers for the whole data set (one batch).
let h = Tensor(shape: [samples, hidden]), logits = Tensor(shape: [samples, classes])
let saved = Tensor(shape: [samples * fc1.savedFloatsPerRow(training: true)])
let dh = Tensor(shape: [samples, hidden])

/// Forward pass; returns the hidden activations' ReLU mask implicitly through h.
@MainActor func forward(training: Bool) {
    x.withUnsafeBufferPointer { xp in
        fc1.forward(x: xp.baseAddress!, rows: samples, y: h.data, saved: saved.data, training: training)
    }
    for i in 0..<h.count { h[i] = max(0, h[i]) }
    fc2.forward(x: h.data, rows: samples, y: logits.data, saved: nil, training: training)
}

@MainActor func predictions() -> [Int] {
    forward(training: false)
    return (0..<samples).map { r in (0..<classes).max { logits[r * classes + $0] < logits[r * classes + $1] }! }
}

@MainActor func accuracy() -> Double {
    Double(zip(predictions(), labels).filter { $0 == Int($1) }.count) / Double(samples)
}

print(String(format: "accuracy before training: %.1f%%", 100 * accuracy()))
let optimizer = AdamW(parameters: lora.parameters, learningRate: 0.02)
for step in 1...200 {
    optimizer.zeroGrad()
    forward(training: true)
    let loss = labels.withUnsafeBufferPointer {
        CrossEntropy.forwardBackward(logits: logits.data, targets: $0.baseAddress!, rows: samples, vocab: classes,
                                     gradScale: 1 / Float(samples))
    } / Double(samples)
    // Back through the frozen fc2 and the ReLU, into fc1's adapter.
    fc2.backward(dy: logits.data, x: h.data, rows: samples, saved: nil, dx: dh.data, accumulate: false)
    for i in 0..<dh.count where h[i] <= 0 { dh[i] = 0 }
    x.withUnsafeBufferPointer { xp in
        fc1.backward(dy: dh.data, x: xp.baseAddress!, rows: samples, saved: saved.data, dx: nil, accumulate: false)
    }
    optimizer.update()
    if step % 50 == 0 { print(String(format: "step %3d  loss %.4f", step, loss)) }
}
print(String(format: "accuracy after training:  %.1f%%", 100 * accuracy()))

let unmerged = predictions(), unmergedLogits = logits.array
try fc1.merge()
let merged = predictions(), mergedLogits = logits.array
let maxDiff = zip(unmergedLogits, mergedLogits).map { abs($0 - $1) }.max()!
print("merged predictions equal unmerged: \(merged == unmerged); largest logit difference: \(maxDiff)")
guard merged == unmerged, maxDiff < 1e-4 else { fatalError("merging changed the model's output") }
