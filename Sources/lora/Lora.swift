import ArgumentParser
import Foundation
import LoRAKit

@main
struct Lora: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "lora",
        abstract: "LoRA fine-tuning for Llama-family language models on the CPU.",
        version: Lora.version,
        subcommands: [TrainCommand.self, GenerateCommand.self, EvalCommand.self, TokenizeCommand.self, MergeCommand.self, ExportAdapterCommand.self, ConvertCommand.self,
                      InspectCommand.self, CompareCommand.self,
                      BenchCommand.self])

    /// Parses the command line and runs the command. ArgumentParser's own errors (an unknown flag,
    /// a missing or malformed value) get one `error:` line and exit code 1 like every other error,
    /// rather than its several lines and EX_USAGE; help prints as usual.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if error is ExitCode || exitCode(for: error) == .success { exit(withError: error) }  // already reported, or help
            let sentence = LoRAError.oneLine(message(for: error)) + (OptionSuggestion.for(error: message(for: error)).map { "; did you mean \($0)?" } ?? "")
            try? FileHandle.standardError.write(contentsOf: Data(("error: \(sentence) (see --help)\n").utf8))  // write(_:) traps when the write fails
            Foundation.exit(1)
        }
    }

    /// Runs a command body, turning any error into one `error:` line on standard error and exit
    /// code 1: a LoRAError's sentence, a file error as "cannot write PATH: REASON" (see
    /// LoRAError.describing), never a multi-line or raw Foundation message.
    static func reportingErrors(_ body: () throws -> Void) throws {
        do { try body() } catch let code as ExitCode {
            throw code  // the command has said why
        } catch {
            // A live progress line on the terminal is cleared first, so the error is not appended to it.
            if isatty(STDOUT_FILENO) != 0 { try? FileHandle.standardOutput.write(contentsOf: Data(ProgressDisplay.clearLine.utf8)) }
            try? FileHandle.standardError.write(contentsOf: Data(("error: \(LoRAError.describing(error))\n").utf8))  // write(_:) traps when the write fails
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
