import Foundation
import LoRAKit

/// Shows a training run's progress: on a terminal, one line redrawn in place after every step (cut to
/// the terminal's width) with report lines and warnings printed above it; elsewhere (a file, a pipe,
/// CI logs) only the report lines.
final class ProgressDisplay {
    let live: Bool
    /// When the bar was last drawn: redrawn at most ten times a second, so tiny models are not slowed by the terminal.
    private var lastDraw: UInt64 = 0

    init(live: Bool = isatty(STDOUT_FILENO) != 0) { self.live = live }

    func show(_ p: TrainingProgress) {
        var text = ""
        if let report = p.report { text += (live ? Self.clearLine : "") + reportLine(p, report) + "\n" }
        let now = DispatchTime.now().uptimeNanoseconds
        if live && (now - lastDraw > 100_000_000 || p.report != nil || p.step == p.totalSteps) {
            lastDraw = now
            // \r and "erase line" redraw the bar in place.
            text += Self.clearLine + Self.barLine(p, memoryMB: peakResidentMB(), columns: Self.terminalColumns())
            if p.step == p.totalSteps { text += Self.clearLine }
        }
        // One write, so that the terminal never shows a report line with the bar not yet redrawn below it
        // (separate writes let a fast run's screen be caught without its bar).
        fflush(nil)
        write(text)
    }

    /// Prints a whole line, above the live bar when there is one (the next step redraws it).
    func printAbove(_ line: String) {
        if live { write(Self.clearLine) }
        print(line)
        fflush(nil)
    }

    /// A warning on standard error, above the live bar.
    func warn(_ sentence: String) {
        if live { write(Self.clearLine) }
        fflush(nil)
        try? FileHandle.standardError.write(contentsOf: Data("warning: \(sentence)\n".utf8))  // write(_:) traps when the write fails
    }

    static let clearLine = "\r\u{1B}[2K"

    /// Writes to standard output, ignoring failures (a closed terminal): FileHandle.write(_:) would trap on them.
    private func write(_ text: String) { try? FileHandle.standardOutput.write(contentsOf: Data(text.utf8)) }

    /// The live line: a bar, the step, this step's loss, the speed and the time left, fitted to
    /// `columns` (a line longer than the terminal wraps, and "\r" then redraws only its last part).
    /// What does not fit goes, least useful first: memory, learning rate, the target-token speed, the
    /// bar (8 to 24 cells), the speed, the time left.
    static func barLine(_ p: TrainingProgress, memoryMB: Double, columns: Int) -> String {
        // Three columns stay empty: the "^C" a terminal echoes after the line must not wrap it, or the
        // clearing that follows would erase only the wrapped part.
        let room = columns - 3
        let minimumBar = 8, fullBar = 24
        var used = -2  // each part costs its width and the two spaces before it
        func take(_ width: Int) -> Bool {
            guard used + 2 + width <= room else { return false }
            used += 2 + width
            return true
        }
        let step = "\(p.step)/\(p.totalSteps)", loss = String(format: "loss %.3f", p.loss), eta = "ETA " + duration(p.secondsLeft)
        let speed = String(format: "%.0f tok/s", p.processedTokensPerSecond), target = String(format: " (%.0f target)", p.tokensPerSecond)
        let lr = String(format: "lr %.1e", p.learningRate), memory = String(format: "%.0f MB", memoryMB)
        var kept = Set([step, loss, eta].filter { take($0.count) })
        if take(speed.count) { kept.insert(speed) }
        let bar = take(minimumBar)
        var speedText = speed
        if kept.contains(speed) && used + target.count <= room { used += target.count; speedText += target }
        for field in [lr, memory] where take(field.count) { kept.insert(field) }
        var parts = [step, loss, lr, speed, eta, memory].filter(kept.contains).map { $0 == speed ? speedText : $0 }
        if bar {
            let width = min(fullBar, minimumBar + room - used)
            let filled = p.totalSteps > 0 ? width * p.step / p.totalSteps : 0
            parts.insert(String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled), at: 0)
        }
        return String(parts.joined(separator: "  ").prefix(max(0, room)))
    }

    /// The terminal's width in columns, 80 where it cannot be asked.
    static func terminalColumns() -> Int {
        var size = winsize()
        #if os(Linux)
        let asked = ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size)
        #else
        let asked = ioctl(STDOUT_FILENO, TIOCGWINSZ, &size)
        #endif
        return asked == 0 && size.ws_col > 0 ? Int(size.ws_col) : 80
    }

    func reportLine(_ p: TrainingProgress, _ r: TrainingProgress.Report) -> String {
        var line = String(format: "step %d/%d  avg loss %.4f", p.step, p.totalSteps, r.loss)
        if let v = r.validationLoss { line += String(format: "  val loss %.4f", v) }
        line += String(format: "  lr %.2e  %.0f tok/s (%.0f target)  %.0f MB", p.learningRate, r.processedTokensPerSecond,
                       r.tokensPerSecond, peakResidentMB())
        if p.savedBest { line += "  (checkpoint and best adapter saved)" } else if p.savedCheckpoint { line += "  (checkpoint saved)" }
        return line
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "--" }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : "\(s / 60)m\(String(format: "%02d", s % 60))s"
    }
}
