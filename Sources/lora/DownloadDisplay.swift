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
            write((live ? "\r\u{1B}[2K" : "") + "downloaded \(repo)/\(p.file) (\(Self.size(p.total)), \(speed))\n")
        } else if live && now - lastDraw > 100_000_000 {
            lastDraw = now
            let percent = String(format: "%.0f%%", p.total > 0 ? 100 * Double(p.received) / Double(p.total) : 100)
            // \r and "erase line" redraw in place.
            write("\r\u{1B}[2K\(repo)/\(p.file)  \(Self.size(p.received)) of \(Self.size(p.total))  \(percent)  \(speed)")
        }
    }

    static func size(_ bytes: Int64) -> String {
        let x = Double(bytes)
        if x >= 1e9 { return String(format: "%.2f GB", x / 1e9) }
        if x >= 1e6 { return String(format: "%.1f MB", x / 1e6) }
        if x >= 1e3 { return String(format: "%.1f kB", x / 1e3) }
        return "\(bytes) B"
    }

    /// Ignores failures (a closed terminal): FileHandle.write(_:) would trap on them.
    private func write(_ text: String) { try? FileHandle.standardError.write(contentsOf: Data(text.utf8)) }
}
