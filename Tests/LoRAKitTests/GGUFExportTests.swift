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

    /// With no type given, every tensor is written in its type in the base, norms in F32, so each takes
    /// the base's bytes; the values are the base's requantized (within each type's resolution).
    func testGGUFExportKeepsEachTensorsTypeInTheBase() throws {
        // hidden 256, ffn 512: every row splits into 256-value blocks, so any type can hold any matrix.
        let types: [String: GGMLType] = [
            "token_embd.weight": .Q8_0, "blk.0.attn_q.weight": .Q4_K, "blk.0.attn_k.weight": .Q6_K,
            "blk.0.attn_v.weight": .Q5_K, "blk.0.attn_output.weight": .Q4_0, "blk.0.ffn_gate.weight": .Q4_1,
            "blk.0.ffn_up.weight": .Q5_0, "blk.0.ffn_down.weight": .F16,
        ]
        let shapes: [String: (Int, Int)] = [
            "token_embd.weight": (8, 256), "blk.0.attn_q.weight": (256, 256), "blk.0.attn_k.weight": (64, 256),
            "blk.0.attn_v.weight": (64, 256), "blk.0.attn_output.weight": (256, 256), "blk.0.ffn_gate.weight": (512, 256),
            "blk.0.ffn_up.weight": (512, 256), "blk.0.ffn_down.weight": (256, 512),
        ]
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        for (key, value) in [("embedding_length", 256), ("feed_forward_length", 512), ("block_count", 1),
                             ("attention.head_count", 4), ("attention.head_count_kv", 1), ("context_length", 64)] {
            w.set("llama." + key, .uint32(UInt32(value)))
        }
        var random = SeededRandom(seed: 3)
        for (name, (rows, columns)) in shapes.sorted(by: { $0.key < $1.key }) {
            let values = (0..<(rows * columns)).map { _ in random.normal() * 0.05 }
            try values.withUnsafeBufferPointer { try w.addTensor(name, rows: rows, columns: columns, values: $0, as: types[name]!) }
        }
        for name in ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"] {
            try [Float](repeating: 1, count: 256).withUnsafeBufferPointer { try w.addTensor(name, rows: nil, columns: 256, values: $0, as: .F32) }
        }
        let dir = try temporaryDirectory()
        try w.write(to: dir + "/base.gguf")

        let model = try LlamaModel.load(gguf: dir + "/base.gguf")
        try model.saveGGUF(to: dir + "/same.gguf", type: nil)
        let base = try GGUFFile(path: dir + "/base.gguf"), same = try GGUFFile(path: dir + "/same.gguf")
        XCTAssertEqual(Set(same.tensorNames), Set(base.tensorNames))
        for name in base.tensorNames {
            let type = try base.info(name).type
            XCTAssertEqual(try same.info(name).type, type, name)
            XCTAssertEqual(try same.info(name).byteCount, try base.info(name).byteCount, name)
            let original = try base.floats(name), written = try same.floats(name)
            let scale = original.map(abs).max()!
            // Requantizing values already on a grid moves them by at most about one step of it.
            let step: Float = [.Q4_0: 1.0 / 7, .Q4_1: 2.0 / 15, .Q4_K: 2.0 / 15, .Q5_0: 1.0 / 15, .Q5_K: 1.0 / 15, .Q6_K: 1.0 / 31, .Q8_0: 1.0 / 127][type] ?? 0
            XCTAssertLessThanOrEqual(zip(original, written).map { abs($0 - $1) }.max()!, step * scale, name)
        }
    }

    func testHuggingFaceBaseCannotBeWrittenAsGGUFYet() throws {
        let model = try LlamaModel.load(folder: fixturesPath + "/llama_tied/model")
        XCTAssertThrowsError(try model.saveGGUF(to: try temporaryDirectory() + "/m.gguf", type: .F32)) { e in
            XCTAssertTrue("\(e)".contains("GGUF base"), "\(e)")
        }
    }
}
