import Foundation
import XCTest
@testable import LoRAKit
@testable import LoRATokenizers

/// Fixtures written by scripts/make_tokenizer_fixtures.py: SmolLM2's tokenizer.json, a small
/// SentencePiece-style BPE, component variants on top of them, and Hugging Face `tokenizers` outputs.
private let tokenizerFixtures = fixturesPath + "/tokenizers"

private struct ExpectedCase: Decodable {
    let lines: [[Int]]
    let lines_special: [[Int]]?
    let text: [Int]
    let text_special: [Int]
    let decoded_lines: [String]
    let decoded_text_plain: String
    let decoded_text: String
    let decoded_text_skip: String
}

private struct DecodeCase: Decodable {
    let tokenizer: String
    let ids: [Int]
    let text: String
}

private struct Expected: Decodable {
    let tokenizers_version: String
    let text: String
    let line_count: Int
    let cases: [String: ExpectedCase]
    let decode_cases: [DecodeCase]
}

private enum TokenizerFixtures {
    // JSONDecoder keeps every character of the strings (JSONSerialization on Linux can drop a U+FEFF).
    static let expected: Expected = try! JSONDecoder().decode(
        Expected.self, from: Data(contentsOf: URL(fileURLWithPath: tokenizerFixtures + "/expected.json")))
    static let lines: [String] = expected.text.unicodeScalars
        .split(separator: "\n", omittingEmptySubsequences: false)
        .map { String(String.UnicodeScalarView($0)) }
    static let smolLM2: Tokenizer = try! Tokenizer.load(path: tokenizerFixtures + "/smollm2")
    static let spBPE: Tokenizer = try! Tokenizer.load(path: tokenizerFixtures + "/sp_bpe/tokenizer.json")

    static func json(_ path: String) throws -> [String: Any] {
        try JSONReader.parse(Data(contentsOf: URL(fileURLWithPath: tokenizerFixtures + "/" + path)), source: path) as! [String: Any]
    }

    /// The base tokenizer.json of a case name ("smollm2" or "sp_bpe/legacy") with the variant's overrides.
    static func caseJSON(_ name: String) throws -> [String: Any] {
        let parts = name.split(separator: "/").map(String.init)
        var j = try json(parts[0] + "/tokenizer.json")
        guard parts.count > 1 else { return j }
        let variants = try json("variants.json") as! [String: [String: [String: Any]]]
        for (key, value) in variants[parts[0]]![parts[1]]! {
            switch key {
            case "model":
                var m = j["model"] as! [String: Any]
                for (k, v) in value as! [String: Any] { m[k] = v }
                j["model"] = m
            case "added_tokens+":
                var list = j["added_tokens"] as! [[String: Any]]
                let vocab = (j["model"] as! [String: Any])["vocab"] as! [String: Int]
                var next = (list.map { $0["id"] as! Int } + vocab.values).max()! + 1
                for var t in value as! [[String: Any]] {
                    t["id"] = next
                    next += 1
                    list.append(t)
                }
                j["added_tokens"] = list
            default:
                j[key] = value
            }
        }
        return j
    }

    static func tokenizer(_ name: String) throws -> Tokenizer {
        switch name {
        case "smollm2": return smolLM2
        case "sp_bpe": return spBPE
        default: return try Tokenizer(json: caseJSON(name), source: name)
        }
    }

    /// The fixture text repeated to about 1 MB.
    static var megabyte: String {
        var big = ""
        while big.utf8.count < 1_000_000 { big += expected.text + "\n" }
        return big
    }
}

final class TokenizerTests: XCTestCase {
    private var expected: Expected { TokenizerFixtures.expected }

