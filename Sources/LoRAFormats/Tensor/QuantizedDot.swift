import LoRAKernels

/// Products of GGML-quantized rows with a few fp32 vectors, read straight from the blocks by a C
/// kernel (LoRAKernels' QuantizedDot.c, QuantizedDotK.c, QuantizedDotNEON.c): token-by-token generation, where every weight is read once
/// per token and expanding rows to Float32 first cost more than the products. The vectors are not
/// rounded (llama.cpp quantizes them to 8 bits), so the result is the Float32 product of the
/// dequantized weights up to the order of the sums.
public enum QuantizedDot {
    public enum Kernel: Sendable, CaseIterable { case avx512, avx2, neon }

    /// The 32-value block types, which every kernel reads.
    static let blockTypes: [GGMLType] = [.Q4_0, .Q4_1, .Q5_0, .Q5_1, .Q8_0]

    /// The types the kernels read: the 32-value blocks, and those of Q4_K_M files (Q4_K, Q6_K, and Q5_0,
    /// llama-quantize's stand-in for Q4_K where rows do not split into 256 values).
    public static let types: [GGMLType] = blockTypes + [.Q4_K, .Q6_K]

    /// The types the 8-bit kernels read: all of `types`.
    public static let q8Types: [GGMLType] = types

    /// The kernels this CPU can run, best first.
    public static let available: [Kernel] = {
        let cpu = CPUFeatures.current
        return (cpu.contains(.avx512F) ? [.avx512] : []) + (cpu.contains(.avx2FMA) ? [.avx2] : [])
            + (cpu.contains(.neon) ? [.neon] : [])
    }()

    /// The types `kernel` reads (NEON: the 32-value blocks, not the K-quants yet).
    public static func types(for kernel: Kernel) -> [GGMLType] { kernel == .neon ? blockTypes : types }

    /// The kernel for rows of `type` now: the best this CPU has, following a forced matrix kernel
    /// (LORA_BLAS=avx2, or builtin for the portable route, which expands rows in Swift).
    public static func kernel(for type: GGMLType) -> Kernel? {
        guard let kernel = allowed(available, avx2: .avx2), types(for: kernel).contains(type) else { return nil }
        return kernel
    }

    /// The first of `kernels` (best first) that the matrix kernel in force allows: none on the portable
    /// route (LORA_BLAS=builtin), only the AVX2 one where AVX2 is forced.
    private static func allowed<K: Equatable>(_ kernels: [K], avx2: K) -> K? {
        switch Gemm.backend {
        case .builtin: nil
        case .avx2: kernels.contains(avx2) ? avx2 : nil
        default: kernels.first
        }
    }

    /// Runs `kernel` over `count` rows of `blocks` blocks each (see `PackedMatrix.dotProducts`).
    public static func run(_ kernel: Kernel, type: GGMLType, rows: UnsafeRawPointer, rowBytes: Int, count: Int, blocks: Int,
                           x: UnsafePointer<Float>, ldx: Int, nx: Int, beta: Float, y: UnsafeMutablePointer<Float>, ldy: Int) {
        precondition(types(for: kernel).contains(type) && (1...4).contains(nx), "QuantizedDot: \(type) rows against \(nx) vectors on \(kernel)")
        precondition(available.contains(kernel), "QuantizedDot: this CPU cannot run \(kernel)")
        let isK = !blockTypes.contains(type)
        let product = switch kernel {
        case .avx512: isK ? lora_qdot_k_avx512 : lora_qdot_avx512
        case .avx2: isK ? lora_qdot_k_avx2 : lora_qdot_avx2
        case .neon: lora_qdot_neon
        }
        product(Int32(type.rawValue), rows.assumingMemoryBound(to: UInt8.self), Int64(rowBytes), Int64(count), Int64(blocks),
                x, Int64(ldx), Int64(nx), beta, y, Int64(ldy))
    }

    /// Kernels that take the vectors rounded to 8 bits (`Q8Vectors`), as llama.cpp decodes: integer
    /// products per block, with VNNI's vpdpbusd or AVX2's vpmaddubsw.
    public enum Q8Kernel: Sendable, CaseIterable { case vnni, avx2 }

