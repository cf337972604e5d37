import ArgumentParser
import LoRAKit

/// `--precision fp32|bf16|auto` of train, eval, generate and bench: the number format of the frozen
/// base's products (see `Precision`).
enum PrecisionOption {
    private static let text = "fp32, bf16 (the base model's products from bfloat16 inputs with fp32 sums, as PyTorch's bf16 autocast; needs AVX-512 BF16 or ARM's BF16) or auto (bf16 where this CPU runs it faster than fp32)"
    /// For an option with a default value, which ArgumentParser prints after the help.
    static let help = ArgumentHelp(text + ".")
    /// For train's option, which has no value of its own (a config file or a resume may give one).
    static let helpNamingDefault = ArgumentHelp(text + " (default: fp32).")

    static func resolve(_ value: String) throws -> Precision {
        switch value.lowercased() {
        case "fp32": return .fp32
        case "bf16":
            guard Precision.bf16.isAvailable else {
                throw LoRAError("--precision bf16 needs a CPU with bfloat16 dot products (AVX-512 BF16: Intel Cooper Lake or Sapphire Rapids and later, AMD Zen 4 and later; or ARM64's FEAT_BF16, e.g. AWS Graviton 3 and later); this one has \(CPUFeatures.current); use --precision fp32 or auto")
            }
            return .bf16
        case "auto": return Precision.fastest
        default: throw LoRAError("--precision must be fp32, bf16 or auto (got \(value))")
        }
    }
}
