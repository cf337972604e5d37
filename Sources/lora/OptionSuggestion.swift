import ArgumentParser
import Foundation

/// The did-you-mean of an argument error: for an unknown option the closest long option of the
/// command (`--lr` → `--learning-rate`, `--promt` → `--prompt`), for an unknown subcommand the closest one.
enum OptionSuggestion {
    /// A suggestion for ArgumentParser's error message, or nil when nothing is close.
    static func `for`(error message: String, arguments: [String] = Array(CommandLine.arguments.dropFirst())) -> String? {
        let subcommands: [any ParsableCommand.Type] = Lora.configuration.subcommands
        var names: [String] = []
        for subcommand in subcommands { names.append(subcommand.configuration.commandName ?? "") }
        func quoted(after prefix: String) -> String? {
            guard let start = message.range(of: prefix + "'")?.upperBound, let end = message[start...].firstIndex(of: "'") else { return nil }
            return String(message[start..<end])
        }
        if let option = quoted(after: "Unknown option "), option.hasPrefix("--") {
            let command: any ParsableCommand.Type = names.firstIndex { $0 == arguments.first }.map { subcommands[$0] } ?? Lora.self
            return closest(to: String(option.dropFirst(2)), among: longOptions(of: command)).map { "--" + $0 }
        }
        if let word = quoted(after: "Unexpected argument "), arguments.first == word {
            return closest(to: word, among: names)
        }
        return nil
    }

    /// The long option names a command's help lists.
    static func longOptions(of command: any ParsableCommand.Type) -> [String] {
        let help = Lora.helpMessage(for: command, columns: 10_000)
        var names: [String] = []
        for match in help.matches(of: /--([a-z0-9][a-z0-9-]*)/) where !names.contains(String(match.1)) { names.append(String(match.1)) }
        return names
    }

    /// The candidate the typed word most likely meant: one whose words' initials it is (lr →
    /// learning-rate), else the only one it begins, else the nearest by edit distance if near enough.
    static func closest(to typed: String, among candidates: [String]) -> String? {
        let word = typed.lowercased()
        if word.count >= 2, let byInitials = candidates.first(where: { $0.split(separator: "-").map { String($0.prefix(1)) }.joined() == word }) {
            return byInitials
        }
        let extending = candidates.filter { $0.hasPrefix(word) }
        if extending.count == 1 { return extending[0] }
        let scored = candidates.map { ($0, editDistance(word, $0)) }.min { $0.1 < $1.1 }
        guard let (best, distance) = scored, distance <= max(1, word.count / 3) else { return nil }
        return best
    }

    /// Levenshtein distance, with a swap of neighbours counting as one edit.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
        var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
            }
        }
        return d[a.count][b.count]
    }
}
