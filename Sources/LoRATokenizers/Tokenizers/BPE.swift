import Foundation
import LoRAFormats

/// The BPE model of tokenizer.json ("model": {"type": "BPE", …}): vocab, merges (as "a b" strings or [a, b]
/// pairs), unk_token, fuse_unk, byte_fallback, ignore_merges, continuing_subword_prefix, end_of_word_suffix.
///
/// Words are sequences of scalars (after pre-tokenization). Merging follows tokenizers' `Word::merge_all`:
/// repeatedly merge the adjacent pair with the lowest merge rank, the leftmost one among equals.
final class BPEModel: @unchecked Sendable {
    let vocab: [String: Int]
    let idToToken: [Int: String]
    let unkId: Int?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let prefix: String?
    let suffix: String?
    /// ids of "<0x00>"…"<0xFF>" when byte_fallback is on (-1 where missing).
    private let byteIds: [Int32]
    /// Single-scalar tokens: a flat table below 0x800, a dictionary above. -1 when absent.
    private let lowCharIds: [Int32]
    private let highCharIds: [UInt32: Int32]
    /// (left id, right id) → (rank, merged id).
    private let merges: PairTable
    private let cache = WordCache()
    private let cacheLock = NSLock()

    init(json m: [String: Any], source: String) throws {
        if let dropout = m["dropout"] as? Double, dropout > 0 {
            throw LoRAError("\(source): BPE dropout \(dropout) is not supported (it makes encoding random)")
        }
        guard let v = m["vocab"] as? [String: Any] else { throw LoRAError("\(source): the BPE model has no \"vocab\" object") }
        var vocab = [String: Int](minimumCapacity: v.count)
        var idToToken = [Int: String](minimumCapacity: v.count)
        for (token, value) in v {
            guard let id = jsonInt(value) else { throw LoRAError("\(source): vocab entry \(token.debugDescription) has no integer id") }
            guard isTokenId(id) else {
                throw LoRAError("\(source): vocab entry \(token.debugDescription) has id \(id), outside 0...\(maximumTokenId)")
            }
            vocab[token] = id
            idToToken[id] = token
        }
        self.vocab = vocab
        self.idToToken = idToToken
        let unkToken = m["unk_token"] as? String
        if let unkToken {
            guard let id = vocab[unkToken] else { throw LoRAError("\(source): unk_token \(unkToken.debugDescription) is not in the vocab") }
            unkId = id
        } else {
            unkId = nil
        }
        fuseUnk = m["fuse_unk"] as? Bool ?? false
        byteFallback = m["byte_fallback"] as? Bool ?? false
        ignoreMerges = m["ignore_merges"] as? Bool ?? false
        let prefix = (m["continuing_subword_prefix"] as? String).flatMap { $0.isEmpty ? nil : $0 }
        let suffix = (m["end_of_word_suffix"] as? String).flatMap { $0.isEmpty ? nil : $0 }
        self.prefix = prefix
        self.suffix = suffix

        var byteIds = [Int32](repeating: -1, count: 256)
        if byteFallback {
            for b in 0..<256 {
                if let id = vocab[String(format: "<0x%02X>", b)] { byteIds[b] = Int32(id) }
            }
        }
        self.byteIds = byteIds
        var low = [Int32](repeating: -1, count: 0x800)
        var high: [UInt32: Int32] = [:]
        for (token, id) in vocab {
            let scalars = token.unicodeScalars
            guard scalars.count == 1, let c = scalars.first?.value else { continue }
            if c < 0x800 { low[Int(c)] = Int32(id) } else { high[c] = Int32(id) }
        }
        lowCharIds = low
        highCharIds = high

        // Merges: ["a b", …] (legacy) or [["a", "b"], …].
        guard let mergeList = m["merges"] as? [Any] else { throw LoRAError("\(source): the BPE model has no \"merges\" list") }
        var table = PairTable(capacity: mergeList.count)
        let prefixLength = prefix?.unicodeScalars.count ?? 0
        var rank = 0
        for entry in mergeList {
            let a: String, b: String
            if let s = entry as? String {
                if s.hasPrefix("#version") { continue }
                // Split on the space scalar (not Character: a space can begin a grapheme with what follows).
                let parts = s.unicodeScalars.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw LoRAError("\(source): merge \(s.debugDescription) is not two tokens separated by a space") }
                a = String(String.UnicodeScalarView(parts[0])); b = String(String.UnicodeScalarView(parts[1]))
            } else if let pair = entry as? [Any], pair.count == 2, let x = pair[0] as? String, let y = pair[1] as? String {
                a = x; b = y
            } else {
                throw LoRAError("\(source): merge #\(rank) is neither \"a b\" nor [a, b]")
            }
            guard let aId = vocab[a], let bId = vocab[b] else {
                throw LoRAError("\(source): merge \(a.debugDescription) + \(b.debugDescription) uses a token missing from the vocab")
            }
            let merged = a + (prefixLength > 0 ? String(String.UnicodeScalarView(b.unicodeScalars.dropFirst(prefixLength))) : b)
            guard let newId = vocab[merged] else {
                throw LoRAError("\(source): the result of merge \(a.debugDescription) + \(b.debugDescription) is not in the vocab")
            }
            table.insert(left: UInt32(aId), right: UInt32(bId), rank: UInt32(rank), newId: UInt32(newId))
            rank += 1
        }
        merges = table
    }

    var vocabCount: Int { vocab.count }

    func tokenToId(_ token: String) -> Int? { vocab[token] }

    // MARK: Tokenizing

    /// Scratch memory reused across the words of one encode call.
    struct Scratch {
        var symbols: [Int32] = []
        var heap: [UInt64] = []
        var prev: [Int32] = []
        var next: [Int32] = []
    }

    /// Holds the cache for the duration of `body` (or none when another thread holds it).
    func withCache<R>(_ body: (WordCache?) -> R) -> R {
        if cacheLock.try() {
            defer { cacheLock.unlock() }
            return body(cache)
        }
        return body(nil)
    }

    /// Appends the ids of one pre-tokenized word `text[range]`.
    func tokenize(_ text: UnsafeBufferPointer<UInt32>, _ range: Range<Int>, into ids: inout [Int],
                  cache: WordCache?, scratch: inout Scratch) {
        if range.isEmpty { return }
        let word = UnsafeBufferPointer(rebasing: text[range])
        if let cache, cache.lookup(word, into: &ids) { return }
        let start = ids.count
        if ignoreMerges, let id = vocab[Self.string(word)] {
            ids.append(id)
        } else {
            mergeWord(word, into: &ids, scratch: &scratch)
        }
        cache?.insert(word, ids[start...])
    }

    static func string(_ word: UnsafeBufferPointer<UInt32>) -> String {
        var v = String.UnicodeScalarView()
        for c in word { v.append(Unicode.Scalar(c) ?? "\u{FFFD}") }
        return String(v)
    }

    @inline(__always)
    private func charId(_ c: UInt32) -> Int32 {
        if c < 0x800 { return lowCharIds.withUnsafeBufferPointer { $0[Int(c)] } }
        return highCharIds[c] ?? -1
    }

    private func mergeWord(_ word: UnsafeBufferPointer<UInt32>, into ids: inout [Int], scratch: inout Scratch) {
        // Initial symbols, one per scalar, as BPE::merge_word builds them.
        scratch.symbols.removeAll(keepingCapacity: true)
        var pendingUnk: Int32 = -1
        let n = word.count
        for k in 0..<n {
            let c = word[k]
            var id: Int32
            var piece: String? = nil
            if prefix == nil && suffix == nil {
                id = charId(c)
            } else {
                var s = String(Unicode.Scalar(c) ?? "\u{FFFD}")
                if k > 0, let prefix { s = prefix + s }
                if k == n - 1, let suffix { s += suffix }
                id = vocab[s].map(Int32.init) ?? -1
                piece = s
            }
            if id >= 0 {
                if pendingUnk >= 0 { scratch.symbols.append(pendingUnk); pendingUnk = -1 }
                scratch.symbols.append(id)
                continue
            }
            if byteFallback {
                let bytes = Array((piece ?? String(Unicode.Scalar(c) ?? "\u{FFFD}")).utf8)
                if bytes.allSatisfy({ byteIds[Int($0)] >= 0 }) {
                    // tokenizers adds byte tokens without flushing a pending unk first.
                    for b in bytes { scratch.symbols.append(byteIds[Int(b)]) }
                    continue
                }
            }
            if let unkId {
                if pendingUnk >= 0 && !fuseUnk { scratch.symbols.append(pendingUnk) }
                if pendingUnk < 0 || !fuseUnk { pendingUnk = Int32(unkId) }
            }
        }
        if pendingUnk >= 0 { scratch.symbols.append(pendingUnk) }

        if scratch.symbols.count <= 48 {
            mergeSmall(&scratch.symbols)
        } else {
            mergeLarge(&scratch)
        }
        for s in scratch.symbols { ids.append(Int(s)) }
    }

    /// Quadratic merging for short words: find the lowest-ranked adjacent pair (leftmost among equals), merge, repeat.
    private func mergeSmall(_ symbols: inout [Int32]) {
        var count = symbols.count
        if count < 2 { return }
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: count) { ranks in
            symbols.withUnsafeMutableBufferPointer { sym in
                // ranks[i]: (rank << 32 | newId) of pair (i, i+1), or .max.
                for i in 0..<(count - 1) { ranks[i] = merges.lookup(UInt32(bitPattern: sym[i]), UInt32(bitPattern: sym[i + 1])) }
                while count > 1 {
                    var best = 0
                    var bestValue = ranks[0]
                    for i in 1..<(count - 1) where ranks[i] >> 32 < bestValue >> 32 {
                        best = i
                        bestValue = ranks[i]
                    }
                    if bestValue == .max { break }
                    sym[best] = Int32(truncatingIfNeeded: bestValue & 0xFFFF_FFFF)
                    // Remove symbol best+1 and pair best+1.
                    for i in (best + 1)..<(count - 1) { sym[i] = sym[i + 1] }
                    for i in (best + 1)..<max(best + 1, count - 2) { ranks[i] = ranks[i + 1] }
                    count -= 1
                    if best > 0 { ranks[best - 1] = merges.lookup(UInt32(bitPattern: sym[best - 1]), UInt32(bitPattern: sym[best])) }
                    if best < count - 1 { ranks[best] = merges.lookup(UInt32(bitPattern: sym[best]), UInt32(bitPattern: sym[best + 1])) }
                }
            }
        }
        symbols.removeLast(symbols.count - count)
    }

    /// tokenizers' algorithm for long words: a linked list of symbols and a heap of candidate merges ordered by
    /// (rank, position); stale entries are skipped when popped.
    private func mergeLarge(_ s: inout Scratch) {
        let n = s.symbols.count
        s.prev = (0..<n).map { Int32($0) - 1 }
        s.next = (0..<n).map { $0 + 1 < n ? Int32($0 + 1) : -1 }
        s.heap.removeAll(keepingCapacity: true)
        // Heap entries: rank (32 bits) << 32 | position (32 bits); the new id is looked up again when popped.
        var heap = MinHeap(storage: s.heap)
        var alive = [Bool](repeating: true, count: n)
        for i in 0..<(n - 1) {
            let v = merges.lookup(UInt32(bitPattern: s.symbols[i]), UInt32(bitPattern: s.symbols[i + 1]))
            if v != .max { heap.push((v >> 32) << 32 | UInt64(i)) }
        }
        while let top = heap.pop() {
            let rank = top >> 32
            let pos = Int(top & 0xFFFF_FFFF)
            guard alive[pos], s.next[pos] >= 0 else { continue }
            let right = Int(s.next[pos])
            let v = merges.lookup(UInt32(bitPattern: s.symbols[pos]), UInt32(bitPattern: s.symbols[right]))
            guard v != .max, v >> 32 == rank else { continue }
            s.symbols[pos] = Int32(truncatingIfNeeded: v & 0xFFFF_FFFF)
            alive[right] = false
            s.next[pos] = s.next[right]
            if s.next[right] >= 0 { s.prev[Int(s.next[right])] = Int32(pos) }
            if s.prev[pos] >= 0 {
                let p = Int(s.prev[pos])
                let w = merges.lookup(UInt32(bitPattern: s.symbols[p]), UInt32(bitPattern: s.symbols[pos]))
                if w != .max { heap.push((w >> 32) << 32 | UInt64(p)) }
            }
            if s.next[pos] >= 0 {
                let w = merges.lookup(UInt32(bitPattern: s.symbols[pos]), UInt32(bitPattern: s.symbols[Int(s.next[pos])]))
                if w != .max { heap.push((w >> 32) << 32 | UInt64(pos)) }
            }
        }
        s.heap = heap.storage
        var out: [Int32] = []
        out.reserveCapacity(n)
        var i = 0
        while i >= 0 && i < n { out.append(s.symbols[i]); i = Int(s.next[i]) }
        s.symbols = out
    }
}

