// GGML tensor types, their block layouts, and dequantization to Float32 (GGMLQuantize.swift writes them).
//
// A quantized row is a sequence of blocks; each block packs `blockSize` consecutive values into
// `bytesPerBlock` bytes (scales as IEEE half floats, quants as packed integers). The formulas below
// follow ggml's reference layout and evaluate in the same Float32 order as gguf-py's
// `gguf.quants.dequantize` (one multiply, then one add or subtract, never fused), so results are
// bit-identical to it; Tests/LoRAKitTests/Fixtures/gguf holds the oracle's outputs.
//
// Everything works on raw little-endian bytes at any alignment, one block at a time, with no
// allocation: a caller can expand any range of rows of a quantized matrix into a Float buffer.

/// A GGML tensor element type, with the numbering used in GGUF files.
public enum GGMLType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case F32 = 0, F16 = 1
    case Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9
    case Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15
    case IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23
    case I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28
    case IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41

    /// The name ggml and gguf-py use ("Q4_K", "BF16", ...).
    public var name: String {
        switch self {
        case .F32: return "F32"
        case .F16: return "F16"
        case .Q4_0: return "Q4_0"
        case .Q4_1: return "Q4_1"
        case .Q5_0: return "Q5_0"
        case .Q5_1: return "Q5_1"
        case .Q8_0: return "Q8_0"
        case .Q8_1: return "Q8_1"
        case .Q2_K: return "Q2_K"
        case .Q3_K: return "Q3_K"
        case .Q4_K: return "Q4_K"
        case .Q5_K: return "Q5_K"
        case .Q6_K: return "Q6_K"
        case .Q8_K: return "Q8_K"
        case .IQ2_XXS: return "IQ2_XXS"
        case .IQ2_XS: return "IQ2_XS"
        case .IQ3_XXS: return "IQ3_XXS"
        case .IQ1_S: return "IQ1_S"
        case .IQ4_NL: return "IQ4_NL"
        case .IQ3_S: return "IQ3_S"
        case .IQ2_S: return "IQ2_S"
        case .IQ4_XS: return "IQ4_XS"
        case .I8: return "I8"
        case .I16: return "I16"
        case .I32: return "I32"
        case .I64: return "I64"
        case .F64: return "F64"
        case .IQ1_M: return "IQ1_M"
        case .BF16: return "BF16"
        case .TQ1_0: return "TQ1_0"
        case .TQ2_0: return "TQ2_0"
        case .MXFP4: return "MXFP4"
        case .NVFP4: return "NVFP4"
        case .Q1_0: return "Q1_0"
        }
    }

    public var description: String { name }

    /// Values per block (1 for the plain types F32, F16, BF16 and the integer types).
    public var blockSize: Int { Self.layout(self).blockSize }

    /// Bytes per block.
    public var bytesPerBlock: Int { Self.layout(self).bytes }

    /// Whether `GGMLQuant` can turn this type into Float32.
    public var canDequantize: Bool {
        switch self {
        case .F32, .F16, .BF16, .Q4_0, .Q4_1, .Q5_0, .Q5_1, .Q8_0, .Q2_K, .Q3_K, .Q4_K, .Q5_K, .Q6_K: return true
        default: return false
        }
    }

    /// The types `GGMLQuant` can dequantize, for messages.
    public static var dequantizable: [GGMLType] { allCases.filter(\.canDequantize) }

    /// Bytes taken by `count` values, or nil when `count` is negative, not a multiple of the block
    /// size, or the byte count overflows.
    public func byteCount(forValues count: Int) -> Int? {
        let layout = Self.layout(self)
        guard count >= 0, count % layout.blockSize == 0 else { return nil }
        let (bytes, overflow) = (count / layout.blockSize).multipliedReportingOverflow(by: layout.bytes)
        return overflow ? nil : bytes
    }

    private static func layout(_ type: GGMLType) -> (blockSize: Int, bytes: Int) {
        let qk = 256  // QK_K, the super-block of the K and IQ types
        switch type {
        case .F32: return (1, 4)
        case .F16, .BF16: return (1, 2)
        case .Q4_0: return (32, 2 + 16)
        case .Q4_1: return (32, 2 + 2 + 16)
        case .Q5_0: return (32, 2 + 4 + 16)
        case .Q5_1: return (32, 2 + 2 + 4 + 16)
        case .Q8_0: return (32, 2 + 32)
        case .Q8_1: return (32, 4 + 4 + 32)
        case .Q2_K: return (qk, 2 + 2 + qk / 16 + qk / 4)
        case .Q3_K: return (qk, 2 + qk / 4 + qk / 8 + 12)
        case .Q4_K: return (qk, 2 + 2 + qk / 2 + 12)
        case .Q5_K: return (qk, 2 + 2 + qk / 2 + qk / 8 + 12)
        case .Q6_K: return (qk, 2 + qk / 2 + qk / 4 + qk / 16)
        case .Q8_K: return (qk, 4 + qk + qk / 8)
        case .IQ2_XXS: return (qk, 2 + qk / 4)
        case .IQ2_XS: return (qk, 2 + qk / 4 + qk / 32)
        case .IQ3_XXS: return (qk, 2 + qk / 4 + qk / 8)
        case .IQ1_S: return (qk, 2 + qk / 8 + qk / 16)
        case .IQ4_NL: return (32, 2 + 16)
        case .IQ3_S: return (qk, 2 + qk / 4 + qk / 8 + qk / 32 + 4)
        case .IQ2_S: return (qk, 2 + qk / 4 + qk / 16)
        case .IQ4_XS: return (qk, 2 + 2 + qk / 2 + qk / 64)
        case .I8: return (1, 1)
        case .I16: return (1, 2)
        case .I32: return (1, 4)
        case .I64, .F64: return (1, 8)
        case .IQ1_M: return (qk, qk / 8 + qk / 16 + qk / 32)
        case .TQ1_0: return (qk, 2 + 4 * 13)
        case .TQ2_0: return (qk, 2 + 64)
        case .MXFP4: return (32, 1 + 16)
        case .NVFP4: return (64, 4 + 32)
        case .Q1_0: return (128, 2 + 16)
        }
    }
}

