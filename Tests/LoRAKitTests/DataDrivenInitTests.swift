import Foundation
import XCTest
@testable import LoRAKit
@testable import LoRAFormats

/// PiSSA and OLoRA against PEFT (init_lora_weights="pissa" / "olora") on the llama_tied model, fixtures
/// from scripts/make_init_fixtures.py. SVD and QR fix each factor pair only up to sign, so A and B are
/// compared through s·B·A, which does not depend on the signs; losses and gradient norms do not either.
final class DataDrivenInitTests: XCTestCase {
    static func folder(_ name: String) -> String { fixturesPath + "/inits/" + name }

    /// llama_tied's model with a fresh PiSSA/OLoRA adapter on llama_tied's targets, and the reference.
    func load(_ method: LoRAInit) throws -> (PyTorchParityTests.Case, SafetensorsFile, LlamaModel) {
        let base = try PyTorchParityTests.load("llama_tied")
        try base.adapter.detach()
        var config = try LoRAConfig.load(path: fixturesPath + "/llama_tied/adapter/adapter_config.json")
        config.initialization = method
        config.loraDropout = 0
        let adapter = try Adapter.attach(to: base.model, config: config)
        let c = PyTorchParityTests.Case(model: base.model, adapter: adapter, reference: base.reference, batch: base.batch,
                                        realPositions: base.realPositions)
        return (c, try SafetensorsFile(path: Self.folder(method.name) + "/reference.safetensors"),
                try LlamaModel.load(folder: fixturesPath + "/llama_tied/model"))
    }

    /// s·B·A of every site against the reference's tensors with `prefix` ("init." or "step3.").
    func checkProducts(_ c: PyTorchParityTests.Case, _ reference: SafetensorsFile, _ prefix: String, tolerance: Float,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        for (site, lora) in c.adapter.sites(of: LoRA.self) {
            let a = try reference.floats(prefix + lora.a.name), b = try reference.floats(prefix + lora.b.name)
            let theirs = Tensor(shape: [lora.outFeatures, lora.inFeatures])
            Gemm.sgemm(transA: false, transB: false, m: lora.outFeatures, n: lora.inFeatures, k: lora.rank, alpha: lora.scaling,
                       a: b, lda: lora.rank, b: a, ldb: lora.inFeatures, beta: 0, c: theirs.data, ldc: lora.inFeatures)
            XCTAssertLessThan(relativeError(lora.deltaWeight().array, theirs.array), tolerance, "\(prefix) s·B·A of \(site.path)", file: file, line: line)
        }
    }

    func testInitAndResidualMatchPEFTAndLeaveTheModelUnchanged() throws {
        for method in [LoRAInit.pissa, .olora] {
            let (c, reference, _) = try load(method)
            // float32 SVDs of matrices with close singular values agree to about 1e-5 (measured 1.5e-5).
            try checkProducts(c, reference, "init.", tolerance: 5e-5)
            // The residual W − s·B·A inherits the SVDs' differences: 1.3e-5 with OpenBLAS 0.3.21's sgesdd on
            // a Sapphire Rapids-class Xeon (its generic kernels), under 1e-5 on the AMD machine before.
            for (site, _) in c.adapter.sites(of: LoRA.self) {
                XCTAssertLessThan(relativeError(site.linear.weight.array, try reference.floats("residual." + site.path + ".weight")), 5e-5,
                                  "\(method) residual of \(site.path)")
            }
            let reals = PyTorchParityTests.realLogits
            XCTAssertLessThan(relativeError(reals(try c.model.logits(c.batch).array, c), reals(try reference.floats("base_logits"), c)), 1e-5,
                              "\(method): W_res + s·B·A is W")
        }
    }

    func testThreeStepsMatchPEFTAndTheConvertedAdapterAppliesToTheOriginalBase() throws {
        for method in [LoRAInit.pissa, .olora] {
            let (c, reference, original) = try load(method)
            let optimizer = AdamW(parameters: c.adapter.parameters, learningRate: 1e-2, eps: 1e-4, weightDecay: 0.01)
            let trainer = Trainer(model: c.model, optimizer: optimizer, totalSteps: 3, maxGradNorm: 0.5)
            let losses = try reference.floats("losses"), norms = try reference.floats("grad_norms")
            for s in 0..<3 {
                let r = try trainer.step([c.batch])
                XCTAssertEqual(r.loss, Double(losses[s]), accuracy: 1e-5 * Double(losses[s]), "\(method) loss at step \(s + 1)")
                XCTAssertEqual(r.gradNorm, norms[s], accuracy: 1e-4 * norms[s], "\(method) grad norm at step \(s + 1)")
            }
            try checkProducts(c, reference, "step3.", tolerance: 1e-4)
            let reals = PyTorchParityTests.realLogits
            let trained = try c.model.logits(c.batch).array
            XCTAssertLessThan(relativeError(reals(trained, c), reals(try reference.floats("trained_logits"), c)), 1e-4, "\(method) trained")

            // Saved, it is PEFT's converted rank-2r LoRA: on the untouched base it gives the trained model.
            let folder = try temporaryDirectory()
            try c.adapter.save(to: folder)
            let saved = try LoRAConfig.load(path: folder + "/adapter_config.json")
            let peft = try LoRAConfig.load(path: Self.folder(method.name) + "/converted/adapter_config.json")
            XCTAssertEqual([saved.r, Int(saved.loraAlpha)], [peft.r, Int(peft.loraAlpha)])
            XCTAssertEqual(saved.initialization, .kaiming)
            let onOriginal = try Adapter.load(from: folder, into: original)
            XCTAssertEqual(onOriginal.sites(of: LoRA.self).first?.adapter.rank, 8)
            XCTAssertLessThan(relativeError(try original.logits(c.batch).array, trained), 1e-5, "\(method) converted on the original base")
            XCTAssertLessThan(relativeError(reals(try original.logits(c.batch).array, c), reals(try reference.floats("converted_logits"), c)), 1e-4)
            // And PEFT's own converted adapter loads here on the original base with its logits.
            let fresh = try LlamaModel.load(folder: fixturesPath + "/llama_tied/model")
            _ = try Adapter.load(from: Self.folder(method.name) + "/converted", into: fresh)
            XCTAssertLessThan(relativeError(reals(try fresh.logits(c.batch).array, c), reals(try reference.floats("converted_logits"), c)), 1e-5,
                              "\(method): PEFT's converted adapter")
        }
    }