/// A binary min-heap of UInt64.
struct MinHeap {
    var storage: [UInt64]

    mutating func push(_ v: UInt64) {
        storage.append(v)
        var i = storage.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if storage[p] <= storage[i] { break }
            storage.swapAt(p, i)
            i = p
        }
    }

    mutating func pop() -> UInt64? {
        guard let first = storage.first else { return nil }
        let last = storage.removeLast()
        if !storage.isEmpty {
            storage[0] = last
            var i = 0
            let n = storage.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && storage[l] < storage[m] { m = l }
                if r < n && storage[r] < storage[m] { m = r }
                if m == i { break }
                storage.swapAt(i, m)
                i = m
            }
        }
        return first
    }
}

/// Open-addressing map from a pair of ids to (rank << 32 | new id). A pair listed twice keeps the later rank,
/// as tokenizers' HashMap collect does.
struct PairTable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let mask: Int
    private static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always)
    private static func slot(_ key: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    mutating func insert(left: UInt32, right: UInt32, rank: UInt32, newId: UInt32) {
        let key = UInt64(left) << 32 | UInt64(right)
        var i = Self.slot(key, mask)
        while keys[i] != Self.empty && keys[i] != key { i = (i + 1) & mask }
        keys[i] = key
        values[i] = UInt64(rank) << 32 | UInt64(newId)
    }

    /// (rank << 32 | new id), or UInt64.max when the pair does not merge.
    @inline(__always)
    func lookup(_ left: UInt32, _ right: UInt32) -> UInt64 {
        let key = UInt64(left) << 32 | UInt64(right)
        return keys.withUnsafeBufferPointer { k in
            var i = Self.slot(key, mask)
            while true {
                let stored = k[i]
                if stored == key { return values.withUnsafeBufferPointer { $0[i] } }
                if stored == Self.empty { return .max }
                i = (i + 1) & mask
            }
        }
    }
}

