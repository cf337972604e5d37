import Foundation

// Foundation's file errors print as `Error Domain=NSCocoaErrorDomain Code=4 "…" UserInfo={…}`;
// these turn them into the one sentence every failure gets: the path and the system's reason.

extension LoRAError {
    /// "cannot write PATH: REASON" for a failed write of `path`; a LoRAError passes through
    /// unchanged (it already names its file).
    public static func cannotWrite(_ path: String, _ error: Error) -> LoRAError {
        if let e = error as? LoRAError { return e }
        return LoRAError("cannot write \(path): \(systemReason(error))")
    }

    /// Runs `body`, which writes `path`, turning a system error into `cannotWrite(path, error)`.
    public static func writing<T>(_ path: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw cannotWrite(path, error) }
    }

    /// Any error as one line: a LoRAError's message; a Foundation file error as "cannot read PATH:
    /// REASON" or "cannot write PATH: REASON" with the file it names; a POSIX error as its reason;
    /// anything else as its description, control characters escaped.
    public static func describing(_ error: Error) -> String {
        if let e = error as? LoRAError { return e.message }
        let ns = error as NSError
        if ns.domain == NSCocoaErrorDomain, let path = filePath(ns) {
            let reading = (CocoaError.Code.fileReadUnknown.rawValue..<CocoaError.Code.fileWriteUnknown.rawValue).contains(ns.code)
            return LoRAError("cannot \(reading ? "read" : "write") \(path): \(systemReason(error))").message
        }
        return LoRAError(systemReason(error)).message
    }

    /// The system's reason: the text of the POSIX error inside `error` if there is one, else its
    /// own description.
    static func systemReason(_ error: Error) -> String {
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain, let code = Int32(exactly: ns.code) { return String(cString: strerror(code)) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? Error { return systemReason(underlying) }
        return ns.domain == NSCocoaErrorDomain ? ns.localizedDescription : String(describing: error)
    }

    private static func filePath(_ ns: NSError) -> String? {
        if let path = ns.userInfo[NSFilePathErrorKey] as? String { return path }
        return (ns.userInfo[NSURLErrorKey] as? URL)?.path
    }
}
