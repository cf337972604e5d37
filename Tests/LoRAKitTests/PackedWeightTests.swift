import XCTest
@testable import LoRAKit

/// Rows stored as bfloat16: a stand-in for a quantized format, to test the panel-by-panel products.
final class BF16Rows: PackedMatrix, @unchecked Sendable {
    let rows: Int, columns: Int
    let bits: [UInt16]
    init(_ t: Tensor) {
        rows = t.shape[0]; columns = t.shape[1]
        bits = t.array.map(floatToBFloat16Bits)
    }
    var byteCount: Int { bits.count * 2 }
    func unpack(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        for i in (range.lowerBound * columns)..<(range.upperBound * columns) {
            destination[i - range.lowerBound * columns] = bfloat16BitsToFloat(bits[i])
        }
    }
}

final class PackedWeightTests: XCTestCase {
    /// Packs every linear layer and the embedding of a model (BF16 rows) after rounding the dense
    /// copy the same way: both must give the same loss and adapter gradients.
    static var config: ModelConfig {
        var config = TrainingTests.tiny
        config.vocabSize = 3000  // with hidden 512 a panel is 2048 rows: the head and the MLP take two each
        config.hiddenSize = 512; config.intermediateSize = 2100; config.numHeads = 8; config.numKVHeads = 4
        return config
    }

    func build(packed: Bool, adapterConfig: any AdapterConfiguration = LoRAConfig(r: 4, targetModules: .allLinear)) throws -> (LlamaModel, Adapter) {
            let config = Self.config
            let m = LlamaModel.random(config: config, seed: 21)
            let round: (Tensor) -> FrozenMatrix = { t in
                let p = BF16Rows(t)
                return packed ? FrozenMatrix(packed: p) : FrozenMatrix(FrozenMatrix(packed: p).expanded())
            }
            let embedding = round(m.embedding.expanded())
            let blocks = m.blocks.map { b in
                TransformerBlock(attentionNorm: b.attentionNorm, q: Linear(matrix: round(b.q.weight)), k: Linear(matrix: round(b.k.weight)),
                                 v: Linear(matrix: round(b.v.weight)), o: Linear(matrix: round(b.o.weight)), mlpNorm: b.mlpNorm,
                                 gate: Linear(matrix: round(b.gate.weight)), up: Linear(matrix: round(b.up.weight)),
                                 down: Linear(matrix: round(b.down.weight)))
            }
            let model = LlamaModel(config: config, embedding: embedding, blocks: blocks, norm: m.norm, head: Linear(matrix: embedding))
            let adapter = try Adapter.attach(to: model, config: adapterConfig, seed: 3)
            let loras = adapter.sites(of: LoRA.self).map(\.adapter) + adapter.sites(of: DoRA.self).map(\.adapter.lora)
            for lora in loras { for i in 0..<lora.b.value.count { lora.b.value[i] = 0.01 * Float(i % 5) - 0.02 } }
            return (model, adapter)
    }

    func testPackedModelTrainsLikeItsDenseExpansion() throws {
        let (dense, denseAdapter) = try build(packed: false), (packed, packedAdapter) = try build(packed: true)
        XCTAssertTrue(packed.blocks[0].gate.matrix.isPacked && packed.embedding.isPacked && packed.headIsTied)
        XCTAssertGreaterThan(packed.blocks[0].gate.matrix.rows, packed.blocks[0].gate.matrix.panelRows)  // several panels
        let ids: [Int32] = (0..<24).map { Int32(($0 * 37) % 3000) }
        let batch = Batch(batchSize: 2, seqLen: 12, inputIds: ids, labels: ids)
        let l1 = try dense.forwardBackward(batch), l2 = try packed.forwardBackward(batch)
        XCTAssertEqual(l1, l2, accuracy: 1e-6 * l1)
        for (p, q) in zip(denseAdapter.parameters, packedAdapter.parameters) {
            XCTAssertLessThan(relativeError(q.grad.array, p.grad.array), 1e-5, p.name)
        }
        // Merging a packed layer expands it first; unmerging restores the expanded W0.
        let w0 = packed.blocks[1].up.weight.array
        try packedAdapter.merge()
        XCTAssertFalse(packed.blocks[1].up.matrix.isPacked)
        try packedAdapter.unmerge()
        XCTAssertLessThanOrEqual(zip(packed.blocks[1].up.weight.array, w0).map { abs($0 - $1) }.max()!, 1e-6)
    }
}

extension PackedWeightTests {
    /// DoRA on a packed base reads its row norms from the expanded panels: the same magnitudes, loss
    /// and gradients as on the dense expansion, several panels per matrix included.
    func testDoRAOnAPackedBaseTrainsLikeOnItsDenseExpansion() throws {
        let config = LoRAConfig(r: 4, targetModules: .allLinear, useDoRA: true)
        let (dense, denseAdapter) = try build(packed: false, adapterConfig: config)
        let (packed, packedAdapter) = try build(packed: true, adapterConfig: config)
        XCTAssertGreaterThan(packed.blocks[0].gate.matrix.rows, packed.blocks[0].gate.matrix.panelRows)
        for (d, p) in zip(denseAdapter.sites(of: DoRA.self), packedAdapter.sites(of: DoRA.self)) {
            XCTAssertLessThan(relativeError(p.adapter.magnitude.value.array, d.adapter.magnitude.value.array), 1e-6, d.site.path)
        }
        let ids: [Int32] = (0..<24).map { Int32(($0 * 37) % 3000) }
        let batch = Batch(batchSize: 2, seqLen: 12, inputIds: ids, labels: ids)
        let l1 = try dense.forwardBackward(batch), l2 = try packed.forwardBackward(batch)
        XCTAssertEqual(l1, l2, accuracy: 1e-6 * l1)
        for (p, q) in zip(denseAdapter.parameters, packedAdapter.parameters) {
            XCTAssertLessThan(relativeError(q.grad.array, p.grad.array), 1e-5, p.name)
        }
    }

    /// Token-by-token decoding takes the packed row-dot path (no panels): same logits as dense.
    func testPackedDecodingMatchesDense() throws {
        let (dense, _) = try build(packed: false), (packed, _) = try build(packed: true)
        let c1 = KVCache(model: dense, capacity: 8), c2 = KVCache(model: packed, capacity: 8)
        _ = try dense.forward(tokens: [3, 1000, 7], cache: c1)
        _ = try packed.forward(tokens: [3, 1000, 7], cache: c2)
        for t: Int32 in [2999, 5, 64] {
            let a = try dense.forward(tokens: [t], cache: c1), b = try packed.forward(tokens: [t], cache: c2)
            XCTAssertLessThan(relativeError(b.array, a.array), 1e-5)
        }
    }
}
