import Foundation

/// An exclusive lock on an adapter folder, held by the run that trains into it: flock on
/// `FOLDER/.lock`, which names the holder's pid. The kernel drops a flock when its process ends,
/// however it ends (SIGKILL included), so a killed run never leaves the folder locked.
public final class AdapterFolderLock: @unchecked Sendable {
    public static let fileName = ".lock"
    public let folder: String
    private var fd: Int32

    /// Takes the lock, creating the folder if needed; throws, naming the holder, when another open
    /// lock holds it (another process, or another lock object in this one).
    public init(folder: String) throws {
        self.folder = folder
        var isFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), !isFolder.boolValue {
            throw LoRAError("the adapter folder \(folder) is a file")
        }
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            throw LoRAError("cannot create the adapter folder \(folder): \(String(cString: strerror(errno)))")
        }
        let path = folder + "/" + Self.fileName
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LoRAError("cannot open the lock file \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = Self.holder(fd)
            close(fd)
            throw LoRAError("\(folder) is in use by another lora train (pid \(holder.map(String.init) ?? "unknown"))")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Takes the lock if it is free; nil when another run holds it.
    public static func attempt(folder: String) -> AdapterFolderLock? { try? AdapterFolderLock(folder: folder) }

    /// Releases the lock now (it is also released when the object goes away).
    public func release() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
    }

    deinit { release() }

    /// The pid written by the holder, when it has written one.
    private static func holder(_ fd: Int32) -> Int? {
        var bytes = [UInt8](repeating: 0, count: 24)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return Int(String(decoding: bytes[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
