import Foundation
import LoRAFuzzHarnesses

// Built with -DLIBFUZZER and -sanitize=fuzzer (scripts/fuzz.sh), `main` hands control to libFuzzer, which
// calls the harness named by LORA_FUZZ_HARNESS for every input. (SwiftPM links an executable's `main`
// to this module's entry point, so libFuzzer's own `main` cannot be used; its LLVMFuzzerRunDriver is
// the documented way in.) Built normally, `main` replays files through a harness instead:
// `lora-fuzz HARNESS FILE...`, for reproducing findings.

#if LIBFUZZER
let harness: FuzzHarness = {
    let name = ProcessInfo.processInfo.environment["LORA_FUZZ_HARNESS"] ?? ""
    guard let harness = FuzzHarness.named(name) else {
        fatalError("set LORA_FUZZ_HARNESS to one of: \(FuzzHarness.all.map(\.name).joined(separator: ", "))")
    }
    return harness
}()

/// libFuzzer's entry point for one input. (Its own `main`, linked in with it, needs this symbol too.)
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    if case .otherError(let message) = harness.run(bytes) {
        fatalError("\(harness.name): an error that is not a LoRAError: \(message)")
    }
    return 0
}

typealias RunDriver = @convention(c) (UnsafeMutablePointer<CInt>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                                      @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@main
struct Fuzz {
    static func main() {
        // An unknown harness name fails here, and the fixtures a harness loads once (a 1.5 MB tokenizer)
        // load before libFuzzer's clock starts.
        _ = harness.run([])
        guard let symbol = dlsym(nil, "LLVMFuzzerRunDriver") else {  // nil: RTLD_DEFAULT
            fatalError("libFuzzer is not linked in: build with -sanitize=fuzzer")
        }
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(unsafeBitCast(symbol, to: RunDriver.self)(&argc, &argv, testOneInput))
    }
}
#else
@main
struct Replay {
    static func main() throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--checkpoint-seed", arguments.count == 2 {
            try Data(TinyRun.checkpointSeed()).write(to: URL(fileURLWithPath: arguments[1]))
            return
        }
        guard let name = arguments.first, let harness = FuzzHarness.named(name), arguments.count > 1 else {
            print("usage: lora-fuzz HARNESS FILE... (harnesses: \(FuzzHarness.all.map(\.name).joined(separator: ", ")))")
            print("       lora-fuzz --checkpoint-seed OUT (writes the checkpoint harness's seed)")
            exit(2)
        }
        var unexpected = 0
        for path in arguments.dropFirst() {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            let start = Date()
            let outcome = harness.run(bytes)
            let ms = Int(Date().timeIntervalSince(start) * 1000)
            switch outcome {
            case .accepted: print("\(path): accepted (\(ms) ms)")
            case .refused(let message): print("\(path): refused (\(ms) ms): \(message)")
            case .otherError(let message): print("\(path): NOT A LoRAError (\(ms) ms): \(message)"); unexpected += 1
            }
        }
        if unexpected > 0 { exit(1) }
    }
}
#endif