/// Word → ids memo for the BPE model (tokenizers keeps one too; it changes speed, never results).
/// Cleared when full.
final class WordCache: @unchecked Sendable {
    private var slots: [Int32]        // index into entries, -1 empty
    private var entries: [(hash: UInt64, keyStart: Int32, keyCount: Int32, valueStart: Int32, valueCount: Int32)] = []
    private var keyArena: [UInt32] = []
    private var valueArena: [Int32] = []
    private var mask: Int
    private let maxEntries = 1 << 17
    private let maxArena = 1 << 22

    init() {
        mask = (1 << 18) - 1
        slots = [Int32](repeating: -1, count: mask + 1)
    }

    @inline(__always)
    private static func hash(_ word: UnsafeBufferPointer<UInt32>) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(word.count)
        for c in word { h = (h ^ UInt64(c)) &* 0x0000_0100_0000_01B3 }
        return h ^ (h >> 29)
    }

    func lookup(_ word: UnsafeBufferPointer<UInt32>, into ids: inout [Int]) -> Bool {
        let h = Self.hash(word)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = slots[i]
            if e < 0 { return false }
            let entry = entries[Int(e)]
            if entry.hash == h && Int(entry.keyCount) == word.count {
                let same = keyArena.withUnsafeBufferPointer { k in
                    let start = Int(entry.keyStart)
                    for j in 0..<word.count where k[start + j] != word[j] { return false }
                    return true
                }
                if same {
                    valueArena.withUnsafeBufferPointer { v in
                        for j in Int(entry.valueStart)..<Int(entry.valueStart + entry.valueCount) { ids.append(Int(v[j])) }
                    }
                    return true
                }
            }
            i = (i + 1) & mask
        }
    }

    func insert(_ word: UnsafeBufferPointer<UInt32>, _ value: ArraySlice<Int>) {
        if word.count > 256 { return }
        if entries.count >= maxEntries || keyArena.count + word.count > maxArena {
            entries.removeAll(keepingCapacity: true)
            keyArena.removeAll(keepingCapacity: true)
            valueArena.removeAll(keepingCapacity: true)
            for i in slots.indices { slots[i] = -1 }
        }
        let h = Self.hash(word)
        var i = Int(truncatingIfNeeded: h) & mask
        while slots[i] >= 0 { i = (i + 1) & mask }
        slots[i] = Int32(entries.count)
        entries.append((h, Int32(keyArena.count), Int32(word.count), Int32(valueArena.count), Int32(value.count)))
        keyArena.append(contentsOf: word)
        for v in value { valueArena.append(Int32(v)) }
    }
}

/// An integer from a parsed JSON value.
/// The largest token id read, 2^24 − 1 (the largest real vocabularies have about 256k tokens): ids fit
/// the Int32 of batches and tables sized by the vocabulary stay small.
let maximumTokenId = (1 << 24) - 1

func isTokenId(_ id: Int) -> Bool { (0...maximumTokenId).contains(id) }

func jsonInt(_ v: Any?) -> Int? {
    if v is Bool { return nil }
    if let n = v as? Int { return n }
    if let d = v as? Double, d == d.rounded(), abs(d) < 9e15 { return Int(d) }
    return nil
}
