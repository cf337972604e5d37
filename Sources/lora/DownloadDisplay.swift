import Foundation
import LoRAKit

/// Shows a Hub download on standard error (standard output may be the command's data): on a
/// terminal, a line per file redrawn in place; elsewhere, one line per file when it is done.
final class DownloadDisplay {
    let repo: String
    let live: Bool
    /// When the line was last drawn: at most ten times a second.
    private var lastDraw: UInt64 = 0

    init(repo: String, live: Bool = isatty(STDERR_FILENO) != 0) {
        self.repo = repo
        self.live = live
    }

    func show(_ p: HubDownloadProgress) {
        let speed = String(format: "%.1f MB/s", p.bytesPerSecond / 1e6)
        let now = DispatchTime.now().uptimeNanoseconds
        if p.finished {
            write((live ? "\r\u{1B}[2K" : "") + "downloaded \(repo)/\(p.file) (\(InspectCommand.bytes(Int(p.total))), \(speed))\n")
        } else if live && now - lastDraw > 100_000_000 {
            lastDraw = now
            let fraction = p.total > 0 ? Double(p.received) / Double(p.total) : 1
            let width = 24, filled = min(width, Int(Double(width) * fraction))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let sizes = "\(InspectCommand.bytes(Int(p.received))) of \(InspectCommand.bytes(Int(p.total)))"
            // \r and "erase line" redraw in place.
            write("\r\u{1B}[2K\(repo)/\(p.file) \(bar) \(sizes)  " + String(format: "%.0f%%", 100 * fraction) + "  \(speed)")
        }
    }

    /// Ignores failures (a closed terminal): FileHandle.write(_:) would trap on them.
    private func write(_ text: String) { try? FileHandle.standardError.write(contentsOf: Data(text.utf8)) }
}
