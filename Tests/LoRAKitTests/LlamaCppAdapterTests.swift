import Foundation
import XCTest
@testable import LoRAKit

final class LlamaCppAdapterTests: XCTestCase {
    /// PEFT's adapters (the fixtures), written in llama.cpp's format and read back onto a fresh model:
    /// every module's ΔW is PEFT's, for plain LoRA on Llama (q/k rows permuted in the file) and for
    /// Qwen2 with rsLoRA and rank/alpha patterns (scalings folded into B, ranks per module).
    func testReadsBackWhatPEFTsAdapterMeans() throws {
        for name in ["llama_tied", "qwen2_bias"] {
            let model = try LlamaModel.load(folder: fixturesPath + "/\(name)/model")
            let peft = try Adapter.load(from: fixturesPath + "/\(name)/adapter", into: model)
            let path = try temporaryDirectory() + "/adapter.gguf"
            try peft.saveLlamaCpp(to: path)
            let fresh = try LlamaModel.load(folder: fixturesPath + "/\(name)/model")
            let read = try Adapter.loadLlamaCpp(from: path, into: fresh)
            let expected = Dictionary(uniqueKeysWithValues: peft.sites(of: LoRA.self).map { ($0.site.path, $0.adapter.deltaWeight().array) })
            XCTAssertEqual(read.modules.count, expected.count, name)
            for (site, lora) in read.sites(of: LoRA.self) {
                XCTAssertLessThan(relativeError(lora.deltaWeight().array, try XCTUnwrap(expected[site.path])), 1e-6, "\(name) \(site.path)")
            }
        }
    }

    func testRefusesFilesThatAreNotLoRAAdapters() throws {
        let model = try LlamaModel.load(folder: fixturesPath + "/llama_tied/model")
        let folder = try temporaryDirectory()
        var notAdapter = GGUFWriter()
        notAdapter.set("general.architecture", .string("llama"))
        try notAdapter.write(to: folder + "/model.gguf")
        XCTAssertThrowsError(try Adapter.loadLlamaCpp(from: folder + "/model.gguf", into: model)) {
            XCTAssertTrue("\($0)".contains("is not a llama.cpp LoRA adapter"), "\($0)")
        }
        var lonely = GGUFWriter()
        for (key, value) in [("general.architecture", "llama"), ("general.type", "adapter"), ("adapter.type", "lora")] { lonely.set(key, .string(value)) }
        let a = [Float](repeating: 0.5, count: 2 * model.config.hiddenSize)
        try a.withUnsafeBufferPointer { try lonely.addTensor("blk.0.attn_v.weight.lora_a", rows: 2, columns: model.config.hiddenSize, values: $0, as: .F32) }
        try lonely.write(to: folder + "/lonely.gguf")
        XCTAssertThrowsError(try Adapter.loadLlamaCpp(from: folder + "/lonely.gguf", into: model)) {
            XCTAssertTrue("\($0)".contains("has no blk.0.attn_v.weight.lora_b"), "\($0)")
        }
    }
}
