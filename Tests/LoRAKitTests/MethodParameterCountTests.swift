import XCTest
@testable import LoRAKit

/// The trainable-parameter line on SmolLM2-135M's shapes, all 7 linear targets, for each method,
/// against the counts PEFT 0.21 prints (recorded by scripts/make_variant_fixtures.py dora in
/// Fixtures/variants/dora/info.json, "smollm2_trainable_parameters").
final class MethodParameterCountTests: XCTestCase {
    func testTrainableParametersEqualPEFTsOnSmolLM2Shapes() throws {
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: DoRATests.folder + "/info.json"))) as! [String: Any]
        let peft = info["smollm2_trainable_parameters"] as! [String: Any]
        func trainable(_ key: String) -> Int {
            let entry = peft[key] as! [String: Any]
            return (entry["trainable_params"] as! NSNumber).intValue
        }
        let model = LlamaModel.random(config: .smolLM2_135M, seed: 1)
        func count(_ config: any AdapterConfiguration, _ method: TrainingMethod = .lora) throws -> Int {
            let adapter = try Adapter.attach(to: model, config: config)
            defer { try? adapter.detach() }
            var settings = TrainingSettings()
            settings.method = method
            _ = try method.makeOptimizer(adapter: adapter, settings: settings)
            return adapter.parameterCount
        }
        XCTAssertEqual(try count(LoRAConfig(r: 8, targetModules: .allLinear)), trainable("lora_r8_all7"))
        XCTAssertEqual(try count(LoRAConfig(r: 8, targetModules: .allLinear, useDoRA: true)), trainable("dora_r8_all7"))
        XCTAssertEqual(try count(VeRAConfig(r: 256, targetModules: .allLinear)), trainable("vera_r256_all7"))
        XCTAssertEqual(trainable("lora_r8_all7"), 2_442_240)
        XCTAssertEqual(trainable("dora_r8_all7"), 2_597_760)
        XCTAssertEqual(trainable("vera_r256_all7"), 209_280)
        // LoRA-FA trains B only, [out × 8] per layer: 8 · (576 + 192 + 192 + 576 + 1536 + 1536 + 576) · 30 blocks.
        XCTAssertEqual(try count(LoRAConfig(r: 8, targetModules: .allLinear), .loraFA), 8 * 5184 * 30)
    }
}

extension MethodParameterCountTests {
    /// The README's method lines, as written there (they must keep compiling).
    func testReadmeMethodConfigsCompile() {
        var settings = TrainingSettings()
        let configs: [any AdapterConfiguration] = [
            LoRAConfig(r: 8, loraAlpha: 16, targetModules: .allLinear, useDoRA: true),
            VeRAConfig(r: 256, targetModules: .allLinear),
            LoRAConfig(r: 8, loraAlpha: 16, targetModules: .allLinear, initialization: .pissa),
        ]
        settings.method = .loraPlus
        XCTAssertEqual(configs.map(\.methodName), ["DoRA", "VeRA", "LoRA"])
        XCTAssertEqual(settings.method, .loraPlus)
    }
}
