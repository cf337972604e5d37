import ArgumentParser
import Foundation
import LoRAKit

@main
struct Lora: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora",
        abstract: "LoRA fine-tuning for Llama-family language models on the CPU.",
        subcommands: [TrainCommand.self, GenerateCommand.self, EvalCommand.self, TokenizeCommand.self, MergeCommand.self, ExportAdapterCommand.self, ConvertCommand.self,
                      InspectCommand.self,
                      BenchCommand.self])

    /// Runs a command body, turning a LoRAError into one line on standard error and exit code 1.
    static func reportingErrors(_ body: () throws -> Void) throws {
        do { try body() } catch let e as LoRAError {
            FileHandle.standardError.write(Data("error: \(e.message)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// Peak resident memory of this process so far, in MB.
func peakResidentMB() -> Double {
    var usage = rusage()
    #if os(Linux)
    getrusage(RUSAGE_SELF.rawValue, &usage)
    #else
    getrusage(RUSAGE_SELF, &usage)
    #endif
    #if os(Linux)
    return Double(usage.ru_maxrss) / 1024  // kilobytes on Linux
    #else
    return Double(usage.ru_maxrss) / 1_048_576  // bytes on macOS
    #endif
}