    func testFixtureText() throws {
        let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: tokenizerFixtures + "/text.txt")), as: UTF8.self)
        XCTAssertEqual(text, expected.text, "text.txt and expected.json disagree")
        XCTAssertEqual(TokenizerFixtures.lines.count, expected.line_count)
    }

    /// Every line and the whole text, with and without special tokens, and the decoded text, against tokenizers.
    private func checkParity(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let tok = try TokenizerFixtures.tokenizer(name)
        let c = try XCTUnwrap(expected.cases[name], "no expected outputs for \(name)")
        var mismatches: [String] = []
        for (i, text) in TokenizerFixtures.lines.enumerated() {
            let plain = tok.encode(text)
            if plain != c.lines[i] { mismatches.append("line \(i) \(text.prefix(40).debugDescription): \(plain) vs \(c.lines[i])") }
            let special = tok.encode(text, addSpecialTokens: true)
            let want = c.lines_special?[i] ?? c.lines[i]
            if special != want { mismatches.append("line \(i) with special tokens: \(special) vs \(want)") }
            let decoded = tok.decode(c.lines[i])
            if decoded != c.decoded_lines[i] { mismatches.append("decode line \(i): \(decoded.debugDescription) vs \(c.decoded_lines[i].debugDescription)") }
        }
        XCTAssert(mismatches.isEmpty, "\(name): \(mismatches.count) mismatches, first: \(mismatches.prefix(3))", file: file, line: line)
        XCTAssertEqual(tok.encode(expected.text), c.text, "\(name): whole text", file: file, line: line)
        XCTAssertEqual(tok.encode(expected.text, addSpecialTokens: true), c.text_special, "\(name): whole text with special tokens", file: file, line: line)
        XCTAssertEqual(tok.decode(c.text_special), c.decoded_text, "\(name): decode", file: file, line: line)
        XCTAssertEqual(tok.decode(c.text_special, skipSpecialTokens: true), c.decoded_text_skip, "\(name): decode skipping special tokens", file: file, line: line)
    }

    func testSmolLM2MatchesTokenizers() throws {
        try checkParity("smollm2")
        // The special tokens in the text are single ids; digits are split one by one.
        let tok = TokenizerFixtures.smolLM2
        XCTAssertEqual(tok.encode("<|im_start|>user\n12"), [1, 4093, 198, 33, 34])
    }

    func testSentencePieceBPEMatchesTokenizers() throws {
        try checkParity("sp_bpe")
        let tok = TokenizerFixtures.spBPE
        XCTAssertEqual(tok.encode("x", addSpecialTokens: true).first, tok.id(of: "<s>"))
        // An emoji outside the vocab falls back to its four UTF-8 bytes.
        let emoji = tok.encode("😀")
        XCTAssertEqual(emoji.suffix(4).compactMap { tok.tokenString($0) }, ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"])
    }

    /// Llama 3 / Qwen2 / GPT-4o split regexes, normalizers, every split behavior, added-token flags, legacy
    /// SentencePiece normalizers, Metaspace schemes, unk handling, Whitespace and Punctuation pre-tokenizers,
    /// and a regex only NSRegularExpression handles.
    func testComponentVariantsMatchTokenizers() throws {
        let names = expected.cases.keys.filter { $0.contains("/") }.sorted()
        XCTAssertEqual(names.count, 10)
        for name in names { try checkParity(name) }
    }

    /// continuing_subword_prefix "##", end_of_word_suffix "</w>", WhitespaceSplit, BPEDecoder, BertProcessing.
    func testClassicBPEMatchesTokenizers() throws {
        try checkParity("classic_bpe")
        let tok = try TokenizerFixtures.tokenizer("classic_bpe")
        // As tokenizers gives them (BPEDecoder only turns the suffix into a space; "q" is outside the alphabet).
        let ids = tok.encode("the quick end", addSpecialTokens: true)
        XCTAssertEqual(ids.compactMap { tok.tokenString($0) }, ["[CLS]", "th", "##e</w>", "[UNK]", "##uic", "##k</w>", "e", "##nd</w>", "[SEP]"])
        XCTAssertEqual(tok.decode(ids), "[CLS]th##e [UNK]##uic##k e##nd [SEP]")
    }

    func testHanScriptPatternUsesFallbackRegex() throws {
        let regex = try TokenizerRegex(pattern: #"\p{Han}+|\p{Hiragana}+"#, context: "test")
        XCTAssertTrue(regex.usesFallback)
        // Every other pattern in the variants runs on the built-in engine.
        let variants = try TokenizerFixtures.json("variants.json") as! [String: [String: [String: Any]]]
        var patterns = [ByteLevelPreTokenizer.gpt2Pattern]
        func collect(_ v: Any) {
            if let d = v as? [String: Any] {
                if let r = d["Regex"] as? String { patterns.append(r) }
                d.values.forEach(collect)
            } else if let a = v as? [Any] {
                a.forEach(collect)
            }
        }
        collect(variants)
        for p in patterns where !p.contains("Han") {
            XCTAssertFalse(try TokenizerRegex(pattern: p, context: "test").usesFallback, p)
        }
    }

    /// decode(encode(x)) gives back x wherever tokenizers' own decode does (and agrees with it everywhere).
    func testRoundTrip() throws {
        for name in ["smollm2", "sp_bpe"] {
            let tok = try TokenizerFixtures.tokenizer(name)
            let c = expected.cases[name]!
            let decoded = tok.decode(tok.encode(expected.text))
            XCTAssertEqual(decoded, c.decoded_text_plain, name)
            XCTAssertEqual(c.decoded_text_plain, expected.text, "\(name): tokenizers' decode round-trips the text")
            XCTAssertEqual(decoded, expected.text, name)
            for (i, line) in TokenizerFixtures.lines.enumerated() {
                let back = tok.decode(tok.encode(line))
                XCTAssertEqual(back, c.decoded_lines[i], "\(name) line \(i)")
                if c.decoded_lines[i] == line { XCTAssertEqual(back, line, "\(name) line \(i)") }
            }
        }
    }

    func testDecodingPartialCharactersMatchesTokenizers() {
        for c in expected.decode_cases {
            let tok = c.tokenizer == "smollm2" ? TokenizerFixtures.smolLM2 : TokenizerFixtures.spBPE
            XCTAssertEqual(tok.decode(c.ids), c.text, "\(c.tokenizer) \(c.ids)")
        }
    }

    func testStreamingDecoderConcatenatesToDecode() {
        for tok in [TokenizerFixtures.smolLM2, TokenizerFixtures.spBPE] {
            for skip in [false, true] {
                let ids = tok.encode(expected.text, addSpecialTokens: true)
                var stream = StreamingDecoder(tok, skipSpecialTokens: skip)
                var out = ""
                for id in ids {
                    let piece = stream.push(id)
                    XCTAssertFalse(piece.unicodeScalars.contains("\u{FFFD}"), "a chunk holds a partial character: \(piece.debugDescription)")
                    out += piece
                }
                out += stream.finish()
                XCTAssertEqual(out, tok.decode(ids, skipSpecialTokens: skip))
            }
        }
    }

    func testStreamingDecoderHoldsSplitEmoji() {
        // SmolLM2: "😀" is the byte-level tokens "ĠðŁĺ" + "Ģ"; the sp_bpe tokenizer spells it as four byte tokens.
        let smol = TokenizerFixtures.smolLM2
        let ids = smol.encode("a 😀")
        XCTAssertEqual(ids.compactMap { smol.tokenString($0) }, ["a", "ĠðŁĺ", "Ģ"])
        var s = StreamingDecoder(smol)
        XCTAssertEqual(ids.map { s.push($0) }, ["a", "", " 😀"])

        let sp = TokenizerFixtures.spBPE
        let spIds = sp.encode("😀!")
        var t = StreamingDecoder(sp)
        let pieces = spIds.map { t.push($0) }
        XCTAssertEqual(pieces.joined() + t.finish(), sp.decode(spIds))
        XCTAssertEqual(pieces.filter { !$0.isEmpty }.first?.unicodeScalars.contains("😀"), true)
        XCTAssertFalse(pieces.contains { $0.unicodeScalars.contains("\u{FFFD}") })
    }

    func testConfigAndVocabulary() throws {
        let tok = TokenizerFixtures.smolLM2
        XCTAssertEqual(tok.vocabSize, 49152)
        XCTAssertEqual(tok.bosTokenId, 1)
        XCTAssertEqual(tok.eosTokenId, 2)
        XCTAssertEqual(tok.padTokenId, 2)
        XCTAssertTrue(tok.chatTemplate?.contains("<|im_start|>") ?? false)
        XCTAssertEqual(tok.id(of: "<|im_end|>"), 2)
        XCTAssertEqual(tok.tokenString(2), "<|im_end|>")
        XCTAssertTrue(tok.isSpecial(0))
        XCTAssertEqual(tok.id(of: "Ġthe"), tok.encode(" the").first)
        XCTAssertNil(tok.tokenString(123_456))
        XCTAssertEqual(tok.decode([1, 19556, 2], skipSpecialTokens: true), "Hello")
        XCTAssertEqual(TokenizerFixtures.spBPE.vocabSize, 999)
    }

    /// Encoding from many threads at once gives the same ids (one thread holds the BPE cache, the others work
    /// without it).
    func testConcurrentEncoding() {
        let tok = TokenizerFixtures.smolLM2
        let lines = TokenizerFixtures.lines
        let serial = lines.map { tok.encode($0) }
        final class Results: @unchecked Sendable {
            var ids: [[Int]]
            let lock = NSLock()
            init(_ n: Int) { ids = Array(repeating: [], count: n) }
        }
        let results = Results(lines.count * 8)
        DispatchQueue.concurrentPerform(iterations: lines.count * 8) { k in
            let ids = tok.encode(lines[k % lines.count])
            results.lock.lock()
            results.ids[k] = ids
            results.lock.unlock()
        }
        for k in 0..<(lines.count * 8) { XCTAssertEqual(results.ids[k], serial[k % lines.count], "line \(k % lines.count)") }
    }

    /// Throughput on ~1 MB (the fixture text repeated), printed; meaningful in release builds only:
    ///     LORA_TOKENIZER_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter TokenizerTests/testEncodingThroughput
    /// (scripts/bench_tokenizer.sh runs it next to Hugging Face tokenizers).
    func testEncodingThroughput() throws {
        guard ProcessInfo.processInfo.environment["LORA_TOKENIZER_BENCH"] != nil else {
            throw XCTSkip("set LORA_TOKENIZER_BENCH=1 to measure")
        }
        var loads: [Double] = []
        for _ in 0..<5 {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try Tokenizer.load(path: tokenizerFixtures + "/smollm2")
            loads.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let tok = TokenizerFixtures.smolLM2
        let text = TokenizerFixtures.megabyte
        let bytes = Double(text.utf8.count)
        var best = Double.infinity
        var ids: [Int] = []
        for _ in 0..<5 {
            let start = DispatchTime.now().uptimeNanoseconds
            ids = tok.encode(text)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let start = DispatchTime.now().uptimeNanoseconds
        let back = tok.decode(ids)
        let decodeSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print(String(format: "swift-lora tokenizer: load %.3f s (first %.3f s); encode %.0f bytes -> %d ids: best %.3f s = %.1f MB/s; decode %.3f s",
                     loads.min()!, loads[0], bytes, ids.count, best, bytes / best / 1e6, decodeSeconds))
        XCTAssertEqual(back, text)
    }

    func testLoadTime() throws {
        let start = Date()
        let tok = try Tokenizer.load(path: tokenizerFixtures + "/smollm2/tokenizer.json")
        let seconds = Date().timeIntervalSince(start)
        print("tokenizer.json with 49152 ids and 48900 merges loaded in \(String(format: "%.3f", seconds)) s")
        XCTAssertEqual(tok.vocabSize, 49152)
        XCTAssertLessThan(seconds, 5, "load time (debug build)")
    }

    private func assertRefused(_ mutate: (inout [String: Any]) -> Void, mentions word: String, file: StaticString = #filePath, line: UInt = #line) throws {
        var j = try TokenizerFixtures.json("sp_bpe/tokenizer.json")
        mutate(&j)
        XCTAssertThrowsError(try Tokenizer(json: j, source: "tokenizer.json"), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(word), "\(error) does not name \(word)", file: file, line: line)
        }
    }

    func testUnsupportedComponentsAreRefusedByName() throws {
        try assertRefused({ j in
            var m = j["model"] as! [String: Any]
            m["type"] = "WordLevel"
            j["model"] = m
        }, mentions: "WordLevel")
        try assertRefused({ $0["pre_tokenizer"] = ["type": "UnicodeScripts"] }, mentions: "UnicodeScripts")
        try assertRefused({ $0["normalizer"] = ["type": "Precompiled", "precompiled_charsmap": "AAAA"] }, mentions: "Precompiled")
        try assertRefused({ $0["decoder"] = ["type": "WordPiece", "prefix": "##"] }, mentions: "WordPiece")
        try assertRefused({ $0["post_processor"] = ["type": "Mystery"] }, mentions: "Mystery")
        try assertRefused({ $0["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": "(unclosed"], "behavior": "Isolated", "invert": false] }, mentions: "(unclosed")
        try assertRefused({ j in
            var m = j["model"] as! [String: Any]
            m["dropout"] = 0.1
            j["model"] = m
        }, mentions: "dropout")
        XCTAssertThrowsError(try Tokenizer.load(path: "/nonexistent/tokenizer.json")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/tokenizer.json"))
        }
    }

    func testTruncationAndPadding() throws {
        var j = try TokenizerFixtures.json("sp_bpe/tokenizer.json")
        j["truncation"] = ["max_length": 5, "strategy": "LongestFirst", "stride": 0, "direction": "Right"]
        j["padding"] = ["strategy": ["Fixed": 8], "direction": "Left", "pad_id": 2, "pad_type_id": 0, "pad_token": "</s>"]
        let tok = try Tokenizer(json: j)
        let plain = TokenizerFixtures.spBPE
        let text = "The quick brown fox jumps over the lazy dog."
        XCTAssertEqual(tok.encode(text, addSpecialTokens: true), [2, 2, 2] + plain.encode(text, addSpecialTokens: true).prefix(5))
        XCTAssertEqual(tok.encode(text), [2, 2, 2] + plain.encode(text).prefix(5))
    }

    func testRegexEngineAgainstKnownSplits() throws {
        func splits(_ pattern: String, _ s: String) throws -> [String] {
            let regex = try BacktrackingRegex(pattern: pattern)
            let scalars = s.unicodeScalars.map { $0.value }
            var stack: [BacktrackingRegex.Backtrack] = []
            return scalars.withUnsafeBufferPointer { buf in
                regex.matches(in: buf, 0..<buf.count, stack: &stack).map { scalarsToString(scalars[$0]) }
            }
        }
        XCTAssertEqual(try splits(ByteLevelPreTokenizer.gpt2Pattern, "I'm  here!\n\n  ok"), ["I", "'m", " ", " here", "!", "\n\n ", " ok"])
        XCTAssertEqual(try splits(#"\p{N}{1,3}"#, "1234567"), ["123", "456", "7"])
        XCTAssertEqual(try splits(#"(?i:'s|'t)"#, "'S 'T 'ſ 's"), ["'S", "'T", "'ſ", "'s"])
        XCTAssertEqual(try splits(#"a+?b|(?=c)c\d{2,}"#, "aab c12 c1"), ["aab", "c12"])
        XCTAssertEqual(try splits(#"(?>a+)a|x"#, "aaax"), ["x"])
        XCTAssertEqual(try splits(#"[^\s\p{L}]+|\s+(?!\S)"#, "a  !!b"), [" ", "!!"])

        // An empty literal Split pattern matches between every character, so it splits "abc" into letters.
        let split = SplitPreTokenizer(regex: TokenizerRegex(literal: ""), behavior: .mergedWithNext, invert: false)
        var p = PreTokenized(text: [97, 98, 99], splits: [.init(start: 0, end: 3, atStart: true)])
        var ctx = EncodeContext()
        split.preTokenize(&p, &ctx)
        XCTAssertEqual(p.splits.map { $0.start..<$0.end }, [0..<1, 1..<2, 2..<3])
    }
}
