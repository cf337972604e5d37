// Quantization of Float32 values to GGML blocks: the plain types, the 32-value types and the K quants
// with 6-bit sub-block scales (Q4_K, Q5_K, Q6_K).
//
// Each quantizer follows ggml's reference quantizer (ggml-quants.c, quantize_row_*_ref: what
// llama-quantize writes without an importance matrix) step for step, in Float32, in the same order of
// operations and never fused, so the bytes are the reference's: the 32-value types byte for byte what
// gguf-py's `gguf.quants.quantize` writes (Fixtures/gguf/quantize_expected.safetensors), the K quants
// what ggml's C reference writes when compiled without contraction of multiply-adds (compared by hand
// on 16,384 varied values; a build that fuses them, as gcc -march=native does, can differ in a rounding).
//
// Non-finite values give meaningless blocks (ggml's reference asserts on them); callers check first.

extension GGMLType {
    /// Whether `GGMLQuant.quantize` can write this type.
    public var canQuantize: Bool {
        switch self {
        case .F32, .F16, .BF16, .Q4_0, .Q4_1, .Q5_0, .Q5_1, .Q8_0, .Q4_K, .Q5_K, .Q6_K: return true
        default: return false
        }
    }

    /// The types `GGMLQuant.quantize` can write, for messages.
    public static var quantizable: [GGMLType] { allCases.filter(\.canQuantize) }

    /// The type llama-quantize writes instead of this one for rows of `rowLength` values that do not
    /// split into its blocks: a K quant becomes the 32-value type of about the same size (Q4_K → Q5_0,
    /// Q5_K → Q5_1, Q6_K → Q8_0), and anything still incompatible F16, as convert_hf_to_gguf.py does.
    public func fallback(forRowLength rowLength: Int) -> GGMLType {
        if rowLength % blockSize == 0 { return self }
        let substitute: GGMLType? = switch self {
        case .Q4_K: .Q5_0
        case .Q5_K: .Q5_1
        case .Q6_K: .Q8_0
        default: nil
        }
        if let substitute, rowLength % substitute.blockSize == 0 { return substitute }
        return .F16
    }
}

extension GGMLQuant {
    /// Quantizes `values` to `type`, returning the blocks' bytes. The count must be a multiple of the
    /// type's block size and the type one of `GGMLType.quantizable`.
    public static func quantize(_ type: GGMLType, _ values: [Float]) throws -> [UInt8] {
        guard type.canQuantize else {
            throw LoRAError("LoRAKit cannot write GGML type \(type.name); it writes \(GGMLType.quantizable.map(\.name).joined(separator: ", ")).")
        }
        guard let byteCount = type.byteCount(forValues: values.count) else {
            throw LoRAError("Cannot quantize \(values.count) values to \(type.name): the count is not a multiple of its block size \(type.blockSize).")
        }
        return [UInt8](unsafeUninitializedCapacity: byteCount) { buffer, initialized in
            values.withUnsafeBufferPointer { source in
                if let from = source.baseAddress, let to = buffer.baseAddress {
                    quantize(type, from, count: values.count, into: UnsafeMutableRawPointer(to))
                }
            }
            initialized = byteCount
        }
    }

    /// Writes `type.byteCount(forValues: count)` bytes of `type` for the `count` floats at `source`.
    public static func quantize(_ type: GGMLType, _ source: UnsafePointer<Float>, count: Int, into destination: UnsafeMutableRawPointer) {
        precondition(type.canQuantize && count >= 0 && count % type.blockSize == 0, "\(type.name) quantizes whole blocks")
        let blocks = count / type.blockSize
        switch type {
        case .F32: destination.copyMemory(from: source, byteCount: count * 4)
        case .F16: for i in 0..<count { storeUInt16(floatToFloat16Bits(source[i]), destination, 2 * i) }
        case .BF16: for i in 0..<count { storeUInt16(floatToBFloat16Bits(source[i]), destination, 2 * i) }
        case .Q4_0: quantizeSymmetric(source, destination, blocks, bits: 4)
        case .Q5_0: quantizeSymmetric(source, destination, blocks, bits: 5)
        case .Q4_1: quantizeWithMinimum(source, destination, blocks, bits: 4)
        case .Q5_1: quantizeWithMinimum(source, destination, blocks, bits: 5)
        case .Q8_0: quantizeQ8_0(source, destination, blocks)
        case .Q4_K: quantizeKWithMins(source, destination, blocks, bits: 4)
        case .Q5_K: quantizeKWithMins(source, destination, blocks, bits: 5)
        case .Q6_K: quantizeQ6_K(source, destination, blocks)
        default: preconditionFailure("GGML type \(type.name) has no quantizer")
        }
    }

