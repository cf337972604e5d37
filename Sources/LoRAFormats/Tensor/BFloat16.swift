import LoRAKernels

/// Float32 buffers rounded to bfloat16 and back, as the bf16 kernel rounds its operands (nearest
/// even, subnormals to zero: `lora_round_bf16`). Requires `Precision.bf16.isAvailable`.
public enum BFloat16 {
    /// destination[i] = bits of source[i] rounded to bfloat16, for i < count, over the threads.
    public static func round(_ source: UnsafePointer<Float>, count: Int, into destination: UnsafeMutablePointer<UInt16>) {
        precondition(Precision.bf16.isAvailable, "BFloat16.round: this CPU has no bf16 dot products")
        Parallel.forRanges(count, minChunk: 1 << 16) { range in
            lora_round_bf16(source + range.lowerBound, Int64(range.count), destination + range.lowerBound)
        }
    }

    /// destination[i] = source[i] as a Float (exact), for i < count, over the threads.
    public static func widen(_ source: UnsafePointer<UInt16>, count: Int, into destination: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(count, minChunk: 1 << 16) { range in
            convertBFloat16ToFloat(source + range.lowerBound, destination + range.lowerBound, count: range.count)
        }
    }
}
