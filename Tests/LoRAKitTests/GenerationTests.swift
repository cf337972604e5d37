import Foundation
import XCTest
@testable import LoRAKit

final class GenerationTests: XCTestCase {
    /// Greedy decoding with the KV cache and an unmerged adapter equals transformers' `generate`
    /// (fixtures from scripts/make_generation_fixtures.py) token for token.
    func testGreedyDecodingMatchesTransformers() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturesPath + "/generation.json"))
        let cases = try JSONSerialization.jsonObject(with: data) as! [String: [String: Any]]
        XCTAssertEqual(cases.count, 4)
        for (name, c) in cases {
            let model = try LlamaModel.load(folder: fixturesPath + "/\(name)/model")
            _ = try Adapter.load(from: fixturesPath + "/\(name)/adapter", into: model)
            let prompt = (c["prompt"] as! [Int]).map(Int32.init), expected = (c["generated"] as! [Int]).map(Int32.init)
            let result = try Generator(model: model).generate(prompt: prompt, maxTokens: expected.count)
            XCTAssertEqual(result.tokens, expected, name)
            XCTAssertEqual(result.stoppedBy, "max tokens")
        }
    }

    /// Prefill plus one-token steps through the cache give the logits of the full forward pass.
    func testCachedDecodingGivesTheFullForwardLogits() throws {
        for name in ["llama3_untied", "qwen2_bias"] {
            let model = try LlamaModel.load(folder: fixturesPath + "/\(name)/model")
            _ = try Adapter.load(from: fixturesPath + "/\(name)/adapter", into: model)
            let ids: [Int32] = [5, 17, 42, 99, 3, 250, 7, 64, 11, 200, 31, 8]
            let full = try model.logits(Batch(batchSize: 1, seqLen: ids.count, inputIds: ids, labels: ids)).array
            let cache = KVCache(model: model, capacity: 16)
            var incremental = try model.forward(tokens: Array(ids[..<5]), cache: cache, allLogits: true).array
            for t in ids[5...] { incremental += try model.forward(tokens: [t], cache: cache).array }
            XCTAssertEqual(cache.length, ids.count)
            XCTAssertLessThan(relativeError(incremental, full), 1e-5, name)
            XCTAssertThrowsError(try model.forward(tokens: [1, 2, 3, 4, 5], cache: cache)) { e in
                XCTAssertTrue("\(e)".contains("capacity"), "\(e)")
            }
        }
    }

    func testStopTokensAndCallbackEndDecoding() throws {
        let model = try LlamaModel.load(folder: fixturesPath + "/llama_tied/model")
        let g = Generator(model: model)
        let free = try g.generate(prompt: [5, 17, 42], maxTokens: 6)
        XCTAssertEqual(free.tokens.count, 6)
        // The first position (after the first) whose token has not appeared before it.
        let i = try XCTUnwrap((1..<6).first { !free.tokens[..<$0].contains(free.tokens[$0]) })
        let stopped = try g.generate(prompt: [5, 17, 42], maxTokens: 6, stopTokens: [free.tokens[i]])
        XCTAssertEqual(stopped.tokens, Array(free.tokens[..<i]))
        XCTAssertEqual(stopped.stoppedBy, "stop token")
        var seen = 0
        let cut = try g.generate(prompt: [5, 17, 42], maxTokens: 6) { _ in seen += 1; return seen < 3 }
        XCTAssertEqual(cut.tokens, Array(free.tokens[..<3]))
        XCTAssertEqual(cut.stoppedBy, "stop string")
    }
}

/// The sampling filters on hand-computed distributions.
final class SamplerTests: XCTestCase {
    func draw(_ logits: [Float], _ s: SamplingSettings, history: [Int32] = [], times: Int = 4000) -> [Int: Int] {
        var counts: [Int: Int] = [:]
        var sampler = Sampler(s)
        logits.withUnsafeBufferPointer { l in
            for _ in 0..<times { counts[Int(sampler.next(logits: l, history: history)), default: 0] += 1 }
        }
        return counts
    }

    func testGreedyAndRepetitionPenalty() {
        let logits: [Float] = [1.0, 3.0, -2.0, 2.5]
        XCTAssertEqual(draw(logits, SamplingSettings(), times: 1), [1: 1])
        // Penalty 2 on token 1: 3.0 → 1.5, so token 3 (2.5) wins; a negative logit is multiplied.
        XCTAssertEqual(draw(logits, SamplingSettings(repetitionPenalty: 2), history: [1, 1], times: 1), [3: 1])
        XCTAssertEqual(draw(logits, SamplingSettings(temperature: 5, topK: 1), times: 50), [1: 50])
    }

    func testTopPKeepsTheSmallestSetReachingP() {
        // Probabilities 0.5, 0.3, 0.2: top_p 0.6 removes the 0.2 (cumulative 0.2 ≤ 0.4) and keeps 0.5 and 0.3.
        let logits = [Float(0.5), 0.3, 0.2].map { log($0) }
        let counts = draw(logits, SamplingSettings(temperature: 1, topP: 0.6, seed: 1))
        XCTAssertNil(counts[2])
        XCTAssertEqual(Double(counts[0]!) / 4000, 0.625, accuracy: 0.03)
        let all = draw(logits, SamplingSettings(temperature: 1, seed: 2))
        XCTAssertEqual(Double(all[2]!) / 4000, 0.2, accuracy: 0.03)
    }

    func testMinPDropsUnlikelyTokensAndSeedsRepeat() {
        // min_p 0.5 of the top probability 0.5 leaves tokens with p ≥ 0.25: 0 and 1.
        let logits = [Float(0.5), 0.3, 0.2].map { log($0) }
        let counts = draw(logits, SamplingSettings(temperature: 1, minP: 0.5, seed: 3))
        XCTAssertEqual(Set(counts.keys), [0, 1])
        XCTAssertEqual(draw(logits, SamplingSettings(temperature: 1, seed: 9), times: 50),
                       draw(logits, SamplingSettings(temperature: 1, seed: 9), times: 50))
    }
}
