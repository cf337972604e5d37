import Foundation
import XCTest
@testable import LoRAKit

final class GGUFExportTests: XCTestCase {
    /// llama.cpp's adapter: alpha/r · B_cpp·A, with B_cpp's q/k rows moved back to Hugging Face's
    /// order, must equal each module's ΔW, for plain LoRA on Llama (q/k permuted) and for Qwen2
    /// with rsLoRA and rank/alpha patterns (per-module scalings folded into B).
    func testLlamaCppAdapterReproducesEveryDelta() throws {
        for name in ["llama_tied", "qwen2_bias"] {
            let model = try LlamaModel.load(folder: fixturesPath + "/\(name)/model")
            let adapter = try Adapter.load(from: fixturesPath + "/\(name)/adapter", into: model)
            let path = try temporaryDirectory() + "/adapter.gguf"
            try adapter.saveLlamaCpp(to: path)
            let file = try GGUFFile(path: path)
            XCTAssertEqual(try file.string("general.type"), "adapter")
            XCTAssertEqual(try file.string("adapter.type"), "lora")
            XCTAssertEqual(try file.string("general.architecture"), name == "qwen2_bias" ? "qwen2" : "llama")
            let alpha = try file.float("adapter.lora.alpha")
            XCTAssertEqual(file.tensors.count, 2 * adapter.modules.count)
            for (site, lora) in adapter.sites(of: LoRA.self) {
                let base = LlamaModel.llamaCppName(site.path)! + ".weight"
                let a = try file.info(base + ".lora_a"), b = try file.info(base + ".lora_b")
                XCTAssertEqual(a.shape, [lora.inFeatures, lora.rank], "ggml order: fastest dimension first")
                XCTAssertEqual(b.shape, [lora.rank, lora.outFeatures])
                let A = Tensor(shape: [lora.rank, lora.inFeatures], values: try file.floats(base + ".lora_a"))
                let B = Tensor(shape: [lora.outFeatures, lora.rank], values: try file.floats(base + ".lora_b"))
                var delta = Tensor(shape: [lora.outFeatures, lora.inFeatures])
                Gemm.sgemm(transA: false, transB: false, m: lora.outFeatures, n: lora.inFeatures, k: lora.rank,
                           alpha: alpha / Float(lora.rank), a: B.data, lda: lora.rank, b: A.data, ldb: lora.inFeatures,
                           beta: 0, c: delta.data, ldc: lora.inFeatures)
                if name == "llama_tied" && (site.name == "q_proj" || site.name == "k_proj") {
                    let heads = site.name == "q_proj" ? model.config.numHeads : model.config.numKVHeads
                    let order = RopeRowOrder(BF16Rows(delta), heads: heads, headDim: model.config.headDim)
                    let back = Tensor(shape: delta.shape)
                    for r in 0..<delta.shape[0] { (back.data + r * delta.shape[1]).update(from: delta.data + order.sourceRow(r) * delta.shape[1], count: delta.shape[1]) }
                    delta = back
                }
                XCTAssertLessThan(relativeError(delta.array, lora.deltaWeight().array), 1e-6, "\(name) \(site.path)")
            }
        }
    }

    func testRopeRowOrderRoundTrips() {
        let t = Tensor(shape: [8, 3], values: (0..<24).map(Float.init))
        let cpp = LlamaModel.ropeRowsToLlamaCpp(t, heads: 2, headDim: 4)
        // Head 0 of 4 rows [r0 r1 r2 r3]: halves (r0 r1) and (r2 r3) interleave to r0 r2 r1 r3.
        XCTAssertEqual(Array(cpp.array[0..<12]), [0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11])
        let order = RopeRowOrder(BF16Rows(cpp), heads: 2, headDim: 4)
        let back = Tensor(shape: [8, 3])
        order.unpack(rows: 0..<8, into: back.data)
        XCTAssertEqual(back.array, t.array)
    }

    func testHuggingFaceBaseCannotBeWrittenAsGGUFYet() throws {
        let model = try LlamaModel.load(folder: fixturesPath + "/llama_tied/model")
        XCTAssertThrowsError(try model.saveGGUF(to: try temporaryDirectory() + "/m.gguf", type: .F32)) { e in
            XCTAssertTrue("\(e)".contains("GGUF base"), "\(e)")
        }
    }
}
