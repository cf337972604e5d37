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

    /// Throws, before any work is done, unless `folder` is a writable folder or can be made: its
    /// nearest existing ancestor must be a writable folder (the missing ones are created on writing).
    static func requireWritable(folder: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder, isDirectory: &isDir) {
            guard isDir.boolValue else { throw LoRAError("\(folder) is a file, but a folder is needed there") }
            guard access(folder, W_OK) == 0 else { throw LoRAError("cannot write into \(folder): \(String(cString: strerror(errno)))") }
            return
        }
        try requireCreatable(folder)
    }

    /// Throws unless `file` can be written: an existing file must be writable, and a new one's folder
    /// must exist or be creatable.
    static func requireWritable(file: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: file, isDirectory: &isDir) {
            guard !isDir.boolValue else { throw LoRAError("\(file) is a folder, but a file is needed there") }
            guard access(file, W_OK) == 0 else { throw LoRAError("cannot write \(file): \(String(cString: strerror(errno)))") }
            return
        }
        try requireCreatable(file)
    }

    /// Creates the missing folders a new file at `path` goes into.
    static func createParent(of path: String) throws {
        let parent = (absolute(path) as NSString).deletingLastPathComponent
        try LoRAError.writing(parent) { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) }
    }

    /// Checks the nearest existing ancestor of a path that does not exist yet.
    private static func requireCreatable(_ path: String) throws {
        var parent = (absolute(path) as NSString).deletingLastPathComponent
        while !FileManager.default.fileExists(atPath: parent) { parent = (parent as NSString).deletingLastPathComponent }
        var isDir: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: parent, isDirectory: &isDir)
        guard isDir.boolValue else { throw LoRAError("cannot create \(path): \(parent) is a file, not a folder") }
        guard access(parent, W_OK) == 0 else { throw LoRAError("cannot create \(path): \(parent) is not writable") }
    }

    /// The absolute form of a path, relative ones taken from the current folder.
    static func absolute(_ path: String) -> String {
        let full = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        return (full as NSString).standardizingPath
    }

    /// The path as one shell word, for commands printed for the user to run.
    static func shellQuoted(_ path: String) -> String {
        let plain = path.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "/._-+=:@%,".unicodeScalars.contains($0) }
        return plain && !path.isEmpty ? path : "'" + path.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
