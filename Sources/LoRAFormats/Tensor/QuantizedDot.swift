import LoRAKernels

/// Products of GGML-quantized rows with a few fp32 vectors, read straight from the blocks by a C
/// kernel (LoRAKernels' QuantizedDot.c): token-by-token generation, where every weight is read once
/// per token and expanding rows to Float32 first cost more than the products. The vectors are not
/// rounded (llama.cpp quantizes them to 8 bits), so the result is the Float32 product of the
/// dequantized weights up to the order of the sums.
public enum QuantizedDot {
    public enum Kernel: Sendable, CaseIterable { case avx512, avx2 }

    /// The types the kernels read.
    public static let types: [GGMLType] = [.Q4_0, .Q4_1, .Q8_0]

    /// The kernels this CPU can run, best first.
    public static let available: [Kernel] = {
        let cpu = CPUFeatures.current
        return (cpu.contains(.avx512F) ? [.avx512] : []) + (cpu.contains(.avx2FMA) ? [.avx2] : [])
    }()

    /// The kernel for rows of `type` now: the best this CPU has, following a forced matrix kernel
    /// (LORA_BLAS=avx2, or builtin for the portable route, which expands rows in Swift).
    public static func kernel(for type: GGMLType) -> Kernel? {
        guard types.contains(type) else { return nil }
        switch Gemm.backend {
        case .builtin: return nil
        case .avx2: return available.contains(.avx2) ? .avx2 : nil
        default: return available.first
        }
    }

    /// Runs `kernel` over `count` rows of `blocks` blocks each (see `PackedMatrix.dotProducts`).
    public static func run(_ kernel: Kernel, type: GGMLType, rows: UnsafeRawPointer, rowBytes: Int, count: Int, blocks: Int,
                           x: UnsafePointer<Float>, ldx: Int, nx: Int, beta: Float, y: UnsafeMutablePointer<Float>, ldy: Int) {
        precondition(types.contains(type) && (1...4).contains(nx), "QuantizedDot: \(type) rows against \(nx) vectors")
        precondition(available.contains(kernel), "QuantizedDot: this CPU cannot run \(kernel)")
        let w = rows.assumingMemoryBound(to: UInt8.self), id = Int32(type.rawValue)
        switch kernel {
        case .avx512: lora_qdot_avx512(id, w, Int64(rowBytes), Int64(count), Int64(blocks), x, Int64(ldx), Int64(nx), beta, y, Int64(ldy))
        case .avx2: lora_qdot_avx2(id, w, Int64(rowBytes), Int64(count), Int64(blocks), x, Int64(ldx), Int64(nx), beta, y, Int64(ldy))
        }
    }
}
