import Foundation

/// Inverted dropout on an adapter's input, as torch.nn.Dropout: draws the mask (0, or 1/(1 − rate)
/// to keep) for `rows` × `columns` values into `mask` and returns x ∘ mask in a new buffer for the
/// caller to free. A data-parallel rank (see `DropoutShare`) first and last draws the masks of the
/// rows other ranks compute and drops them.
func droppedInput(_ x: UnsafePointer<Float>, rows: Int, columns: Int, rate: Float, mask: UnsafeMutablePointer<Float>,
                  random: inout SeededRandom) -> UnsafeMutablePointer<Float> {
    let keep = 1 / (1 - rate), n = rows * columns, share = DropoutShare.rowsElsewhere
    for _ in 0..<(share.before * columns) { _ = random.next() }
    for i in 0..<n { mask[i] = random.uniform() < rate ? 0 : keep }
    for _ in 0..<(share.after * columns) { _ = random.next() }
    let dropped = UnsafeMutablePointer<Float>.allocate(capacity: n)
    for i in 0..<n { dropped[i] = x[i] * mask[i] }
    return dropped
}

/// The rows of the whole batch before and after the share a data-parallel rank computes (set by
/// `Trainer` around each share's forward and backward; zero otherwise). Their masks are drawn and
/// dropped, so that every row gets the mask one process gives it and every rank's generators move
/// as one process's do (and stay equal for checkpoints). Per thread: the adapters draw on the
/// thread that trains, and tests run ranks as threads of one process.
enum DropoutShare {
    private static let key = "LoRAKit.DropoutShare"

    static var rowsElsewhere: (before: Int, after: Int) {
        get { (Thread.current.threadDictionary[key] as? [Int]).map { ($0[0], $0[1]) } ?? (0, 0) }
        set { Thread.current.threadDictionary[key] = newValue == (0, 0) ? nil : [newValue.before, newValue.after] }
    }
}
