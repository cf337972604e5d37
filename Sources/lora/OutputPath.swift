import Foundation
import LoRAKit

/// Where merge and convert write: an existing file or non-empty folder is replaced only with
/// --force, and then only once its replacement is complete.
enum OutputPath {
    /// Whether `path` holds something that writing would replace (a file, or a folder with entries).
    static func isTaken(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { return false }
        return !isDir.boolValue || !((try? FileManager.default.contentsOfDirectory(atPath: path))?.isEmpty ?? false)
    }

    /// Throws unless `path` is free or `force` is set.
    static func check(_ path: String, force: Bool) throws {
        if !force && isTaken(path) { throw LoRAError("output \(path) already exists; add --force to replace it") }
    }

    /// Calls `write` with `path`, or, when `path` is taken (and `force` set), with a temporary sibling
    /// that then replaces it.
    static func write(_ path: String, force: Bool, _ write: (String) throws -> Void) throws {
        try check(path, force: force)
        guard isTaken(path) else { return try write(path) }
        let fm = FileManager.default, fresh = path + ".new-\(getpid())"
        try? fm.removeItem(atPath: fresh)
        do {
            try write(fresh)
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue { try fm.removeItem(atPath: path) }
            guard rename(fresh, path) == 0 else { throw LoRAError("cannot move \(fresh) to \(path): \(String(cString: strerror(errno)))") }
        } catch {
            try? fm.removeItem(atPath: fresh)
            throw error
        }
    }
}