/// Dequantization of GGML blocks to Float32 (and, in GGMLQuantize.swift, quantization).
public enum GGMLQuant {
    /// Expands `count` values of `type` starting at `source` (any alignment) into `destination`.
    /// `count` must be a multiple of the type's block size, and the type one of `GGMLType.dequantizable`.
    public static func dequantize(_ type: GGMLType, from source: UnsafeRawPointer,
                                  into destination: UnsafeMutablePointer<Float>, count: Int) throws {
        guard type.canDequantize else {
            throw LoRAError("LoRAKit cannot dequantize GGML type \(type.name); it reads \(GGMLType.dequantizable.map(\.name).joined(separator: ", ")).")
        }
        guard count >= 0, count % type.blockSize == 0 else {
            throw LoRAError("Cannot dequantize \(count) values of GGML type \(type.name): the count is not a multiple of its block size \(type.blockSize).")
        }
        dequantizeBlocks(type, source, destination, blocks: count / type.blockSize)
    }

    /// Expands rows `rows` of a row-major matrix of `type` whose row 0 starts at `matrix` and whose rows
    /// hold `rowLength` values each; the result (rows.count × rowLength floats) goes to `destination`.
    public static func dequantizeRows(_ type: GGMLType, matrix: UnsafeRawPointer, rowLength: Int, rows: Range<Int>,
                                      into destination: UnsafeMutablePointer<Float>) throws {
        guard let rowBytes = type.byteCount(forValues: rowLength) else {
            throw LoRAError("Cannot dequantize rows of \(rowLength) values of GGML type \(type.name): the row length is not a multiple of its block size \(type.blockSize).")
        }
        guard rows.lowerBound >= 0 else {
            throw LoRAError("Cannot dequantize rows \(rows) of a GGML \(type.name) matrix: the range starts below 0.")
        }
        try dequantize(type, from: matrix + rows.lowerBound * rowBytes, into: destination, count: rows.count * rowLength)
    }

