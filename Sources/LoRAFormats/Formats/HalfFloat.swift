// Conversions between Float32 and the two 16-bit float formats found in safetensors files:
// IEEE 754 half precision (F16) and bfloat16 (BF16). Plain bit manipulation, so the results are
// identical on every platform; narrowing rounds to nearest, ties to even.

/// Converts IEEE half-precision bits to Float. Exact for every input (Float holds every half value).
func float16BitsToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32(h >> 10) & 0x1F
    let mantissa = UInt32(h & 0x03FF)
    if exponent == 0x1F {
        // Infinity (mantissa 0) or NaN; the NaN payload moves to the top of the Float mantissa.
        return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    if exponent == 0 {
        // Zero or subnormal: the value is mantissa × 2^-24, which Float represents exactly.
        let magnitude = Float(mantissa) * 0x1p-24
        return sign == 0 ? magnitude : -magnitude
    }
    // Normal: rebias the exponent from 15 to 127.
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

/// Converts a Float to IEEE half-precision bits, rounding to nearest (ties to even).
/// Values too large become infinity, values too small become (signed) zero or a subnormal, NaN stays NaN.
func floatToFloat16Bits(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    let sign = UInt16(truncatingIfNeeded: bits >> 16) & 0x8000
    let exponent = Int((bits >> 23) & 0xFF)
    let mantissa = bits & 0x007F_FFFF

    if exponent == 0xFF {
        if mantissa == 0 { return sign | 0x7C00 }  // infinity
        // NaN: keep the top payload bits and force the quiet bit so it cannot turn into infinity.
        return sign | 0x7E00 | UInt16(truncatingIfNeeded: mantissa >> 13)
    }

    let halfExponent = exponent - 127 + 15
    if halfExponent >= 0x1F { return sign | 0x7C00 }  // too large: infinity

    if halfExponent <= 0 {
        // The result is a half subnormal (or zero). Anything below 2^-25 (which includes every
        // Float subnormal) rounds to zero.
        if halfExponent < -10 { return sign }
        let significand = mantissa | 0x0080_0000  // 24 bits with the implicit leading one
        let shift = UInt32(14 - halfExponent)    // 14...24
        return sign | UInt16(roundShiftRight(significand, by: shift))
    }

    // Normal half: drop 13 mantissa bits. A carry out of the mantissa correctly bumps the exponent,
    // and from the largest exponent produces infinity (0x7C00).
    let combined = (UInt32(halfExponent) << 23) | mantissa
    return sign | UInt16(roundShiftRight(combined, by: 13))
}

/// `value >> shift`, rounded to nearest with ties to even. `shift` must be in 1...31.
@inline(__always)
private func roundShiftRight(_ value: UInt32, by shift: UInt32) -> UInt32 {
    let kept = value >> shift
    let remainder = value & ((1 << shift) - 1)
    let halfway: UInt32 = 1 << (shift - 1)
    if remainder > halfway || (remainder == halfway && kept & 1 == 1) {
        return kept + 1
    }
    return kept
}

/// Converts bfloat16 bits to Float. Exact: bfloat16 is the top half of a Float.
package func bfloat16BitsToFloat(_ b: UInt16) -> Float {
    Float(bitPattern: UInt32(b) << 16)
}

/// Converts a Float to bfloat16 bits, rounding to nearest (ties to even). NaN stays NaN.
package func floatToBFloat16Bits(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    if f.isNaN {
        // Truncating could clear every remaining payload bit and give infinity; force the quiet bit.
        return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040
    }
    // Adding 0x7FFF (+1 when the kept part is odd) rounds to nearest even; overflow gives infinity.
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: rounded >> 16)
}

// MARK: - Whole buffers

/// Converts `count` little-endian F16 values at `source` (any alignment) into `destination`.
func convertFloat16ToFloat(_ source: UnsafeRawPointer, _ destination: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count {
        let bits = UInt16(littleEndian: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
        destination[i] = float16BitsToFloat(bits)
    }
}

/// Converts `count` little-endian BF16 values at `source` (any alignment) into `destination`.
func convertBFloat16ToFloat(_ source: UnsafeRawPointer, _ destination: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count {
        let bits = UInt16(littleEndian: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
        destination[i] = bfloat16BitsToFloat(bits)
    }
}
