import Foundation
import LoRAKit

/// The --metrics-file of a training run: opened for appending before training starts, so that a
/// path that cannot be written is refused up front; every write failure (a full disk) is an error
/// naming the path.
final class MetricsFile {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        try OutputPath.createParent(of: path)
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LoRAError("cannot open metrics file \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    /// Appends one JSON object and a newline.
    func append(_ object: [String: Any]) throws {
        var data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        data.append(0x0A)
        try data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw LoRAError("cannot write metrics file \(path): \(String(cString: strerror(n < 0 ? errno : ENOSPC)))") }
                offset += n
            }
        }
    }
}