    /// pissa_niter_K's randomized SVD finds the top-r triplets of a matrix with a spectral gap (tall and
    /// wide), and the init, like PiSSA's, leaves the model's outputs as they were.
    func testRandomizedSVDAndPiSSAWithIterations() throws {
        for (m, n) in [(40, 24), (24, 40)] {
            // W = Σ σ_i u_i v_iᵀ with σ = 10, 8, 6, then a tail of 0.01: rank 3 is well separated.
            let k = min(m, n)
            let (u, _, vt) = Factorization.svd(randomTensor([m, n], seed: 5).array, rows: m, columns: n)
            let sigma = (0..<k).map { $0 < 3 ? Float(10 - 2 * $0) : 0.01 }
            var w = [Float](repeating: 0, count: m * n)
            for i in 0..<m { for j in 0..<n { w[i * n + j] = (0..<k).reduce(0) { $0 + u[i * k + $1] * sigma[$1] * vt[$1 * n + j] } } }
            var random = SeededRandom(seed: 1)
            let approx = Factorization.randomizedSVD(w, rows: m, columns: n, rank: 3, iterations: 4, random: &random)
            XCTAssertLessThan(relativeError(approx.s, [10, 8, 6]), 1e-4, "\(m)×\(n) singular values")
            var back = [Float](repeating: 0, count: m * n), top = [Float](repeating: 0, count: m * n)
            for i in 0..<m { for j in 0..<n {
                back[i * n + j] = (0..<3).reduce(0) { $0 + approx.u[i * 3 + $1] * approx.s[$1] * approx.vt[$1 * n + j] }
                top[i * n + j] = (0..<3).reduce(0) { $0 + u[i * k + $1] * sigma[$1] * vt[$1 * n + j] }
            } }
            XCTAssertLessThan(relativeError(back, top), 1e-4, "\(m)×\(n) rank-3 part")
        }
        let (c, reference, _) = try load(.pissaIterations(4))
        let reals = PyTorchParityTests.realLogits
        XCTAssertLessThan(relativeError(reals(try c.model.logits(c.batch).array, c), reals(try reference.floats("base_logits"), c)), 1e-5)
        XCTAssertEqual(try LoRAConfig.load(path: Self.folder("pissa") + "/converted/adapter_config.json").initialization, .kaiming)
    }

    /// The built-in factorizations (used without LAPACK) against LAPACK's, on a tall and a wide matrix.
    func testBuiltInSVDAndQRAgreeWithLAPACK() throws {
        for (m, n) in [(7, 4), (4, 7)] {
            let w = randomTensor([m, n], seed: UInt64(m * 10 + n)).array
            let k = min(m, n)
            let lapack = Factorization.svd(w, rows: m, columns: n), builtin = Factorization.jacobiSVD(w, rows: m, columns: n)
            XCTAssertLessThan(relativeError(builtin.s, lapack.s), 1e-5, "singular values \(m)×\(n)")
            for (u, s, vt) in [lapack, builtin] {  // each reconstructs W
                var back = [Float](repeating: 0, count: m * n)
                for i in 0..<m { for j in 0..<n { back[i * n + j] = (0..<k).reduce(0) { $0 + u[i * k + $1] * s[$1] * vt[$1 * n + j] } } }
                XCTAssertLessThan(relativeError(back, w), 1e-5, "U·S·Vᵀ = W, \(m)×\(n)")
            }
            let lq = Factorization.qr(w, rows: m, columns: n), bq = Factorization.householderQR(w, rows: m, columns: n)
            XCTAssertLessThan(relativeError(bq.q, lq.q), 1e-5, "Q \(m)×\(n) (LAPACK's signs)")
            XCTAssertLessThan(relativeError(bq.r, lq.r), 1e-5, "R \(m)×\(n)")
        }
    }
}
