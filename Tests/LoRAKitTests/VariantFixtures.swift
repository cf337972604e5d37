import Foundation
import XCTest
@testable import LoRAKit

/// The fixtures of scripts/make_variant_fixtures.py: llama_tied's model and batch with another method.
enum VariantFixtures {
    static func folder(_ name: String) -> String { fixturesPath + "/variants/" + name }

    static func reference(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: folder(name) + "/reference.safetensors")
    }

    /// llama_tied with the adapter PEFT saved in variants/NAME/adapter in place of its own.
    static func load(_ name: String) throws -> (PyTorchParityTests.Case, SafetensorsFile) {
        let base = try PyTorchParityTests.load("llama_tied")
        try base.adapter.detach()
        let adapter = try Adapter.load(from: folder(name) + "/adapter", into: base.model)
        let c = PyTorchParityTests.Case(model: base.model, adapter: adapter, reference: base.reference, batch: base.batch,
                                        realPositions: base.realPositions)
        return (c, try reference(name))
    }

    /// Three steps clipped at 0.5 (as the fixtures): losses and norms at each, then every trained
    /// tensor within `tolerance` of the reference's step3 values; returns the largest difference.
    @discardableResult
    static func checkThreeSteps(_ c: PyTorchParityTests.Case, _ optimizer: any Optimizer, _ reference: SafetensorsFile,
                                tolerance: Float = 1e-4, _ label: String, file: StaticString = #filePath, line: UInt = #line) throws -> Float {
        let trainer = Trainer(model: c.model, optimizer: optimizer, totalSteps: 3, maxGradNorm: 0.5)
        let losses = try reference.floats("losses"), norms = try reference.floats("grad_norms")
        for s in 0..<3 {
            let r = try trainer.step([c.batch])
            XCTAssertEqual(r.loss, Double(losses[s]), accuracy: 1e-5 * Double(losses[s]), "\(label) loss at step \(s + 1)", file: file, line: line)
            XCTAssertEqual(r.gradNorm, norms[s], accuracy: 1e-4 * norms[s], "\(label) grad norm at step \(s + 1)", file: file, line: line)
        }
        var worst: Float = 0
        for p in optimizer.parameters {
            let err = relativeError(p.value.array, try reference.floats("step3." + p.name))
            XCTAssertLessThan(err, tolerance, "\(label) \(p.name) after 3 steps", file: file, line: line)
            worst = max(worst, err)
        }
        print("[\(label)] largest relative difference from PEFT after 3 steps: \(worst)")
        return worst
    }

    /// Logits and loss of the loaded adapter, then every trained tensor's gradient, against PEFT's.
    static func checkLogitsAndGradients(_ c: PyTorchParityTests.Case, _ reference: SafetensorsFile, _ label: String,
                                        file: StaticString = #filePath, line: UInt = #line) throws {
        let reals = PyTorchParityTests.realLogits
        XCTAssertLessThan(relativeError(reals(try c.model.logits(c.batch).array, c), reals(try reference.floats("logits"), c)), 1e-5,
                          "\(label) logits", file: file, line: line)
        for p in c.adapter.parameters { p.grad.zero() }
        let loss = try c.model.forwardBackward(c.batch)
        XCTAssertEqual(loss, Double(try reference.floats("loss")[0]), accuracy: 1e-5 * loss, "\(label) loss", file: file, line: line)
        for p in c.adapter.parameters {
            XCTAssertLessThan(relativeError(p.grad.array, try reference.floats("grad." + p.name)), 1e-4, "\(label) \(p.name)", file: file, line: line)
        }
    }

    /// Merged logits equal PEFT's merge_and_unload, and unmerging restores every base weight.
    static func checkMergeAndUnmerge(_ c: PyTorchParityTests.Case, _ reference: SafetensorsFile, _ label: String,
                                     file: StaticString = #filePath, line: UInt = #line) throws {
        let original = c.adapter.modules.map { $0.site.linear.weight.array }
        let reals = PyTorchParityTests.realLogits
        try c.adapter.merge()
        XCTAssertLessThan(relativeError(reals(try c.model.logits(c.batch).array, c), reals(try reference.floats("merged_logits"), c)), 1e-5,
                          "\(label) merged logits", file: file, line: line)
        try c.adapter.unmerge()
        for (m, w0) in zip(c.adapter.modules, original) {
            XCTAssertLessThan(relativeError(m.site.linear.weight.array, w0), 1e-6, "\(label) \(m.site.path) after unmerge", file: file, line: line)
        }
    }

    /// The folder `adapter` saves holds PEFT's tensors (names and values) and its config's keys.
    static func checkSavedFileIsPEFTs(_ adapter: Adapter, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let out = try temporaryDirectory()
        try adapter.save(to: out)
        let ours = try SafetensorsFile(path: out + "/adapter_model.safetensors")
        let peft = try SafetensorsFile(path: folder(name) + "/adapter/adapter_model.safetensors")
        XCTAssertEqual(Set(ours.names), Set(peft.names), file: file, line: line)
        for tensor in peft.names { XCTAssertEqual(try ours.floats(tensor), try peft.floats(tensor), tensor, file: file, line: line) }
        func json(_ path: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        }
        let config = try json(out + "/adapter_config.json")
        XCTAssertEqual(Set(config.keys), Set(try json(folder(name) + "/adapter/adapter_config.json").keys), file: file, line: line)
        return config
    }
}
