import Foundation
import LoRAKit

/// The matrix products of one training step's linear layers, timed on each backend this machine
/// offers (`lora bench --products`), so our kernels and the BLAS found are compared on the same
/// shapes in one run, alternating backends round by round so they see the same load.
struct ProductBench {
    /// A distinct linear layer of a block (or the head): its weight is out × inp, and a step runs it
    /// `perStep` times (k_proj and v_proj, gate and up share a shape).
    struct Layer {
        let name: String, out: Int, inp: Int, perStep: Double
        /// Floating-point operations of one product (forward or input gradient) over `rows` rows.
        func flops(rows: Int) -> Double { 2 * Double(rows) * Double(out) * Double(inp) }
    }

    /// Rows of activations (batch × sequence length).
    let rows: Int
    let rounds: Int
    let layers: [Layer]
    /// LORA_BENCH_CPU_TIME=1: time the process's CPU rather than the wall clock (see `clock`).
    private let cpuTime = ProcessInfo.processInfo.environment["LORA_BENCH_CPU_TIME"] == "1"

    init(config c: ModelConfig, rows: Int, rounds: Int) {
        self.rows = rows
        self.rounds = rounds
        let d = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim, f = c.intermediateSize
        layers = [Layer(name: "q_proj", out: q, inp: d, perStep: 1), Layer(name: "k_proj/v_proj", out: kv, inp: d, perStep: 2),
                  Layer(name: "o_proj", out: d, inp: q, perStep: 1), Layer(name: "gate/up_proj", out: f, inp: d, perStep: 2),
                  Layer(name: "down_proj", out: d, inp: f, perStep: 1), Layer(name: "lm_head", out: c.vocabSize, inp: d, perStep: 1)]
    }

    /// What computes the products: an fp32 backend, or the bf16 kernel (`--precision bf16`).
    enum Route: CustomStringConvertible {
        case fp32(GemmBackend), bf16
        var description: String {
            switch self {
            case .fp32(let backend): "\(backend)"
            case .bf16: "bf16 (\(Precision.bf16Instructions))"
            }
        }
    }

    func run(json: Bool) {
        var backends: [Route] = GemmBackend.cpuKernels.map { .fp32($0) }
        if let blas = Gemm.availableBLAS { backends.append(.fp32(blas)) }
        if Precision.bf16.isAvailable { backends.insert(.bf16, at: 0) }
        // seconds[backend][layer][forward/backward] per round
        var seconds = Array(repeating: Array(repeating: [[Double]](repeating: [], count: 2), count: layers.count),
                            count: backends.count)
        for _ in 0..<rounds {
            for (b, route) in backends.enumerated() {
                func timeAll(precision: Precision) {
                    for (l, layer) in layers.enumerated() {
                        for backward in [false, true] {
                            seconds[b][l][backward ? 1 : 0].append(time(layer, backward: backward, precision: precision))
                        }
                    }
                }
                switch route {
                case .fp32(let backend): Gemm.withBackend(backend) { timeAll(precision: .fp32) }
                case .bf16: timeAll(precision: .bf16)
                }
            }
        }
        func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s[s.count / 2] }
        func gflops(_ b: Int, _ l: Int, _ dir: Int) -> Double {
            layers[l].flops(rows: rows) / median(seconds[b][l][dir]) / 1e9
        }
        // A step's product time, weighted by how often each layer runs.
        func stepRate(_ b: Int) -> Double {
            var flops = 0.0, time = 0.0
            for l in layers.indices {
                for dir in 0..<2 {
                    flops += layers[l].perStep * layers[l].flops(rows: rows)
                    time += layers[l].perStep * median(seconds[b][l][dir])
                }
            }
            return flops / time / 1e9
        }
        if json {
            for (b, backend) in backends.enumerated() {
                var perLayer: [String: Double] = [:]
                for (l, layer) in layers.enumerated() {
                    perLayer[layer.name + " forward"] = gflops(b, l, 0)
                    perLayer[layer.name + " backward"] = gflops(b, l, 1)
                }
                let line: [String: Any] = ["backend": "\(backend)", "rows": rows, "threads": Parallel.threadCount,
                                           "step_gflops": stepRate(b), "gflops": perLayer, "rounds": rounds]
                if let data = try? JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]) {
                    print(String(decoding: data, as: UTF8.self))
                }
            }
            return
        }
        print("matrix products of a step, \(rows) rows, \(Parallel.threadCount) threads, CPU features: \(CPUFeatures.current); GFLOP/s, median of \(rounds)")
        let names = backends.map { "\($0)" }
        let width = max(14, names.map(\.count).max() ?? 0) + 2
        func pad(_ s: String, _ w: Int) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
        print(pad("", 24) + names.map { pad($0, width) }.joined())
        for (l, layer) in layers.enumerated() {
            for dir in 0..<2 {
                let label = "\(layer.name) \(layer.out)x\(layer.inp) " + (dir == 0 ? "fwd" : "bwd")
                print(label + pad("", 24 - label.count) + backends.indices.map { pad(String(format: "%.1f", gflops($0, l, dir)), width) }.joined())
            }
        }
        print("step (weighted)" + pad("", 9) + backends.indices.map { pad(String(format: "%.1f", stepRate($0)), width) }.joined())
    }

    /// One product: forward y[rows×out] = x·Wᵀ, or the input gradient dx[rows×in] = dy·W.
    func time(_ layer: Layer, backward: Bool, precision: Precision = .fp32) -> Double {
        let out = layer.out, inp = layer.inp
        let w = Tensor(shape: [out, inp]), x = Tensor(shape: [rows, inp]), y = Tensor(shape: [rows, out])
        for i in 0..<w.count { w.data[i] = Float(i % 7) * 0.01 }
        for i in 0..<x.count { x.data[i] = Float(i % 5) * 0.01 }
        for i in 0..<y.count { y.data[i] = Float(i % 3) * 0.01 }
        let product = precision == .bf16 ? Gemm.sgemmBF16 : Gemm.sgemm
        let t0 = clock()
        if backward {
            product(false, false, rows, inp, out, 1, y.data, out, w.data, inp, 0, x.data, inp)
        } else {
            product(false, true, rows, out, inp, 1, x.data, inp, w.data, inp, 0, y.data, out)
        }
        return clock() - t0
    }

    /// Seconds: wall-clock, or with LORA_BENCH_CPU_TIME=1 the process's CPU time, which other jobs on a
    /// shared machine disturb much less (for comparing kernels there; divide by the threads for a rate).
    private func clock() -> Double {
        if cpuTime {
            var t = timespec()
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
            return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
        }
        return Double(DispatchTime.now().uptimeNanoseconds) / 1e9
    }
}

/// sgemm FLOP/s on the step's main shapes (the linear layers forward and backward) with the backend in
/// use, for `lora bench`'s fraction-of-sgemm line.
func measureGemmRate(config c: ModelConfig, rows n: Int) -> Double {
    let bench = ProductBench(config: c, rows: n, rounds: 1)
    var flops = 0.0, seconds = 0.0
    for layer in bench.layers {
        for backward in [false, true] {
            seconds += layer.perStep * bench.time(layer, backward: backward)
            flops += layer.perStep * layer.flops(rows: n)
        }
    }
    return flops / seconds
}
