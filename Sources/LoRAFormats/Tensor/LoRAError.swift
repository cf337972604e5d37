/// Every failure LoRAKit reports to a user: one sentence that names the file, tensor or value at fault.
public struct LoRAError: Error, CustomStringConvertible, Sendable {
    public let message: String
    /// Control characters in `message` (often from a user's file or flag) are escaped, so the
    /// message stays one line.
    public init(_ message: String) { self.message = Self.oneLine(message) }
    public var description: String { message }

    /// `text` with newlines and other control characters written as escapes (`\n`, `\t`, `\u{1B}`).
    public static func oneLine(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var out = ""
        for c in text.unicodeScalars {
            switch c {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if isControl(c) {
                    out += "\\u{" + String(c.value, radix: 16, uppercase: true) + "}"
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        return out
    }

    private static func isControl(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }
}
