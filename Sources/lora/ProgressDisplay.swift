import Foundation
import LoRAKit

/// Shows a training run's progress: on a terminal, a bar redrawn in place after every step with
/// report lines printed above it; elsewhere (a file, a pipe, CI logs) only the report lines.
final class ProgressDisplay {
    let live: Bool
    /// When the bar was last drawn: redrawn at most ten times a second, so tiny models are not slowed by the terminal.
    private var lastDraw: UInt64 = 0

    init(live: Bool = isatty(STDOUT_FILENO) != 0) { self.live = live }

    func show(_ p: TrainingProgress) {
        if let report = p.report { printAbove(reportLine(p, report)) }
        let now = DispatchTime.now().uptimeNanoseconds
        if live && (now - lastDraw > 100_000_000 || p.report != nil || p.step == p.totalSteps) {
            lastDraw = now
            let width = 24, filled = Int(Double(width) * Double(p.step) / Double(p.totalSteps))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let line = String(format: "%@ %d/%d  loss %.3f  lr %.1e  %.0f tok/s  ETA %@  %.0f MB", bar, p.step, p.totalSteps, p.loss,
                              p.learningRate, p.tokensPerSecond, Self.duration(p.secondsLeft), peakResidentMB())
            // \r and "erase line" redraw the bar in place.
            write("\r\u{1B}[2K" + line)
            if p.step == p.totalSteps { write("\r\u{1B}[2K") }
        }
        fflush(nil)
    }

    /// Prints a whole line, above the live bar when there is one (the next step redraws it).
    func printAbove(_ line: String) {
        if live { write("\r\u{1B}[2K") }
        print(line)
        fflush(nil)
    }

    /// Writes to standard output, ignoring failures (a closed terminal): FileHandle.write(_:) would trap on them.
    private func write(_ text: String) { try? FileHandle.standardOutput.write(contentsOf: Data(text.utf8)) }

    func reportLine(_ p: TrainingProgress, _ r: TrainingProgress.Report) -> String {
        var line = String(format: "step %d/%d  loss %.4f  lr %.2e  %.0f tok/s  %.0f MB", p.step, p.totalSteps, r.loss,
                          p.learningRate, r.tokensPerSecond, peakResidentMB())
        if let v = r.validationLoss { line += String(format: "  val_loss %.4f", v) }
        if p.savedCheckpoint { line += "  (checkpoint saved)" }
        return line
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "--" }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : "\(s / 60)m\(String(format: "%02d", s % 60))s"
    }
}
