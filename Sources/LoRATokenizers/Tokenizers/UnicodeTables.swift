import Foundation
import LoRAFormats

/// Unicode general categories, in the order `UnicodeTables` stores them (the low five bits of a scalar's info byte).
enum GeneralCategory: UInt8, CaseIterable {
    case Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe, Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co, Cn

    var bit: UInt32 { 1 << UInt32(rawValue) }

    static let letters: UInt32 = Lu.bit | Ll.bit | Lt.bit | Lm.bit | Lo.bit
    static let marks: UInt32 = Mn.bit | Mc.bit | Me.bit
    static let numbers: UInt32 = Nd.bit | Nl.bit | No.bit
    static let punctuation: UInt32 = Pc.bit | Pd.bit | Ps.bit | Pe.bit | Pi.bit | Pf.bit | Po.bit
    static let symbols: UInt32 = Sm.bit | Sc.bit | Sk.bit | So.bit
    static let separators: UInt32 = Zs.bit | Zl.bit | Zp.bit
    static let others: UInt32 = Cc.bit | Cf.bit | Cs.bit | Co.bit | Cn.bit
    /// Oniguruma's `\w` for Unicode text by category: letters, letter numbers, marks, decimal digits and
    /// connector punctuation (the regex adds Join_Control).
    static let onigWord: UInt32 = letters | Nl.bit | marks | Nd.bit | Pc.bit

    /// The category mask a `\p{…}` name denotes (short and long names, as Oniguruma accepts them), or nil.
    static func mask(named raw: String) -> UInt32? {
        let name = raw.replacingOccurrences(of: "_", with: "").replacingOccurrences(of: " ", with: "").lowercased()
        switch name {
        case "l", "letter": return letters
        case "lu", "uppercaseletter": return Lu.bit
        case "ll", "lowercaseletter": return Ll.bit
        case "lt", "titlecaseletter": return Lt.bit
        case "lm", "modifierletter": return Lm.bit
        case "lo", "otherletter": return Lo.bit
        case "lc", "casedletter", "l&": return Lu.bit | Ll.bit | Lt.bit
        case "m", "mark", "combiningmark": return marks
        case "mn", "nonspacingmark": return Mn.bit
        case "mc", "spacingmark": return Mc.bit
        case "me", "enclosingmark": return Me.bit
        case "n", "number": return numbers
        case "nd", "decimalnumber", "digit": return Nd.bit
        case "nl", "letternumber": return Nl.bit
        case "no", "othernumber": return No.bit
        case "p", "punctuation", "punct": return punctuation
        case "pc", "connectorpunctuation": return Pc.bit
        case "pd", "dashpunctuation": return Pd.bit
        case "ps", "openpunctuation": return Ps.bit
        case "pe", "closepunctuation": return Pe.bit
        case "pi", "initialpunctuation": return Pi.bit
        case "pf", "finalpunctuation": return Pf.bit
        case "po", "otherpunctuation": return Po.bit
        case "s", "symbol": return symbols
        case "sm", "mathsymbol": return Sm.bit
        case "sc", "currencysymbol": return Sc.bit
        case "sk", "modifiersymbol": return Sk.bit
        case "so", "othersymbol": return So.bit
        case "z", "separator": return separators
        case "zs", "spaceseparator": return Zs.bit
        case "zl", "lineseparator": return Zl.bit
        case "zp", "paragraphseparator": return Zp.bit
        case "c", "other": return others
        case "cc", "control", "cntrl": return Cc.bit
        case "cf", "format": return Cf.bit
        case "cs", "surrogate": return Cs.bit
        case "co", "privateuse": return Co.bit
        case "cn", "unassigned": return Cn.bit
        case "any": return letters | marks | numbers | punctuation | symbols | separators | others
        default: return nil
        }
    }
}

/// One byte of facts per scalar: the general category (low five bits), White_Space (0x20) and Alphabetic (0x40).
///
/// Hugging Face `tokenizers` matches with Oniguruma's and Rust's Unicode 16 tables. Swift's own tables are newer,
/// so a scalar first assigned after Unicode 16 counts as unassigned (Cn), which is what tokenizers sees.
enum UnicodeTables {
    static let whitespaceBit: UInt8 = 0x20
    static let alphabeticBit: UInt8 = 0x40

    /// The Basic Multilingual Plane, computed once (about 15 ms); other planes are computed per lookup.
    static let bmp: [UInt8] = (0..<0x10000).map { compute(UInt32($0)) }

    @inline(__always)
    static func info(_ c: UInt32) -> UInt8 {
        c < 0x10000 ? bmp.withUnsafeBufferPointer { $0[Int(c)] } : compute(c)
    }

