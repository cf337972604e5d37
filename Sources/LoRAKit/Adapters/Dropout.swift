/// Inverted dropout on an adapter's input, as torch.nn.Dropout: draws the mask (0, or 1/(1 − rate)
/// to keep) into `mask` and returns x ∘ mask in a new buffer of `count` floats for the caller to free.
func droppedInput(_ x: UnsafePointer<Float>, count n: Int, rate: Float, mask: UnsafeMutablePointer<Float>,
                  random: inout SeededRandom) -> UnsafeMutablePointer<Float> {
    let keep = 1 / (1 - rate)
    for i in 0..<n { mask[i] = random.uniform() < rate ? 0 : keep }
    let dropped = UnsafeMutablePointer<Float>.allocate(capacity: n)
    for i in 0..<n { dropped[i] = x[i] * mask[i] }
    return dropped
}
