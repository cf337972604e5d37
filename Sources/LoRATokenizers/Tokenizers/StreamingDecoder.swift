import Foundation
import LoRAFormats

/// Decodes ids one at a time as a model produces them, returning only text that is final: nothing is returned
/// while the decoded text ends in an incomplete UTF-8 sequence (U+FFFD), so a character split across byte
/// tokens comes out whole. The returned pieces concatenate to `decode` of all ids.
///
/// Like tokenizers' DecodeStream it decodes a small window (the last emitted tokens as context plus the
/// pending ones) and returns what the pending ones add after the context's text.
public struct StreamingDecoder: Sendable {
    public let tokenizer: Tokenizer
    public let skipSpecialTokens: Bool
    private var ids: [Int] = []
    private var prefix = ""
    private var prefixIndex = 0

    public init(_ tokenizer: Tokenizer, skipSpecialTokens: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one id; returns the text it completes ("" when it completes none yet).
    public mutating func push(_ id: Int) -> String {
        if prefix.isEmpty && !ids.isEmpty {
            let p = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
            if p.unicodeScalars.last != "\u{FFFD}" {
                prefix = p
                prefixIndex = ids.count
            }
        }
        ids.append(id)
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        guard text.utf8.count > prefix.utf8.count, text.unicodeScalars.last != "\u{FFFD}",
              text.utf8.starts(with: prefix.utf8) else { return "" }
        let new = String(Substring(text.utf8.dropFirst(prefix.utf8.count)))
        let newPrefixIndex = ids.count - prefixIndex
        ids.removeFirst(prefixIndex)
        prefix = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        prefixIndex = newPrefixIndex
        return new
    }

    /// Text still held back at the end of the stream (an incomplete or invalid byte sequence, as U+FFFD).
    public mutating func finish() -> String {
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        defer { ids.removeAll(); prefix = ""; prefixIndex = 0 }
        guard text.utf8.count > prefix.utf8.count, text.utf8.starts(with: prefix.utf8) else { return "" }
        return String(Substring(text.utf8.dropFirst(prefix.utf8.count)))
    }
}
