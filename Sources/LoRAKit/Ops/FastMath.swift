import Foundation

/// Vectorized exp for the softmax, cross-entropy and SiLU loops, where libm's scalar expf was a
/// sixth of a training step. exp(x) = 2ⁿ · exp(r) with n = round(x / ln 2) and |r| ≤ ln2 / 2; exp(r)
/// from a degree-7 Taylor polynomial (truncation below 1e-8 relative) and ln 2 split in two parts
/// (Cody–Waite) so r is exact. Max error about 2 ulp over the normal range; underflows to 0 below −87.
@inline(__always)
func fastExp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    var x = x
    x.replace(with: -87.3, where: x .< -87.3)
    x.replace(with: 88.3, where: x .> 88.3)
    // n = round(x / ln 2) without a float→int conversion (Swift's generic SIMD conversions are
    // scalar loops): adding 1.5·2²³ leaves n in the low mantissa bits of t.
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let t = x * 1.442_695_040_888_963_4 + magic
    let n = t - magic
    let r = x - n * 0.693_145_751_953_125 - n * 1.428_606_765_330_187_045e-06
    var p = SIMD8<Float>(repeating: 1.0 / 5040)
    p = p * r + 1.0 / 720
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    // 2ⁿ: the exponent field is n + 127; t's bits are 0x4B400000 + n.
    let tBits = unsafeBitCast(t, to: SIMD8<UInt32>.self)
    let scaleBits = (tBits &- 0x4B40_0000 &+ 127) &<< 23
    return p * unsafeBitCast(scaleBits, to: SIMD8<Float>.self)
}

/// Scalar form of `fastExp`, for loop tails, so every element gets the same rounding.
@inline(__always)
func fastExp(_ x: Float) -> Float { fastExp(SIMD8(repeating: x))[0] }

/// In place: row[i] = exp(row[i] − shift) for i < count; returns the sum (in Float, lane-wise then reduced).
@inline(__always)
func expShiftedSum(_ row: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    let s = SIMD8<Float>(repeating: shift)
    while i + 8 <= count {
        let raw = UnsafeMutableRawPointer(row + i)
        let e = fastExp(raw.loadUnaligned(as: SIMD8<Float>.self) - s)
        raw.storeBytes(of: e, as: SIMD8<Float>.self)
        acc += e
        i += 8
    }
    var sum = acc.sum()
    while i < count { let e = fastExp(row[i] - shift); row[i] = e; sum += e; i += 1 }
    return sum
}

/// The largest of row[0..<count] (−∞ for an empty row).
@inline(__always)
func rowMax(_ row: UnsafePointer<Float>, count: Int) -> Float {
    var m = SIMD8<Float>(repeating: -.infinity)
    var i = 0
    while i + 8 <= count {
        let v = UnsafeRawPointer(row + i).loadUnaligned(as: SIMD8<Float>.self)
        m.replace(with: v, where: v .> m)
        i += 8
    }
    var result = m.max()
    while i < count { result = max(result, row[i]); i += 1 }
    return result
}

/// row[i] *= scale for i < count.
@inline(__always)
func scaleRow(_ row: UnsafeMutablePointer<Float>, count: Int, by scale: Float) {
    var i = 0
    while i + 8 <= count {
        let raw = UnsafeMutableRawPointer(row + i)
        raw.storeBytes(of: raw.loadUnaligned(as: SIMD8<Float>.self) * scale, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count { row[i] *= scale; i += 1 }
}

/// Softmax in place over row[0..<valid] (the keys a causal query may see), zeros over
/// row[valid..<count]; returns the log-sum-exp of the valid part.
@inline(__always)
func causalSoftmaxRow(_ row: UnsafeMutablePointer<Float>, valid: Int, count: Int) -> Float {
    let mx = rowMax(row, count: valid)
    let sum = expShiftedSum(row, count: valid, shift: mx)
    scaleRow(row, count: valid, by: 1 / sum)
    (row + valid).update(repeating: 0, count: count - valid)
    return mx + log(sum)
}