    /// Dispatches to the per-type kernel. The type must be dequantizable.
    static func dequantizeBlocks(_ type: GGMLType, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, blocks: Int) {
        guard blocks > 0 else { return }
        switch type {
        case .F32: UnsafeMutableRawPointer(y).copyMemory(from: x, byteCount: blocks * 4)
        case .F16: convertFloat16ToFloat(x, y, count: blocks)
        case .BF16: convertBFloat16ToFloat(x, y, count: blocks)
        case .Q4_0: dequantizeQ4_0(x, y, blocks)
        case .Q4_1: dequantizeQ4_1(x, y, blocks)
        case .Q5_0: dequantizeQ5_0(x, y, blocks)
        case .Q5_1: dequantizeQ5_1(x, y, blocks)
        case .Q8_0: dequantizeQ8_0(x, y, blocks)
        case .Q2_K: dequantizeQ2_K(x, y, blocks)
        case .Q3_K: dequantizeQ3_K(x, y, blocks)
        case .Q4_K: dequantizeQ4_K(x, y, blocks)
        case .Q5_K: dequantizeQ5_K(x, y, blocks)
        case .Q6_K: dequantizeQ6_K(x, y, blocks)
        default: preconditionFailure("GGML type \(type.name) has no dequantization kernel")
        }
    }

    // MARK: 32-value blocks