    // MARK: 32-value blocks

    /// Q4_0 and Q5_0: d (f16), then for Q5_0 the fifth bits (u32), then 16 bytes of nibbles.
    /// d is the value of largest magnitude over −2^(bits−1), so that value lands exactly on level 0.
    private static func quantizeSymmetric(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int, bits: Int) {
        let half = Float(1 << (bits - 1)), top = Int32(1 << bits) - 1
        let bytes = bits == 4 ? 18 : 22, quants = bits == 4 ? 2 : 6
        for b in 0..<blocks {
            let v = x + 32 * b, block = y + bytes * b
            var amax: Float = 0, extreme: Float = 0
            for j in 0..<32 where amax < abs(v[j]) { amax = abs(v[j]); extreme = v[j] }
            let d = extreme / -half
            let id: Float = d == 0 ? 0 : 1 / d
            storeUInt16(floatToFloat16Bits(d), block, 0)
            var high: UInt32 = 0
            for j in 0..<16 {
                let q0 = truncatedLevel(v[j] * id + (half + 0.5), top), q1 = truncatedLevel(v[j + 16] * id + (half + 0.5), top)
                block.storeBytes(of: (q0 & 0x0F) | (q1 & 0x0F) << 4, toByteOffset: quants + j, as: UInt8.self)
                high |= UInt32(q0 >> 4) << UInt32(j) | UInt32(q1 >> 4) << UInt32(j + 16)
            }
            if bits == 5 { block.storeBytes(of: high.littleEndian, toByteOffset: 2, as: UInt32.self) }
        }
    }

    /// Q4_1 and Q5_1: d, m (f16), then for Q5_1 the fifth bits (u32), then 16 bytes of nibbles;
    /// m is the block's minimum and d spreads the range over all levels.
    private static func quantizeWithMinimum(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int, bits: Int) {
        let levels = Float((1 << bits) - 1)
        let bytes = bits == 4 ? 20 : 24, quants = bits == 4 ? 4 : 8
        // ggml clamps Q4_1's levels to 15 but lets Q5_1's wrap (rounding can reach 32 only by an ulp).
        let top: Int32 = bits == 4 ? 15 : 255
        for b in 0..<blocks {
            let v = x + 32 * b, block = y + bytes * b
            var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
            for j in 0..<32 {
                if v[j] < lo { lo = v[j] }
                if v[j] > hi { hi = v[j] }
            }
            let d = (hi - lo) / levels
            let id: Float = d == 0 ? 0 : 1 / d
            storeUInt16(floatToFloat16Bits(d), block, 0)
            storeUInt16(floatToFloat16Bits(lo), block, 2)
            var high: UInt32 = 0
            for j in 0..<16 {
                let q0 = truncatedLevel((v[j] - lo) * id + 0.5, top), q1 = truncatedLevel((v[j + 16] - lo) * id + 0.5, top)
                block.storeBytes(of: (q0 & 0x0F) | (q1 & 0x0F) << 4, toByteOffset: quants + j, as: UInt8.self)
                high |= UInt32((q0 >> 4) & 1) << UInt32(j) | UInt32((q1 >> 4) & 1) << UInt32(j + 16)
            }
            if bits == 5 { block.storeBytes(of: high.littleEndian, toByteOffset: 4, as: UInt32.self) }
        }
    }

