import XCTest
@testable import LoRAKit

/// Hub model ids, huggingface_hub's cache layout and settings, and the SHA-256 downloads are checked with.
/// The network side runs against a loopback Hub in scripts/hub_checks.sh.
final class HubCacheTests: XCTestCase {
    func testSHA256KnownDigests() {
        func hex(_ s: String) -> String { var h = SHA256(); h.update(Array(s.utf8)); return h.finalizeHex() }
        XCTAssertEqual(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // 56 bytes: the length no longer fits the first padded block.
        XCTAssertEqual(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // A million a's fed in uneven pieces, as a download's chunks arrive.
        var h = SHA256(), fed = 0
        for size in [1, 63, 64, 65, 1000, 4096] {
            let n = min(size, 1_000_000 - fed)
            h.update([UInt8](repeating: UInt8(ascii: "a"), count: n))
            fed += n
        }
        h.update([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000 - fed))
        XCTAssertEqual(h.finalizeHex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testSHA256OfAFileMatchesTheHubFixtureEtag() throws {
        // The digest scripts/hub_checks.sh computes with Python's hashlib for the same file.
        let path = fixturesPath + "/tiny_chat/model.safetensors"
        XCTAssertEqual(try SHA256.hex(ofFile: path), "8481a86104daf3923eb3e667993fee18847c6c9c2cddb350d95473736087c671")
    }

    func testModelIDs() {
        XCTAssertEqual(HubModelID("HuggingFaceTB/SmolLM2-135M")?.repo, "HuggingFaceTB/SmolLM2-135M")
        XCTAssertEqual(HubModelID("HuggingFaceTB/SmolLM2-135M")?.revision, "main")
        XCTAssertNil(HubModelID("HuggingFaceTB/SmolLM2-135M")?.file)
        let pinned = HubModelID("org/model.v1_2@v1.0")
        XCTAssertEqual(pinned?.repo, "org/model.v1_2")
        XCTAssertEqual(pinned?.revision, "v1.0")
        XCTAssertEqual(pinned?.description, "org/model.v1_2@v1.0")
        let gguf = HubModelID("org/name-GGUF@main/name.Q4_0.gguf")
        XCTAssertEqual(gguf?.repo, "org/name-GGUF")
        XCTAssertEqual(gguf?.file, "name.Q4_0.gguf")
        XCTAssertEqual(gguf?.description, "org/name-GGUF/name.Q4_0.gguf")
        // Paths, and names huggingface_hub would refuse, are not ids.
        for spec in ["smollm2-135m", "/abs/model", "./model", "../x/y", "a/b/c", "a/b/c.safetensors", "a/b/c/d.gguf", "org/x.gguf",
                     "org/x.safetensors", "org/-bad", "org/bad.", "org--x/y", "org/a..b", "org/name@", "org/na me", "org/name/.x.gguf",
                     "org/", "/name", "org/name@v/1", String(repeating: "a", count: 50) + "/" + String(repeating: "b", count: 50)] {
            XCTAssertNil(HubModelID(spec), spec)
        }
    }

    func testCacheFolderFollowsHuggingFaceHub() {
        let home = NSHomeDirectory()
        XCTAssertEqual(HubCache(environment: [:]).root, home + "/.cache/huggingface/hub")
        XCTAssertEqual(HubCache(environment: ["XDG_CACHE_HOME": "/x"]).root, "/x/huggingface/hub")
        XCTAssertEqual(HubCache(environment: ["XDG_CACHE_HOME": "/x", "HF_HOME": "/h"]).root, "/h/hub")
        XCTAssertEqual(HubCache(environment: ["HF_HOME": "/h", "HF_HUB_CACHE": "/c"]).root, "/c")
        XCTAssertEqual(HubCache(environment: ["HF_HUB_CACHE": "~/c"]).root, home + "/c")
        let id = HubModelID("org/name")!
        XCTAssertEqual(HubCache(root: "/c").folder(id), "/c/models--org--name")
        XCTAssertEqual(HubCache(root: "/c").lock(id, etag: "e"), "/c/.locks/models--org--name/e.lock")
    }

    func testClientSettings() throws {
        let dir = try temporaryDirectory()
        try "  hf_file\n".write(toFile: dir + "/token", atomically: true, encoding: .utf8)
        let plain = HubClient(environment: ["HF_HOME": dir + "/none"])
        XCTAssertEqual(plain.endpoint, "https://huggingface.co")
        XCTAssertNil(plain.token)
        XCTAssertFalse(plain.offline)
        XCTAssertEqual(HubClient(environment: ["HF_HOME": dir]).token, "hf_file")
        XCTAssertEqual(HubClient(environment: ["HF_HOME": dir, "HF_TOKEN": "hf_env"]).token, "hf_env")
        XCTAssertEqual(HubClient(environment: ["HF_HOME": dir, "HF_TOKEN": ""]).token, "hf_file")
        XCTAssertEqual(HubClient(environment: ["HF_ENDPOINT": "http://127.0.0.1:8080//"]).endpoint, "http://127.0.0.1:8080")
        for (value, offline) in [("1", true), ("yes", true), ("True", true), ("ON", true), ("0", false), ("", false), ("no", false)] {
            XCTAssertEqual(HubClient(environment: ["HF_HUB_OFFLINE": value]).offline, offline, value)
        }
        XCTAssertTrue(HubClient(environment: ["TRANSFORMERS_OFFLINE": "1"]).offline)
    }

    /// A cache as huggingface_hub leaves it: refs/main, a snapshot of links, the blobs.
    func makeCache(_ files: [String: String], ref: String? = String(repeating: "c", count: 40)) throws -> (HubCache, String) {
        let cache = HubCache(root: try temporaryDirectory())
        let id = HubModelID("org/name")!, commit = String(repeating: "c", count: 40)
        try FileManager.default.createDirectory(atPath: cache.folder(id) + "/blobs", withIntermediateDirectories: true)
        for (i, (file, text)) in files.sorted(by: { $0.key < $1.key }).enumerated() {
            try text.write(toFile: cache.blob(id, etag: "etag\(i)"), atomically: true, encoding: .utf8)
            try cache.link(id, commit: commit, file: file, etag: "etag\(i)")
        }
        if let ref { try cache.writeRef(id, commit: ref) }
        return (cache, cache.snapshot(id, commit: commit))
    }

    func testCachedModelNeedsConfigAndEveryShard() throws {
        let id = HubModelID("org/name")!
        var (cache, snapshot) = try makeCache(["config.json": "{}", "model.safetensors": "w"])
        XCTAssertEqual(cache.cached(id), snapshot)
        XCTAssertEqual(try String(contentsOfFile: snapshot + "/config.json", encoding: .utf8), "{}")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: snapshot + "/model.safetensors"), "../../blobs/etag1")
        XCTAssertEqual(cache.cached(HubModelID("org/name@" + String(repeating: "c", count: 40))!), snapshot)
        XCTAssertNil(cache.cached(HubModelID("org/name@v2")!))
        XCTAssertNil(cache.cached(HubModelID("org/other")!))

        (cache, _) = try makeCache(["config.json": "{}"])
        XCTAssertNil(cache.cached(id), "no weights")
        (cache, _) = try makeCache(["model.safetensors": "w"])
        XCTAssertNil(cache.cached(id), "no config.json")
        (cache, _) = try makeCache(["config.json": "{}", "model.safetensors": "w"], ref: nil)
        XCTAssertNil(cache.cached(id), "no ref")
        (cache, _) = try makeCache(["config.json": "{}", "model.safetensors": "w"], ref: "not a commit")
        XCTAssertNil(cache.cached(id), "a ref that is not a commit hash")

        let index = #"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#
        (cache, snapshot) = try makeCache(["config.json": "{}", "model.safetensors.index.json": index,
                                           "model-00001-of-00002.safetensors": "1", "model-00002-of-00002.safetensors": "2"])
        XCTAssertEqual(cache.cached(id), snapshot)
        (cache, _) = try makeCache(["config.json": "{}", "model.safetensors.index.json": index, "model-00001-of-00002.safetensors": "1"])
        XCTAssertNil(cache.cached(id), "a shard missing")
        (cache, _) = try makeCache(["config.json": "{}", "model.safetensors.index.json": "[]", "model.safetensors": "w"])
        XCTAssertNil(cache.cached(id), "a malformed index")

        (cache, snapshot) = try makeCache(["a.gguf": "g"])
        XCTAssertEqual(cache.cached(HubModelID("org/name/a.gguf")!), snapshot + "/a.gguf")
        XCTAssertNil(cache.cached(HubModelID("org/name/b.gguf")!))
    }

    func testFilesFetchedForAModel() throws {
        let client = HubClient(environment: ["HF_ENDPOINT": "http://hub"])
        let id = HubModelID("org/name")!
        XCTAssertEqual(try client.modelFiles(id, ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "README.md",
                                                  "special_tokens_map.json", "onnx/model.onnx", "model.gguf", "consolidated.safetensors"]),
                       ["config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json"])
        // A sharded model: the index first; its shards come from it once it is downloaded.
        XCTAssertEqual(try client.modelFiles(id, ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"]),
                       ["config.json", "model.safetensors.index.json"])
        XCTAssertEqual(try client.modelFiles(HubModelID("org/name/b.gguf")!, ["a.gguf", "b.gguf"]), ["b.gguf"])
        func message(_ body: () throws -> [String]) -> String {
            do { _ = try body(); return "no error" } catch { return "\(error)" }
        }
        XCTAssertEqual(message { try client.modelFiles(id, ["README.md", "b.gguf", "a.gguf", "sub/c.gguf"]) },
                       "org/name holds GGUF files (a.gguf, b.gguf); name one: --model org/name/a.gguf")
        XCTAssertEqual(message { try client.modelFiles(id, ["config.json", "pytorch_model.bin"]) },
                       "org/name on http://hub has no model.safetensors or model.safetensors.index.json (pickled .bin weights are never read)")
        XCTAssertEqual(message { try client.modelFiles(id, ["model.safetensors"]) }, "org/name on http://hub has no config.json")
        XCTAssertEqual(message { try client.modelFiles(HubModelID("org/name/c.gguf")!, ["a.gguf"]) }, "org/name on http://hub has no file c.gguf")
    }

    func testSizesNoDiskHoldsAreRefusedBeforeDownloading() throws {
        let root = try temporaryDirectory()
        let client = HubClient(environment: ["HF_HUB_CACHE": root])
        XCTAssertNoThrow(try client.checkSpace(HubModelID("org/name")!, [("a", 1000)]))
        // Sizes are the server's word: their sum saturates instead of trapping.
        XCTAssertThrowsError(try client.checkSpace(HubModelID("org/name")!, [("a", .max), ("b", .max)])) { error in
            XCTAssertTrue("\(error)".hasPrefix("org/name needs 9223372036854.8 MB more in \(root), which has "), "\(error)")
        }
    }

    func testOfflineWithoutTheModelIsOneSentence() throws {
        let root = try temporaryDirectory()
        let client = HubClient(environment: ["HF_HUB_CACHE": root, "HF_HUB_OFFLINE": "1"])
        XCTAssertThrowsError(try client.resolve(HubModelID("org/name@v1")!)) { error in
            XCTAssertEqual("\(error)", "org/name@v1 is not in the Hugging Face cache (\(root)/models--org--name), and HF_HUB_OFFLINE is set")
        }
    }
}