    @inline(__always)
    static func category(_ c: UInt32) -> UInt8 { info(c) & 0x1F }

    @inline(__always)
    static func isWhitespace(_ c: UInt32) -> Bool {
        if c < 128 { return c == 32 || (c >= 9 && c <= 13) }
        return info(c) & whitespaceBit != 0
    }

    /// Rust's `char::is_numeric`: general category Nd, Nl or No.
    @inline(__always)
    static func isNumeric(_ c: UInt32) -> Bool {
        if c < 128 { return c >= 48 && c <= 57 }
        return GeneralCategory.numbers & (1 << UInt32(category(c))) != 0
    }

    /// Rust regex's `\w`: Alphabetic, marks, decimal digits, connector punctuation and Join_Control.
    static func isRustWordCharacter(_ c: UInt32) -> Bool {
        if c == 0x200C || c == 0x200D { return true }
        let i = info(c)
        if i & alphabeticBit != 0 { return true }
        let bit = UInt32(1) << UInt32(i & 0x1F)
        return bit & (GeneralCategory.marks | GeneralCategory.Nd.bit | GeneralCategory.Pc.bit) != 0
    }

    static func compute(_ c: UInt32) -> UInt8 {
        guard let scalar = Unicode.Scalar(c) else { return GeneralCategory.Cs.rawValue }
        let p = scalar.properties
        if let age = p.age, age.major > 16 { return GeneralCategory.Cn.rawValue }
        if p.age == nil && p.generalCategory != .privateUse && p.generalCategory != .surrogate {
            return GeneralCategory.Cn.rawValue
        }
        var info = category(of: p.generalCategory).rawValue
        if p.isWhitespace { info |= whitespaceBit }
        if p.isAlphabetic { info |= alphabeticBit }
        return info
    }

    static func category(of gc: Unicode.GeneralCategory) -> GeneralCategory {
        switch gc {
        case .uppercaseLetter: return .Lu
        case .lowercaseLetter: return .Ll
        case .titlecaseLetter: return .Lt
        case .modifierLetter: return .Lm
        case .otherLetter: return .Lo
        case .nonspacingMark: return .Mn
        case .spacingMark: return .Mc
        case .enclosingMark: return .Me
        case .decimalNumber: return .Nd
        case .letterNumber: return .Nl
        case .otherNumber: return .No
        case .connectorPunctuation: return .Pc
        case .dashPunctuation: return .Pd
        case .openPunctuation: return .Ps
        case .closePunctuation: return .Pe
        case .initialPunctuation: return .Pi
        case .finalPunctuation: return .Pf
        case .otherPunctuation: return .Po
        case .mathSymbol: return .Sm
        case .currencySymbol: return .Sc
        case .modifierSymbol: return .Sk
        case .otherSymbol: return .So
        case .spaceSeparator: return .Zs
        case .lineSeparator: return .Zl
        case .paragraphSeparator: return .Zp
        case .control: return .Cc
        case .format: return .Cf
        case .surrogate: return .Cs
        case .privateUse: return .Co
        case .unassigned: return .Cn
        @unknown default: return .Cn
        }
    }

    /// Scalars whose simple case folding equals that of `c` (c itself included), as `(?i)` matches them.
    static func caseVariants(_ c: UInt32) -> [UInt32] {
        guard let scalar = Unicode.Scalar(c) else { return [c] }
        var out: Set<UInt32> = [c]
        func single(_ s: String) -> UInt32? {
            let u = s.unicodeScalars
            return u.count == 1 ? u.first!.value : nil
        }
        let p = scalar.properties
        for m in [p.lowercaseMapping, p.uppercaseMapping, p.titlecaseMapping] {
            if let v = single(m) { out.insert(v) }
        }
        // Mappings that the lower/upper round trip misses (from CaseFolding.txt).
        let extras: [[UInt32]] = [
            [0x73, 0x53, 0x17F], [0x6B, 0x4B, 0x212A], [0xE5, 0xC5, 0x212B], [0x3C3, 0x3A3, 0x3C2],
            [0x3B2, 0x392, 0x3D0], [0x3B8, 0x398, 0x3D1, 0x3F4], [0x3C6, 0x3A6, 0x3D5], [0x3C0, 0x3A0, 0x3D6],
            [0x3BA, 0x39A, 0x3F0], [0x3C1, 0x3A1, 0x3F1], [0x3B5, 0x395, 0x3F5], [0x3B9, 0x399, 0x345, 0x1FBE],
            [0x3BC, 0x39C, 0xB5], [0x1E61, 0x1E60, 0x1E9B], [0x3C9, 0x3A9, 0x2126],
        ]
        for group in extras where !out.isDisjoint(with: group) { out.formUnion(group) }
        return out.sorted()
    }
}
