import XCTest
@testable import LoRAKit

/// Target selection, rank/alpha patterns and refusals, as PEFT's `check_target_module_exists` and
/// `get_pattern_key` define them.
final class LoRAConfigTests: XCTestCase {
    func testTargetMatching() {
        let all = LoRAConfig(targetModules: .allLinear)
        XCTAssertTrue(all.targets(path: "model.layers.3.mlp.down_proj"))
        XCTAssertFalse(all.targets(path: "lm_head"), "all-linear leaves out the output head")
        let named = LoRAConfig(targetModules: .names(["q_proj", "lm_head"]), layersToTransform: [0, 2])
        XCTAssertTrue(named.targets(path: "model.layers.2.self_attn.q_proj"))
        XCTAssertFalse(named.targets(path: "model.layers.1.self_attn.q_proj"))
        XCTAssertTrue(named.targets(path: "lm_head"), "an exact name bypasses layers_to_transform, as in PEFT")
        XCTAssertFalse(named.targets(path: "model.layers.0.self_attn.k_proj"))
        let regex = LoRAConfig(targetModules: .regex(#".*\.1\.self_attn\.(q|v)_proj"#))
        XCTAssertTrue(regex.targets(path: "model.layers.1.self_attn.v_proj"))
        XCTAssertFalse(regex.targets(path: "model.layers.11.self_attn.v_proj"))
    }

    func testRankAndAlphaPatterns() {
        let c = LoRAConfig(r: 8, loraAlpha: 16, rankPattern: ["v_proj": 2, #"layers\.1\.mlp\.up_proj"#: 4], alphaPattern: ["o_proj": 3])
        XCTAssertEqual(c.rank(path: "model.layers.0.self_attn.v_proj"), 2)
        XCTAssertEqual(c.rank(path: "model.layers.1.mlp.up_proj"), 4)
        XCTAssertEqual(c.rank(path: "model.layers.11.mlp.up_proj"), 8, "the pattern must match after a dot")
        XCTAssertEqual(c.alpha(path: "model.layers.5.self_attn.o_proj"), 3)
        XCTAssertEqual(c.alpha(path: "model.layers.5.self_attn.q_proj"), 16)
    }

    func testConfigJSONRoundTripsAndHasPEFTsKeys() throws {
        let c = LoRAConfig(r: 16, loraAlpha: 32, loraDropout: 0.05, targetModules: .allLinear, useRSLoRA: true,
                           initialization: .gaussian, layersToTransform: [1], rankPattern: ["q_proj": 4])
        let data = try c.json()
        let dict = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        XCTAssertEqual(dict["peft_type"] as? String, "LORA")
        XCTAssertEqual(dict["task_type"] as? String, "CAUSAL_LM")
        XCTAssertEqual(dict["init_lora_weights"] as? String, "gaussian")
        XCTAssertEqual((dict["target_modules"] as? [String])?.count, 7)
        XCTAssertEqual(dict.count, 41, "PEFT 0.21 writes 41 keys")
        let path = try temporaryDirectory() + "/adapter_config.json"
        try data.write(to: URL(fileURLWithPath: path))
        var back = try LoRAConfig.load(path: path)
        XCTAssertEqual(back.targetModules, .names(TargetModules.llamaLinearNames.sorted()))
        back.targetModules = .allLinear
        XCTAssertEqual(back, c)
    }

    func testRefusals() throws {
        let dir = try temporaryDirectory()
        func refuse(_ json: String, _ words: String) {
            let path = dir + "/adapter_config.json"
            try! json.write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try LoRAConfig.load(path: path)) { e in
                XCTAssertTrue("\(e)".contains(words), "\(e)")
            }
        }
        refuse(#"{"peft_type": "IA3", "target_modules": ["q_proj"]}"#, "IA3")
        refuse(#"{"peft_type": "LORA", "target_modules": ["q_proj"], "bias": "all"}"#, "bias")
        refuse(#"{"peft_type": "LORA", "target_modules": ["q_proj"], "init_lora_weights": "loftq"}"#, "path_initial_model_for_weight_conversion")
        refuse(#"{"peft_type": "LORA", "target_modules": 3}"#, "target_modules")
        refuse(#"[1, 2]"#, "not a JSON object")
        refuse(#"{"peft_type": "LORA", "target_modules": ["q_proj"], "r": 0}"#, "r must be positive")
    }
}