    /// Q8_0: d = max|x| / 127 (f16), q = x · (1/d) rounded half away from zero.
    private static func quantizeQ8_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int) {
        for b in 0..<blocks {
            let v = x + 32 * b, block = y + 34 * b
            var amax: Float = 0
            for j in 0..<32 { amax = Swift.max(amax, abs(v[j])) }
            let d = amax / 127
            let id: Float = d == 0 ? 0 : 1 / d
            storeUInt16(floatToFloat16Bits(d), block, 0)
            for j in 0..<32 {
                let q = (v[j] * id).rounded(.toNearestOrAwayFromZero)
                // C's float-to-int8 conversion: 128 (one rounding above 127) wraps to −128.
                let level = q.isFinite && abs(q) <= 128 ? Int8(truncatingIfNeeded: Int32(q)) : 0
                block.storeBytes(of: level, toByteOffset: 2 + j, as: Int8.self)
            }
        }
    }

    // MARK: K quants

    /// Q4_K and Q5_K: d, dmin (f16), eight 6-bit (scale, min) pairs packed in 12 bytes, then for Q5_K
    /// 32 bytes of fifth bits, then 128 bytes of nibbles. Each 32-value sub-block gets the best-fitting
    /// scale and minimum; those are quantized to 6 bits against the block's largest, and the values
    /// requantized with the scales as stored.
    private static func quantizeKWithMins(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int, bits: Int) {
        let top = Int32(1 << bits) - 1
        // ggml's search range per type: candidate scales (top + rmin + rdelta·k) / range, k = 0...steps.
        let (rmin, rdelta, steps): (Float, Float, Int) = bits == 4 ? (-1, 0.1, 20) : (-0.5, 0.1, 15)
        let bytes = bits == 4 ? 144 : 176, quants = bits == 4 ? 16 : 48
        var levels = [UInt8](repeating: 0, count: 256), scratch = [UInt8](repeating: 0, count: 32)
        var weights = [Float](repeating: 0, count: 32)
        var scales = [Float](repeating: 0, count: 8), mins = [Float](repeating: 0, count: 8)
        for b in 0..<blocks {
            let v = x + 256 * b, block = y + bytes * b
            var maxScale: Float = 0, maxMin: Float = 0
            for j in 0..<8 {
                let sub = v + 32 * j
                var sumX2: Float = 0
                for l in 0..<32 { sumX2 += sub[l] * sub[l] }
                let average = (sumX2 / 32).squareRoot()
                for l in 0..<32 { weights[l] = average + abs(sub[l]) }
                (scales[j], mins[j]) = levels.withUnsafeMutableBufferPointer { all in
                    fitScaleAndMin(sub, weights: weights, top: top, levels: all.baseAddress! + 32 * j,
                                   scratch: &scratch, rmin: rmin, rdelta: rdelta, steps: steps)
                }
                if scales[j] > maxScale { maxScale = scales[j] }
                if mins[j] > maxMin { maxMin = mins[j] }
            }
            let inverseScale: Float = maxScale > 0 ? 63 / maxScale : 0
            let inverseMin: Float = maxMin > 0 ? 63 / maxMin : 0
            let packed = block + 4
            for j in 0..<8 {
                // ggml stores nearest_int into a uint8_t before clamping: a negative scale wraps, then clamps to 63.
                let ls = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(inverseScale * scales[j])))
                let lm = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(inverseMin * mins[j])))
                if j < 4 {
                    packed.storeBytes(of: ls, toByteOffset: j, as: UInt8.self)
                    packed.storeBytes(of: lm, toByteOffset: j + 4, as: UInt8.self)
                } else {
                    packed.storeBytes(of: (ls & 0x0F) | (lm & 0x0F) << 4, toByteOffset: j + 4, as: UInt8.self)
                    packed.storeBytes(of: byte(packed, j - 4) | (ls >> 4) << 6, toByteOffset: j - 4, as: UInt8.self)
                    packed.storeBytes(of: byte(packed, j) | (lm >> 4) << 6, toByteOffset: j, as: UInt8.self)
                }
            }
            storeUInt16(floatToFloat16Bits(maxScale / 63), block, 0)
            storeUInt16(floatToFloat16Bits(maxMin / 63), block, 2)
            let d = half(block, 0), dmin = half(block, 2)
            for j in 0..<8 {
                let (sc, m) = scaleMin(packed, j)
                let dl = d * Float(sc)
                if dl == 0 { continue }  // keeps the levels of the fit
                let ml = dmin * Float(m)
                for i in 0..<32 {
                    levels[32 * j + i] = UInt8(clamping: Swift.max(0, Swift.min(top, nearestInt((v[32 * j + i] + ml) / dl))))
                }
            }
            if bits == 5 {
                for p in 0..<32 {
                    var h: UInt8 = 0
                    for k in 0..<8 { h |= (levels[32 * k + p] >> 4) << UInt8(k) }
                    block.storeBytes(of: h, toByteOffset: 16 + p, as: UInt8.self)
                }
            }
            // Sub-blocks 2k and 2k + 1 share 32 bytes: low and high nibbles.
            for k in 0..<4 {
                for p in 0..<32 {
                    let q = (levels[64 * k + p] & 0x0F) | (levels[64 * k + 32 + p] & 0x0F) << 4
                    block.storeBytes(of: q, toByteOffset: quants + 32 * k + p, as: UInt8.self)
                }
            }
        }
    }

    /// ggml's make_qkx2_quants (squared error): levels in 0...top and x ≈ scale · level + min with
    /// min ≤ 0, minimising the weighted error over steps + 1 candidate scales, each refined by least
    /// squares. Returns (scale, −min). A better fit moves `min`, and later candidates start from it.
    private static func fitScaleAndMin(_ x: UnsafePointer<Float>, weights w: [Float], top: Int32, levels: UnsafeMutablePointer<UInt8>,
                                       scratch: inout [UInt8], rmin: Float, rdelta: Float, steps: Int) -> (Float, Float) {
        let n = 32
        var lo = x[0], hi = x[0]
        var sumW = w[0], sumX = sumW * x[0]
        for i in 1..<n {
            if x[i] < lo { lo = x[i] }
            if x[i] > hi { hi = x[i] }
            sumW += w[i]
            sumX += w[i] * x[i]
        }
        if lo > 0 { lo = 0 }
        if hi == lo {
            for i in 0..<n { levels[i] = 0 }
            return (0, -lo)
        }
        var inverse = Float(top) / (hi - lo)
        var scale = 1 / inverse
        var bestError: Float = 0
        for i in 0..<n {
            levels[i] = UInt8(clamping: Swift.max(0, Swift.min(top, nearestInt(inverse * (x[i] - lo)))))
            let diff = scale * Float(levels[i]) + lo - x[i]
            bestError += w[i] * (diff * diff)
        }
        for step in 0...steps {
            inverse = (rmin + rdelta * Float(step) + Float(top)) / (hi - lo)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = Swift.max(0, Swift.min(top, nearestInt(inverse * (x[i] - lo))))
                scratch[i] = UInt8(l)
                let fl = Float(l)
                sumL += w[i] * fl
                sumL2 += w[i] * fl * fl
                sumXL += w[i] * fl * x[i]
            }
            let det = sumW * sumL2 - sumL * sumL
            guard det > 0 else { continue }
            var thisScale = (sumW * sumXL - sumX * sumL) / det
            var thisMin = (sumL2 * sumX - sumL * sumXL) / det
            if thisMin > 0 {
                thisMin = 0
                thisScale = sumXL / sumL2
            }
            var error: Float = 0
            for i in 0..<n {
                let diff = thisScale * Float(scratch[i]) + thisMin - x[i]
                error += w[i] * (diff * diff)
            }
            if error < bestError {
                for i in 0..<n { levels[i] = scratch[i] }
                bestError = error
                scale = thisScale
                lo = thisMin
            }
        }
        return (scale, -lo)
    }

    /// Q6_K: 128 bytes of low nibbles, 64 bytes of high bit pairs, sixteen signed 8-bit scales, d (f16).
    /// Each 16-value sub-block gets its best symmetric scale; the scales are quantized against the
    /// largest (d = that scale / −128) and the values requantized with the scales as stored.
    private static func quantizeQ6_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int) {
        var levels = [UInt8](repeating: 0, count: 256), scales = [Float](repeating: 0, count: 16)
        for b in 0..<blocks {
            let v = x + 256 * b, block = y + 210 * b
            var maxScale: Float = 0, maxAbsScale: Float = 0
            for j in 0..<16 {
                scales[j] = levels.withUnsafeMutableBufferPointer { fitSymmetricScale(v + 16 * j, levels: $0.baseAddress! + 16 * j) }
                if abs(scales[j]) > maxAbsScale {
                    maxAbsScale = abs(scales[j])
                    maxScale = scales[j]
                }
            }
            if maxAbsScale < groupMaxEpsilon {
                block.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
                continue
            }
            let inverse = -128 / maxScale
            storeUInt16(floatToFloat16Bits(1 / inverse), block, 208)
            for j in 0..<16 {
                block.storeBytes(of: Int8(truncatingIfNeeded: Swift.min(127, nearestInt(inverse * scales[j]))), toByteOffset: 192 + j, as: Int8.self)
            }
            let d = half(block, 208)
            for j in 0..<16 {
                let dl = d * Float(block.load(fromByteOffset: 192 + j, as: Int8.self))
                if dl == 0 { continue }  // keeps the levels of the fit
                for i in 0..<16 {
                    levels[16 * j + i] = UInt8(Swift.max(-32, Swift.min(31, nearestInt(v[16 * j + i] / dl))) + 32)
                }
            }
            // Value 128h + 32k + p: low nibble in ql byte 64h + 32(k % 2) + p (high half when k ≥ 2),
            // high bits 2k..2k+1 of qh byte 32h + p.
            for h in 0..<2 {
                for p in 0..<32 {
                    let e = 128 * h + p
                    let l0 = levels[e], l1 = levels[e + 32], l2 = levels[e + 64], l3 = levels[e + 96]
                    block.storeBytes(of: (l0 & 0x0F) | (l2 & 0x0F) << 4, toByteOffset: 64 * h + p, as: UInt8.self)
                    block.storeBytes(of: (l1 & 0x0F) | (l3 & 0x0F) << 4, toByteOffset: 64 * h + 32 + p, as: UInt8.self)
                    block.storeBytes(of: l0 >> 4 | (l1 >> 4) << 2 | (l2 >> 4) << 4 | (l3 >> 4) << 6,
                                     toByteOffset: 128 + 32 * h + p, as: UInt8.self)
                }
            }
        }
    }

    /// ggml's make_qx_quants for 16 values, 6 bits, weights x²: levels l + 32 with l in −32...31 and
    /// x ≈ scale · l, the scale chosen among 19 candidates around 32 / max by weighted least squares.
    private static func fitSymmetricScale(_ x: UnsafePointer<Float>, levels: UnsafeMutablePointer<UInt8>) -> Float {
        let n = 16, top: Int32 = 32
        var extreme: Float = 0, amax: Float = 0
        for i in 0..<n where abs(x[i]) > amax {
            amax = abs(x[i])
            extreme = x[i]
        }
        if amax < groupMaxEpsilon {
            for i in 0..<n { levels[i] = 0 }
            return 0
        }
        func level(_ v: Float) -> Int32 { Swift.max(-top, Swift.min(top - 1, nearestInt(v))) }
        var inverse = -Float(top) / extreme
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = level(inverse * x[i])
            levels[i] = UInt8(l + top)
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        var scale = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for k in -9...9 where k != 0 {
            inverse = -(Float(top) + 0.1 * Float(k)) / extreme
            sumLX = 0
            sumL2 = 0
            for i in 0..<n {
                let w = x[i] * x[i], fl = Float(level(inverse * x[i]))
                sumLX += w * x[i] * fl
                sumL2 += w * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n { levels[i] = UInt8(level(inverse * x[i]) + top) }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }

    /// Below this largest magnitude ggml treats a group as all zeros (GROUP_MAX_EPS).
    private static let groupMaxEpsilon: Float = 1e-15
}

// MARK: Helpers

/// ggml's nearest_int: adding 1.5 · 2^23 leaves the rounded integer (ties to even) in the low mantissa
/// bits, for |f| ≤ 2^22. Never traps, whatever `f` is.
@inline(__always)
private func nearestInt(_ f: Float) -> Int32 {
    Int32(bitPattern: (f + 12_582_912).bitPattern & 0x007F_FFFF) - 0x0040_0000
}

/// C's `MIN(top, (int8_t)v)` for the level formulas of the 32-value types, whose `v` is ≥ 0 for finite
/// input; anything else (NaN from non-finite input) gives 0.
@inline(__always)
private func truncatedLevel(_ v: Float, _ top: Int32) -> UInt8 {
    guard v >= 0 else { return 0 }
    return UInt8(truncatingIfNeeded: Swift.min(top, Int32(Swift.min(v, 127))))
}

@inline(__always)
private func storeUInt16(_ value: UInt16, _ p: UnsafeMutableRawPointer, _ offset: Int) {
    p.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
}