    /// The 8-bit kernels this CPU can run, best first.
    public static let q8Available: [Q8Kernel] = {
        let cpu = CPUFeatures.current
        return (cpu.contains(.avx512VNNI) ? [.vnni] : []) + (cpu.contains(.avx2FMA) ? [.avx2] : [])
    }()

    /// The 8-bit kernel for rows of `type` now, following a forced matrix kernel as `kernel(for:)` does.
    public static func q8Kernel(for type: GGMLType) -> Q8Kernel? {
        q8Types.contains(type) ? allowed(q8Available, avx2: .avx2) : nil
    }

    /// Runs `kernel` over `count` rows of `blocks` blocks each against `x`'s vectors.
    public static func run(_ kernel: Q8Kernel, type: GGMLType, rows: UnsafeRawPointer, rowBytes: Int, count: Int, blocks: Int,
                           x: Q8Vectors, beta: Float, y: UnsafeMutablePointer<Float>, ldy: Int) {
        precondition(q8Types.contains(type) && blocks * type.blockSize == x.length,
                     "QuantizedDot: \(type) rows of \(blocks) blocks against vectors of \(x.length)")
        precondition(q8Available.contains(kernel), "QuantizedDot: this CPU cannot run \(kernel)")
        let product = kernel == .vnni ? lora_qdot_q8_vnni : lora_qdot_q8_avx2
        x.values.withUnsafeBufferPointer { q in
            x.scales.withUnsafeBufferPointer { d in
                x.scaledSums.withUnsafeBufferPointer { f in
                    product(Int32(type.rawValue), rows.assumingMemoryBound(to: UInt8.self), Int64(rowBytes), Int64(count),
                            Int64(blocks), q.baseAddress!, d.baseAddress!, f.baseAddress!, Int64(x.length), Int64(x.count),
                            beta, y, Int64(ldy))
                }
            }
        }
    }
}

/// Up to 4 vectors rounded to 8 bits per block of 32 values, as llama.cpp rounds a token's activations
/// for quantized weights (its Q8_0, with the scale kept in fp32 rather than fp16): per block
/// d = max|x| / 127 and q = x / d rounded to nearest even, so each value is off by at most d / 2.
public struct Q8Vectors: Sendable {
    public let count: Int
    /// Values per vector, a multiple of 32.
    public let length: Int
    /// q, vector after vector.
    public let values: [Int8]
    /// d per block, and d·Σq per block (what the offsets of Q4_0, Q5_0 and the minimums multiply).
    public let scales: [Float]
    public let scaledSums: [Float]

    /// Rounds vectors r < count, x[r·ldx ..< r·ldx + length]; nil when length is not a multiple of 32
    /// or a value is not finite (the fp32 products then take them as they are).
    public init?(x: UnsafePointer<Float>, ldx: Int, count: Int, length: Int) {
        guard count >= 1, length > 0, length % 32 == 0 else { return nil }
        let blocks = length / 32
        var values = [Int8](repeating: 0, count: count * length)
        var scales = [Float](repeating: 0, count: count * blocks), sums = scales
        for r in 0..<count {
            for b in 0..<blocks {
                let src = x + r * ldx + b * 32
                var amax: Float = 0
                for i in 0..<32 {
                    let a = abs(src[i])
                    guard a <= .greatestFiniteMagnitude else { return nil }  // false for NaN too
                    amax = max(amax, a)
                }
                let d = amax / 127, inverse = d == 0 ? 0 : 1 / d
                var sum = 0
                for i in 0..<32 {
                    // Adding and taking away 1.5·2^23 rounds to the nearest integer, ties to even, for
                    // |v| ≤ 2^22 (here |v| ≤ 127), as llama.cpp's vectorized rounding does; no libm call.
                    let q = Int8(src[i] * inverse + 12_582_912 - 12_582_912)
                    values[r * length + b * 32 + i] = q
                    sum += Int(q)
                }
                scales[r * blocks + b] = d
                sums[r * blocks + b] = d * Float(sum)
            }
        }
        self.count = count
        self.length = length
        self.values = values
        self.scales = scales
        self.scaledSums = sums
    }
}
