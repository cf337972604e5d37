import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// How far one file's download has got, for a progress display.
public struct HubDownloadProgress: Sendable {
    public let file: String
    public let received: Int64
    public let total: Int64
    public let bytesPerSecond: Double
    public let finished: Bool
}

/// Resolves a Hub model id to local files: the cache when it already holds the model, else a
/// download into the cache as huggingface_hub's `snapshot_download` makes one (the same layout, so
/// each tool uses what the other fetched). Only what lora reads is fetched: config, tokenizer and
/// generation files, and the safetensors weights (not pickled .bin files; a GGUF when one is named).
/// Interrupted downloads resume; every file is checked against the size the Hub reports, and an LFS
/// file against its SHA-256, before it enters the cache.
public struct HubClient {
    public var cache: HubCache
    /// HF_ENDPOINT, for a mirror; https://huggingface.co otherwise.
    public var endpoint: String
    /// Sent as `Authorization: Bearer`: HF_TOKEN, else the token file `hf auth login` writes.
    public var token: String?
    /// HF_HUB_OFFLINE: the cache only, never the network.
    public var offline: Bool

    static let modelFiles: Set<String> = ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                          "special_tokens_map.json", "model.safetensors.index.json"]

    public init(environment env: [String: String] = ProcessInfo.processInfo.environment) {
        cache = HubCache(environment: env)
        endpoint = String((env["HF_ENDPOINT"] ?? "https://huggingface.co").reversed().drop { $0 == "/" }.reversed())
        let tokenFile = env["HF_TOKEN_PATH"] ?? HubCache.home(env) + "/token"
        token = [env["HF_TOKEN"], env["HUGGING_FACE_HUB_TOKEN"], try? String(contentsOfFile: tokenFile, encoding: .utf8)]
            .lazy.compactMap { $0?.trimmingCharacters(in: .whitespacesAndNewlines) }.first { !$0.isEmpty }
        let truthy: Set<String> = ["1", "ON", "YES", "TRUE"]
        offline = [env["HF_HUB_OFFLINE"], env["TRANSFORMERS_OFFLINE"]].contains { truthy.contains(($0 ?? "").uppercased()) }
    }

    /// The model folder (or GGUF file) for `id`, downloading what the cache lacks.
    public func resolve(_ id: HubModelID, progress: (HubDownloadProgress) -> Void = { _ in }) throws -> String {
        if let path = cache.cached(id) { return path }
        guard !offline else { throw LoRAError("\(id.description) is not in the Hugging Face cache (\(cache.folder(id))), and HF_HUB_OFFLINE is set") }
        guard let base = URL(string: endpoint), base.scheme == "http" || base.scheme == "https", base.host != nil else {
            throw LoRAError("HF_ENDPOINT must be an http or https URL, not \(endpoint)")
        }
        let (commit, siblings) = try repoInfo(id)
        var files = try modelFiles(id, siblings)
        for file in files where file.hasSuffix(".json") { try fetch(id, commit: commit, file: file, progress: progress) }
        let snapshot = cache.snapshot(id, commit: commit)
        if files.contains("model.safetensors.index.json") {
            guard let index = try? Data(contentsOf: URL(fileURLWithPath: snapshot + "/model.safetensors.index.json")),
                  let shards = HubCache.shards(index), shards.allSatisfy({ Self.isPlainName($0) && siblings.contains($0) }) else {
                throw LoRAError("\(id.repo)'s model.safetensors.index.json does not list shards that the repository holds")
            }
            files = shards.sorted()
        }
        // The weights' sizes, all known before the first byte of them is fetched, so that a disk too small is found first.
        let weights = try files.filter { !$0.hasSuffix(".json") && !linked(id, commit: commit, $0) }.map { ($0, try metadata(id, commit: commit, file: $0)) }
        try checkSpace(id, weights.map(\.1))
        for (file, meta) in weights { try fetch(id, commit: commit, file: file, meta, progress: progress) }
        try cache.writeRef(id, commit: commit)
        return id.file.map { snapshot + "/" + $0 } ?? snapshot
    }

    // MARK: - What to fetch

    /// The repository's commit for `id`'s revision and its file names, from the Hub's model API.
    func repoInfo(_ id: HubModelID) throws -> (commit: String, files: Set<String>) {
        let url = endpoint + "/api/models/" + id.repo + "/revision/" + id.revision
        let (response, body) = try http("GET", url, id: id, file: nil, maxBody: 64 << 20)
        guard let json = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
              let sha = json["sha"] as? String, HubCache.isCommitHash(sha), let siblings = json["siblings"] as? [[String: Any]] else {
            throw LoRAError("\(endpoint) answered \(url) with something other than a model's description (HTTP \(response.statusCode))")
        }
        return (sha, Set(siblings.compactMap { $0["rfilename"] as? String }))
    }

    /// The files lora needs out of a repository's: config, tokenizer, generation config, and the safetensors weights.
    func modelFiles(_ id: HubModelID, _ files: Set<String>) throws -> [String] {
        if let file = id.file {
            guard files.contains(file) else { throw LoRAError("\(id.repo) on \(endpoint) has no file \(file)") }
            return [file]
        }
        let weights = files.contains("model.safetensors.index.json") ? [] : files.filter { $0 == "model.safetensors" }
        guard files.contains("model.safetensors.index.json") || !weights.isEmpty else {
            let ggufs = files.filter { $0.hasSuffix(".gguf") && Self.isPlainName($0) }.sorted()
            if let first = ggufs.first {
                throw LoRAError("\(id.repo) holds GGUF files (\(ggufs.joined(separator: ", "))); name one: --model \(id.repo)/\(first)")
            }
            throw LoRAError("\(id.repo) on \(endpoint) has no model.safetensors or model.safetensors.index.json (pickled .bin weights are never read)")
        }
        guard files.contains("config.json") else { throw LoRAError("\(id.repo) on \(endpoint) has no config.json") }
        return (files.intersection(Self.modelFiles) + weights).sorted()
    }

    /// A file name in the repository's top folder: what the Hub sends becomes a path in the cache.
    static func isPlainName(_ name: String) -> Bool { !name.isEmpty && !name.contains("/") && !name.hasPrefix(".") && !name.contains("\0") }

    /// Refuses to start downloads the disk cannot hold (this also bounds what a server may claim).
    func checkSpace(_ id: HubModelID, _ files: [(etag: String, size: Int64)]) throws {
        // Saturating: the sizes are the server's word, and two of Int64.max must not trap.
        let needed = files.reduce(Int64(0)) { total, file in
            let sum = total.addingReportingOverflow(max(0, file.size - (Self.fileSize(cache.blob(id, etag: file.etag) + ".incomplete") ?? 0)))
            return sum.overflow ? .max : sum.partialValue
        }
        try FileManager.default.createDirectory(atPath: cache.root, withIntermediateDirectories: true)  // for the file system to be asked
        let attributes = try? FileManager.default.attributesOfFileSystem(forPath: cache.root)
        if let free = (attributes?[.systemFreeSize] as? NSNumber)?.int64Value, needed > free {
            throw LoRAError("\(id.repo) needs \(Self.megabytes(needed)) more in \(cache.root), which has \(Self.megabytes(free)) free")
        }
    }

    static func fileSize(_ path: String) -> Int64? { ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value }

    func linked(_ id: HubModelID, commit: String, _ file: String) -> Bool {
        FileManager.default.fileExists(atPath: cache.snapshot(id, commit: commit) + "/" + file)
    }

    static func megabytes(_ bytes: Int64) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }

    // MARK: - One file

    /// A file's ETag (the name of its blob) and size, from a HEAD on its resolve URL.
    func metadata(_ id: HubModelID, commit: String, file: String) throws -> (etag: String, size: Int64) {
        let (response, _) = try http("HEAD", resolveURL(id, commit: commit, file: file), id: id, file: file, maxBody: 0)
        let rawEtag = response.value(forHTTPHeaderField: "X-Linked-Etag") ?? response.value(forHTTPHeaderField: "ETag") ?? ""
        // huggingface_hub's _normalize_etag: a weak W/ prefix and the quotes go.
        let etag = String(rawEtag.trimmingCharacters(in: .whitespaces).drop { $0 == "W" || $0 == "/" }).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        let sizeText = response.value(forHTTPHeaderField: "X-Linked-Size")
            ?? ((300..<400).contains(response.statusCode) ? nil : response.value(forHTTPHeaderField: "Content-Length"))
        guard !etag.isEmpty, etag.count <= 128, etag.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw LoRAError("\(endpoint) sent no usable ETag for \(id.repo)/\(file) (\(rawEtag.isEmpty ? "none" : rawEtag))")
        }
        guard let size = sizeText.flatMap({ Int64($0.trimmingCharacters(in: .whitespaces)) }), size >= 0 else {
            throw LoRAError("\(endpoint) sent no usable size for \(id.repo)/\(file) (\(sizeText ?? "none"))")
        }
        return (etag, size)
    }

    func resolveURL(_ id: HubModelID, commit: String, file: String) -> String {
        endpoint + "/" + id.repo + "/resolve/" + commit + "/" + (file.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? file)
    }

    /// Puts one file into the cache: blobs/ETAG (downloaded into ETAG.incomplete, continued where an
    /// earlier run stopped, checked, then renamed) and the snapshot's link to it.
    func fetch(_ id: HubModelID, commit: String, file: String, _ meta: (etag: String, size: Int64)? = nil,
               progress: (HubDownloadProgress) -> Void) throws {
        let fm = FileManager.default
        guard !linked(id, commit: commit, file) else { return }
        let (etag, size) = try meta ?? metadata(id, commit: commit, file: file)
        let blob = cache.blob(id, etag: etag), partial = blob + ".incomplete"
        try fm.createDirectory(atPath: cache.folder(id) + "/blobs", withIntermediateDirectories: true)
        // huggingface_hub's lock file for this blob, so a Python download of the same file waits for this one and vice versa.
        let lockPath = cache.lock(id, etag: etag)
        try fm.createDirectory(atPath: (lockPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let lock = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0 else { throw LoRAError("cannot open \(lockPath): \(String(cString: strerror(errno)))") }
        defer { close(lock) }
        _ = flock(lock, LOCK_EX)  // best effort, as huggingface_hub's: the checks below do not depend on it
        if !fm.fileExists(atPath: blob) {
            try download(id, commit: commit, file: file, size: size, to: partial, progress: progress)
            try verify(id, file: file, partial, size: size, etag: etag)
            try fm.moveItem(atPath: partial, toPath: blob)
        }
        try cache.link(id, commit: commit, file: file, etag: etag)
    }

    /// Checks a finished download against the Hub's size and, for an LFS file, its SHA-256; a mismatch deletes it.
    func verify(_ id: HubModelID, file: String, _ path: String, size: Int64, etag: String) throws {
        let got = Self.fileSize(path) ?? 0
        guard got == size else {
            throw LoRAError("the download of \(id.repo)/\(file) stopped at \(got) of \(size) bytes; run again to continue it")
        }
        guard HubCache.isSHA256(etag) else { return }
        let sha = try SHA256.hex(ofFile: path)
        guard sha == etag.lowercased() else {
            try? FileManager.default.removeItem(atPath: path)
            throw LoRAError("\(id.repo)/\(file) from \(endpoint) has SHA-256 \(sha), not the \(etag) the Hub lists; the download was deleted")
        }
    }

    /// Streams the file into `path`, continuing a partial download with a Range request.
    func download(_ id: HubModelID, commit: String, file: String, size: Int64, to path: String,
                  progress: (HubDownloadProgress) -> Void) throws {
        var have = Self.fileSize(path) ?? 0
        if have > size { have = 0 }  // longer than the file can be: not a prefix of it
        if have == 0, !FileManager.default.createFile(atPath: path, contents: nil) {
            throw LoRAError("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        guard have < size else { return }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw LoRAError("cannot write \(path)") }
        defer { try? handle.close() }
        try handle.truncate(atOffset: UInt64(have))
        try handle.seekToEnd()
        let transfer = Transfer(sink: handle, offset: have, size: size)
        var headers = ["Accept-Encoding": "identity"]
        if have > 0 { headers["Range"] = "bytes=\(have)-" }
        let started = Date()
        func report(_ received: Int64, finished: Bool) {
            let seconds = Date().timeIntervalSince(started)
            let speed = seconds > 0 ? Double(max(0, received - have)) / seconds : 0  // received restarts at 0 when the server ignored Range
            progress(HubDownloadProgress(file: file, received: received, total: size, bytesPerSecond: speed, finished: finished))
        }
        _ = try perform(transfer, "GET", resolveURL(id, commit: commit, file: file), headers: headers, id: id, file: file) { report($0, finished: false) }
        if let problem = transfer.problem { throw LoRAError("\(endpoint) \(problem) for \(id.repo)/\(file)") }
        report(transfer.received, finished: true)
    }

    // MARK: - HTTP

    /// One request whose whole (small) body is wanted; HTTP errors become a sentence naming the repository and file.
    func http(_ method: String, _ url: String, id: HubModelID, file: String?, maxBody: Int) throws -> (HTTPURLResponse, Data) {
        let transfer = Transfer(sink: nil, offset: 0, size: Int64(maxBody))
        let response = try perform(transfer, method, url, headers: ["Accept-Encoding": "identity"], id: id, file: file) { _ in }
        if let problem = transfer.problem { throw LoRAError("\(endpoint) \(problem) for \(id.repo)") }
        return (response, transfer.body)
    }

    /// Runs a request to completion, reporting the bytes received about ten times a second on this thread.
    /// A HEAD stays on the Hub's host, as huggingface_hub's does: its redirect to a CDN carries the X-Linked headers.
    private func perform(_ transfer: Transfer, _ method: String, _ url: String, headers: [String: String], id: HubModelID, file: String?,
                         progress: (Int64) -> Void) throws -> HTTPURLResponse {
        guard let requestURL = URL(string: url) else { throw LoRAError("\(url) is not a valid URL") }
        var request = URLRequest(url: requestURL, timeoutInterval: method == "GET" && file != nil ? 60 : 10)
        request.httpMethod = method
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        request.setValue("swift-lora", forHTTPHeaderField: "User-Agent")
        if let token { request.setValue("Bearer " + token, forHTTPHeaderField: "Authorization") }
        transfer.hubHost = requestURL.host
        transfer.followsOtherHosts = method != "HEAD"
        let session = URLSession(configuration: .ephemeral, delegate: transfer, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        session.dataTask(with: request).resume()
        while transfer.done.wait(timeout: .now() + 0.1) == .timedOut { progress(transfer.received) }
        let what = id.repo + (file.map { "/" + $0 } ?? "")
        if let error = transfer.error, transfer.problem == nil {
            if transfer.sink != nil, transfer.received > transfer.offset {
                throw LoRAError("the download of \(what) stopped at \(transfer.received) of \(transfer.size) bytes (\(error.localizedDescription)); run again to continue it")
            }
            throw LoRAError("cannot reach \(endpoint) for \(what) (\(error.localizedDescription)), and \(id.description) is not in the Hugging Face cache (\(cache.root))")
        }
        guard let response = transfer.response else { throw LoRAError("\(endpoint) sent no response for \(what)") }
        switch response.statusCode {
        case 200..<400: return response
        case 401, 403:
            if token == nil { throw LoRAError("\(id.repo) on \(endpoint) needs a token (HTTP \(response.statusCode)): set HF_TOKEN, or check the name") }
            throw LoRAError("\(endpoint) refused the token for \(id.repo) (HTTP \(response.statusCode)): the repository may be gated; ask for access at \(endpoint)/\(id.repo)")
        case 404:
            if response.value(forHTTPHeaderField: "X-Error-Code") == "RevisionNotFound" {
                throw LoRAError("\(id.repo) on \(endpoint) has no revision \(id.revision) (HTTP 404)")
            }
            throw LoRAError("\(what) was not found on \(endpoint) (HTTP 404), nor is \(id.description) a local path")
        default: throw LoRAError("\(endpoint) answered HTTP \(response.statusCode) for \(what)")
        }
    }
}

/// One request's state, filled by URLSession's delegate queue and read by the waiting thread after `done`.
private final class Transfer: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    /// Where a download's bytes go, from `offset` on; nil to keep a small body in `body`, at most `size` bytes.
    let sink: FileHandle?
    let offset: Int64
    let size: Int64
    var hubHost: String?
    var followsOtherHosts = true
    let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var _received: Int64
    var received: Int64 { lock.withLock { _received } }
    var body = Data()
    var response: HTTPURLResponse?
    var error: Error?
    /// What was wrong with the answer itself (a size it exceeded, a range it ignored), phrased to follow the endpoint.
    var problem: String?

    init(sink: FileHandle?, offset: Int64, size: Int64) {
        self.sink = sink
        self.offset = offset
        self.size = size
        _received = offset
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        let sameHost = request.url?.host == hubHost
        guard sameHost || followsOtherHosts else { return completionHandler(nil) }
        var next = request
        if !sameHost { next.setValue(nil, forHTTPHeaderField: "Authorization") }  // the token is the Hub's, not the CDN's
        completionHandler(next)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        let http = response as? HTTPURLResponse
        self.response = http
        guard let http, let sink, (200..<300).contains(http.statusCode) else { return completionHandler(.allow) }
        if http.statusCode == 206 {
            // Content-Range: bytes START-END/TOTAL must continue the partial file exactly.
            let range = http.value(forHTTPHeaderField: "Content-Range") ?? ""
            guard range.hasPrefix("bytes \(offset)-"), range.hasSuffix("/\(size)") else {
                problem = "answered the range request with Content-Range \"\(range)\", not bytes \(offset)- of \(size)"
                return completionHandler(.cancel)
            }
        } else if offset > 0 {
            // The server ignored Range and sends the whole file: start the partial file over.
            do { try sink.truncate(atOffset: 0) } catch { problem = "sent a whole file that could not replace the partial one (\(error.localizedDescription))"; return completionHandler(.cancel) }
            lock.withLock { _received = 0 }
        }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard let http = response, (200..<300).contains(http.statusCode) else { return }
        let total = received + Int64(data.count)
        guard total <= size else {
            problem = "sent more than the \(size) bytes expected"
            return dataTask.cancel()
        }
        if let sink {
            do { try sink.write(contentsOf: data) } catch {
                problem = "sent data that could not be saved (\(error.localizedDescription))"
                return dataTask.cancel()
            }
        } else {
            body.append(data)
        }
        lock.withLock { _received = total }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        self.error = error
        done.signal()
    }
}