    // Q4_0: d (f16), 16 bytes of nibbles. Value j < 16 is the low nibble of byte j, value j + 16
    // the high nibble; x = d · (q − 8).
    private static func dequantizeQ4_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 18, out = y + b * 32
            let d = half(block, 0)
            let qs = block + 2
            for j in 0..<16 {
                let q = byte(qs, j)
                out[j] = d * Float(Int32(q & 0x0F) - 8)
                out[j + 16] = d * Float(Int32(q >> 4) - 8)
            }
        }
    }

    // Q4_1: d, m (f16), 16 bytes of nibbles; x = d · q + m.
    private static func dequantizeQ4_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 20, out = y + b * 32
            let d = half(block, 0), m = half(block, 2)
            let qs = block + 4
            for j in 0..<16 {
                let q = byte(qs, j)
                out[j] = d * Float(q & 0x0F) + m
                out[j + 16] = d * Float(q >> 4) + m
            }
        }
    }

    // Q5_0: d (f16), qh (32 fifth bits, little-endian u32; bit j belongs to value j), 16 bytes of
    // nibbles; x = d · (q − 16).
    private static func dequantizeQ5_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 22, out = y + b * 32
            let d = half(block, 0)
            let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            let qs = block + 6
            for j in 0..<16 {
                let q = UInt32(byte(qs, j))
                let lo = (q & 0x0F) | (((qh >> UInt32(j)) & 1) << 4)
                let hi = (q >> 4) | (((qh >> UInt32(j + 16)) & 1) << 4)
                out[j] = d * Float(Int32(lo) - 16)
                out[j + 16] = d * Float(Int32(hi) - 16)
            }
        }
    }

    // Q5_1: d, m (f16), qh, 16 bytes of nibbles; x = d · q + m.
    private static func dequantizeQ5_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 24, out = y + b * 32
            let d = half(block, 0), m = half(block, 2)
            let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            let qs = block + 8
            for j in 0..<16 {
                let q = UInt32(byte(qs, j))
                let lo = (q & 0x0F) | (((qh >> UInt32(j)) & 1) << 4)
                let hi = (q >> 4) | (((qh >> UInt32(j + 16)) & 1) << 4)
                out[j] = d * Float(lo) + m
                out[j + 16] = d * Float(hi) + m
            }
        }
    }

    // Q8_0: d (f16), 32 signed bytes; x = q · d.
    private static func dequantizeQ8_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 34, out = y + b * 32
            let d = half(block, 0)
            let qs = block + 2
            for j in 0..<32 {
                out[j] = Float(qs.load(fromByteOffset: j, as: Int8.self)) * d
            }
        }
    }

    // MARK: 256-value super-blocks (K quants)

    // Q2_K: 16 scale bytes (low nibble: scale, high nibble: min, one pair per 16 values), 64 bytes of
    // 2-bit quants, d and dmin (f16). Value e = 128h + 32k + p (h < 2, k < 4, p < 32) is bits 2k..2k+1
    // of quant byte 32h + p; x = (d · scale) · q − (dmin · min).
    private static func dequantizeQ2_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 84, out = y + b * 256
            let scales = block, qs = block + 16
            let d = half(block, 80), dmin = half(block, 82)
            for h in 0..<2 {
                for k in 0..<4 {
                    let shift = UInt8(2 * k)
                    for half16 in 0..<2 {
                        let s = byte(scales, h * 8 + k * 2 + half16)
                        let dl = d * Float(s & 0x0F), ml = dmin * Float(s >> 4)
                        let base = h * 128 + k * 32 + half16 * 16
                        let q = qs + h * 32 + half16 * 16
                        for p in 0..<16 {
                            out[base + p] = dl * Float((byte(q, p) >> shift) & 3) - ml
                        }
                    }
                }
            }
        }
    }

    // Q3_K: 32 bytes of high-bit masks (bit k of byte p belongs to value 32k + p; a clear bit
    // subtracts 4), 64 bytes of 2-bit quants laid out as in Q2_K, 12 bytes of sixteen 6-bit scales
    // (biased by 32), d (f16); x = (d · scale) · q.
    private static func dequantizeQ3_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 110, out = y + b * 256
            let hmask = block, qs = block + 32, scales = block + 96
            let d = half(block, 108)
            for i in 0..<16 {
                // Low four bits: nibble i of bytes 0..7 (low nibbles first); high two bits: bits 2(i/4) of byte 8 + i%4.
                let low = i < 8 ? byte(scales, i) & 0x0F : byte(scales, i - 8) >> 4
                let high = (byte(scales, 8 + i % 4) >> UInt8(2 * (i / 4))) & 3
                let scale = Int32(low | (high << 4)) - 32
                let dl = d * Float(scale)
                // Values 16i ..< 16i + 16: e = 128h + 32k + p.
                let h = i / 8, k = (i % 8) / 2, p0 = (i % 2) * 16
                let shift = UInt8(2 * k), maskShift = UInt8(i / 2)
                let q = qs + h * 32 + p0
                for p in 0..<16 {
                    let low2 = Int32((byte(q, p) >> shift) & 3)
                    let bit = Int32((byte(hmask, p0 + p) >> maskShift) & 1)
                    out[16 * i + p] = dl * Float(low2 - ((bit ^ 1) << 2))
                }
            }
        }
    }

    /// The eight 6-bit (scale, min) pairs packed into 12 bytes, as in Q4_K and Q5_K:
    /// bytes 0-3 hold scales 0-3 (low 6 bits) and the top bits of scales 4-7, bytes 4-7 the same for
    /// the mins, bytes 8-11 the low nibbles of scales 4-7 (low) and mins 4-7 (high).
    @inline(__always)
    static func scaleMin(_ scales: UnsafeRawPointer, _ j: Int) -> (scale: UInt8, min: UInt8) {
        if j < 4 {
            return (byte(scales, j) & 0x3F, byte(scales, j + 4) & 0x3F)
        }
        let packed = byte(scales, j + 4)
        return ((packed & 0x0F) | ((byte(scales, j - 4) >> 2) & 0x30),
                (packed >> 4) | ((byte(scales, j) >> 2) & 0x30))
    }

    // Q4_K: d, dmin (f16), 12 bytes of scales/mins, 128 bytes of nibbles. Sub-block j (32 values) is
    // the low (j even) or high (j odd) nibbles of bytes 32(j/2) ..< 32(j/2) + 32;
    // x = (d · scale) · q − (dmin · min).
    private static func dequantizeQ4_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 144, out = y + b * 256
            let d = half(block, 0), dmin = half(block, 2)
            let scales = block + 4, qs = block + 16
            for pair in 0..<4 {
                let (s0, m0) = scaleMin(scales, 2 * pair), (s1, m1) = scaleMin(scales, 2 * pair + 1)
                let d0 = d * Float(s0), dm0 = dmin * Float(m0)
                let d1 = d * Float(s1), dm1 = dmin * Float(m1)
                let q = qs + 32 * pair, o = out + 64 * pair
                for p in 0..<32 {
                    let v = byte(q, p)
                    o[p] = d0 * Float(v & 0x0F) - dm0
                    o[p + 32] = d1 * Float(v >> 4) - dm1
                }
            }
        }
    }

    // Q5_K: as Q4_K with a fifth bit per value: bit j of qh byte p belongs to value 32j + p.
    private static func dequantizeQ5_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 176, out = y + b * 256
            let d = half(block, 0), dmin = half(block, 2)
            let scales = block + 4, qh = block + 16, qs = block + 48
            for pair in 0..<4 {
                let (s0, m0) = scaleMin(scales, 2 * pair), (s1, m1) = scaleMin(scales, 2 * pair + 1)
                let d0 = d * Float(s0), dm0 = dmin * Float(m0)
                let d1 = d * Float(s1), dm1 = dmin * Float(m1)
                let shift0 = UInt8(2 * pair), shift1 = UInt8(2 * pair + 1)
                let q = qs + 32 * pair, o = out + 64 * pair
                for p in 0..<32 {
                    let v = byte(q, p), h = byte(qh, p)
                    let q0 = (v & 0x0F) | (((h >> shift0) & 1) << 4)
                    let q1 = (v >> 4) | (((h >> shift1) & 1) << 4)
                    o[p] = d0 * Float(q0) - dm0
                    o[p + 32] = d1 * Float(q1) - dm1
                }
            }
        }
    }

    // Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales, d (f16).
    // Value e = 128h + r: low nibble (r / 64 selects low or high) of ql byte 64h + r % 64, high
    // bits 2(r / 32) of qh byte 32h + r % 32; x = (d · scale[e / 16]) · (q − 32).
    private static func dequantizeQ6_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let block = x + b * 210, out = y + b * 256
            let ql = block, qh = block + 128, scales = block + 192
            let d = half(block, 208)
            for i in 0..<16 {
                let dl = d * Float(scales.load(fromByteOffset: i, as: Int8.self))
                let h = i / 8, r0 = (i % 8) * 16
                let lowShift = UInt8(4 * (r0 / 64)), highShift = UInt8(2 * (r0 / 32))
                let lo = ql + 64 * h + r0 % 64, hi = qh + 32 * h + r0 % 32
                for p in 0..<16 {
                    let q = ((byte(lo, p) >> lowShift) & 0x0F) | (((byte(hi, p) >> highShift) & 3) << 4)
                    out[16 * i + p] = dl * Float(Int32(q) - 32)
                }
            }
        }
    }
}

// MARK: Byte access

@inline(__always)
func byte(_ p: UnsafeRawPointer, _ i: Int) -> UInt8 {
    p.load(fromByteOffset: i, as: UInt8.self)
}

/// The little-endian f16 at `p + offset` as Float.
@inline(__always)
func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    float16BitsToFloat(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}
