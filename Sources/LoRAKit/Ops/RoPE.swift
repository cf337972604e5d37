import Foundation

/// Rotary position embedding in Hugging Face's "rotate half" layout: within each head of `headDim`
/// values, pair i rotates with pair i + headDim/2 by angle position · invFreq[i].
public struct RoPE: Sendable {
    public let headDim: Int
    public let invFreq: [Float]

    /// `llama3` is the config's rope_scaling of type "llama3"; `linearFactor` that of type "linear".
    public init(headDim: Int, theta: Float, llama3: Llama3RopeScaling? = nil, linearFactor: Float? = nil,
                frequencyFactors: [Float]? = nil) {
        self.headDim = headDim
        // Float32 throughout, as transformers computes it, so angles agree to the last bit or two.
        var freqs = (0..<(headDim / 2)).map { i -> Float in
            1 / Float(pow(Double(theta), Double(Float(2 * i) / Float(headDim))))
        }
        if let s = llama3 { freqs = s.apply(to: freqs) }
        if let f = linearFactor { freqs = freqs.map { $0 / f } }
        if let f = frequencyFactors, f.count == freqs.count { freqs = zip(freqs, f).map { $0 / $1 } }
        self.invFreq = freqs
    }

    /// cos and sin tables for positions 0..<length, each [length × headDim/2].
    public func tables(length: Int) -> (cos: [Float], sin: [Float]) {
        let half = headDim / 2
        var c = [Float](repeating: 0, count: length * half), s = c
        for p in 0..<length {
            for i in 0..<half {
                let angle = Float(p) * invFreq[i]
                c[p * half + i] = Float(Foundation.cos(Double(angle)))
                s[p * half + i] = Float(Foundation.sin(Double(angle)))
            }
        }
        return (c, s)
    }

    /// Rotates, in place, `rows` rows of `heads` heads; row r is at position firstPosition + r % seqLen
    /// (the tables must reach that far). `inverse` applies the transposed rotation: the backward pass.
    public func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, seqLen: Int, firstPosition: Int = 0,
                      cos: [Float], sin: [Float], inverse: Bool = false) {
        let half = headDim / 2, width = heads * headDim
        let sign: Float = inverse ? -1 : 1
        cos.withUnsafeBufferPointer { cb in
            sin.withUnsafeBufferPointer { sb in
                let cp = UncheckedBox(cb.baseAddress!), sp = UncheckedBox(sb.baseAddress!)
                Parallel.forRanges(rows, minChunk: 16) { range in
                    for r in range {
                        let p = firstPosition + r % seqLen
                        let c = cp.value + p * half, s = sp.value + p * half
                        for h in 0..<heads {
                            let v = x + r * width + h * headDim
                            for i in 0..<half {
                                let a = v[i], b = v[i + half], si = sign * s[i]
                                v[i] = a * c[i] - b * si
                                v[i + half] = b * c[i] + a * si
                            }
                        }
                    }
                }
            }
        }
    }
}

/// rope_scaling {"rope_type": "llama3", ...} of Llama 3.1+: long wavelengths are slowed by `factor`,
/// short ones kept, and the band between interpolated smoothly.
public struct Llama3RopeScaling: Sendable, Equatable {
    public var factor: Float
    public var lowFreqFactor: Float
    public var highFreqFactor: Float
    public var originalMaxPositions: Float

    public init(factor: Float, lowFreqFactor: Float, highFreqFactor: Float, originalMaxPositions: Float) {
        self.factor = factor
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.originalMaxPositions = originalMaxPositions
    }

    func apply(to invFreq: [Float]) -> [Float] {
        let lowWavelen = originalMaxPositions / lowFreqFactor
        let highWavelen = originalMaxPositions / highFreqFactor
        return invFreq.map { f in
            let wavelen = 2 * Float.pi / f
            if wavelen > lowWavelen { return f / factor }
            if wavelen < highWavelen { return f }
            let smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor)
            return (1 - smooth) * f / factor + smooth * f
        }
    }
}
