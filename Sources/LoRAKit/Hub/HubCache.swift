import Foundation

/// A model on the Hugging Face Hub named the way `--model` takes it: `ORG/NAME`, `ORG/NAME@REVISION`,
/// or, for a repository of GGUF files, one of them as `ORG/NAME/FILE.gguf` (`ORG/NAME@REVISION/FILE.gguf`).
public struct HubModelID: Equatable, Sendable, CustomStringConvertible {
    public let repo: String
    public let revision: String
    /// The one file wanted, for a GGUF; nil for a Hugging Face model folder.
    public let file: String?

    /// nil unless `spec` has that form; a spec that is a local path is the caller's to rule out first.
    public init?(_ spec: String) {
        var parts = spec.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || (parts.count == 3 && parts[2].hasSuffix(".gguf")) else { return nil }
        file = parts.count == 3 ? parts.removeLast() : nil
        var revision = "main"
        if let at = parts[1].firstIndex(of: "@") {
            revision = String(parts[1][parts[1].index(after: at)...])
            parts[1] = String(parts[1][..<at])
        }
        // huggingface_hub's rules for repo ids (validate_repo_id); a NAME like x.gguf is a missing file, not a repo.
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        let name = parts[0] + "/" + parts[1]
        guard parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(allowed.contains) && !"-.".contains($0.first!) && !"-.".contains($0.last!) }),
              name.count <= 96, !name.contains("--"), !name.contains(".."), !parts[1].hasSuffix(".gguf"), !parts[1].hasSuffix(".safetensors"),
              !revision.isEmpty, revision.allSatisfy(allowed.contains), !revision.hasPrefix("."),
              file.map({ !$0.hasPrefix(".") && $0.allSatisfy(allowed.contains) }) ?? true
        else { return nil }
        repo = name
        self.revision = revision
    }

    public var description: String { repo + (revision == "main" ? "" : "@" + revision) + (file.map { "/" + $0 } ?? "") }
}

/// huggingface_hub's cache on disk, which this reads and writes in its own layout so that either tool
/// uses what the other downloaded:
///
///     CACHE/models--ORG--NAME/refs/REVISION           the commit a branch or tag last resolved to
///     CACHE/models--ORG--NAME/snapshots/COMMIT/FILE    a relative symlink to ../../blobs/ETAG
///     CACHE/models--ORG--NAME/blobs/ETAG               the file; ETAG is its SHA-256 for LFS files, its git blob SHA-1 otherwise
///     CACHE/models--ORG--NAME/blobs/ETAG.incomplete    a download under way or interrupted, continued by the next one
///     CACHE/.locks/models--ORG--NAME/ETAG.lock         flock'd while a process downloads that blob
public struct HubCache: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    /// Where huggingface_hub looks: HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
    public init(environment env: [String: String] = ProcessInfo.processInfo.environment) {
        root = Self.expand(env["HF_HUB_CACHE"] ?? env["HUGGINGFACE_HUB_CACHE"] ?? Self.home(env) + "/hub")
    }

    /// HF_HOME, where the token file lives too.
    static func home(_ env: [String: String]) -> String {
        expand(env["HF_HOME"] ?? (env["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/huggingface")
    }

    private static func expand(_ path: String) -> String { (path as NSString).expandingTildeInPath }

    public func folder(_ id: HubModelID) -> String { root + "/models--" + id.repo.replacingOccurrences(of: "/", with: "--") }
    func blob(_ id: HubModelID, etag: String) -> String { folder(id) + "/blobs/" + etag }
    func lock(_ id: HubModelID, etag: String) -> String { root + "/.locks/" + (folder(id) as NSString).lastPathComponent + "/" + etag + ".lock" }
    public func snapshot(_ id: HubModelID, commit: String) -> String { folder(id) + "/snapshots/" + commit }

    /// The commit `id`'s revision names here: the revision itself when it is a full commit hash, else what refs/ recorded.
    public func commit(_ id: HubModelID) -> String? {
        if Self.isCommitHash(id.revision) { return id.revision }
        guard let text = try? String(contentsOfFile: folder(id) + "/refs/" + id.revision, encoding: .utf8) else { return nil }
        let commit = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return Self.isCommitHash(commit) ? commit : nil
    }

    /// The model's snapshot folder (or its GGUF file) when the cache already holds all a model needs:
    /// config.json and every safetensors shard (the index's, or model.safetensors). No network.
    public func cached(_ id: HubModelID) -> String? {
        guard let commit = commit(id) else { return nil }
        let snapshot = snapshot(id, commit: commit)
        let fm = FileManager.default
        if let file = id.file { return fm.fileExists(atPath: snapshot + "/" + file) ? snapshot + "/" + file : nil }
        guard fm.fileExists(atPath: snapshot + "/config.json") else { return nil }
        if let index = try? Data(contentsOf: URL(fileURLWithPath: snapshot + "/model.safetensors.index.json")) {
            guard let shards = Self.shards(index) else { return nil }
            return shards.allSatisfy { fm.fileExists(atPath: snapshot + "/" + $0) } ? snapshot : nil
        }
        return fm.fileExists(atPath: snapshot + "/model.safetensors") ? snapshot : nil
    }

    /// The shard files a model.safetensors.index.json names (its weight_map's values); nil when it is malformed.
    static func shards(_ index: Data) -> Set<String>? {
        guard let json = try? JSONSerialization.jsonObject(with: index) as? [String: Any],
              let map = json["weight_map"] as? [String: Any] else { return nil }
        let files = map.values.compactMap { $0 as? String }
        return files.count == map.count ? Set(files) : nil
    }

    /// Records that `id`'s revision resolved to `commit`, written whole (a temporary file renamed) so that a reader never sees half of it.
    func writeRef(_ id: HubModelID, commit: String) throws {
        guard id.revision != commit else { return }
        let path = folder(id) + "/refs/" + id.revision
        try FileManager.default.createDirectory(atPath: folder(id) + "/refs", withIntermediateDirectories: true)
        try Data(commit.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Points snapshots/COMMIT/FILE at its blob with a relative link, as huggingface_hub does, so the cache can be moved.
    func link(_ id: HubModelID, commit: String, file: String, etag: String) throws {
        let pointer = snapshot(id, commit: commit) + "/" + file
        let fm = FileManager.default
        try fm.createDirectory(atPath: (pointer as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? fm.removeItem(atPath: pointer)
        let depth = file.split(separator: "/").count + 1  // up from snapshots/COMMIT/ and any folders in FILE
        try fm.createSymbolicLink(atPath: pointer, withDestinationPath: String(repeating: "../", count: depth) + "blobs/" + etag)
    }

    static func isCommitHash(_ s: String) -> Bool { s.count == 40 && s.allSatisfy(\.isHexDigit) }
    /// An LFS file's ETag is its SHA-256; a small file's is its git blob SHA-1, which only the size check covers.
    static func isSHA256(_ s: String) -> Bool { s.count == 64 && s.allSatisfy(\.isHexDigit) }
}
