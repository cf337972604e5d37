import Foundation
import LoRAKernels

/// Which implementation `Gemm.sgemm` runs.
public enum GemmBackend: Sendable, Equatable, CustomStringConvertible {
    /// A BLAS library loaded at run time; the associated value is the path or soname it was opened with.
    case blas(String)
    /// LoRAKit's own kernel with the portable Swift micro-kernel (`BuiltinGemm`), the reference on any CPU.
    case builtin
    /// LoRAKit's own kernel with the AVX2+FMA micro-kernel (LoRAKernels), on x86-64 CPUs that have both.
    case avx2
    /// LoRAKit's own kernel with the AVX-512F micro-kernel (LoRAKernels).
    case avx512
    /// LoRAKit's own kernel with the ARM64 NEON micro-kernel (LoRAKernels), on every AArch64 CPU.
    case neon

    public var description: String {
        switch self {
        case .blas(let name): "blas(\(name))"
        case .builtin: "builtin (portable Swift)"
        case .avx2: "builtin (AVX2+FMA)"
        case .avx512: "builtin (AVX-512)"
        case .neon: "builtin (NEON)"
        }
    }

    /// The CPU kernels this machine can run, best first (each a valid `LORA_BLAS` value: avx512, avx2, neon, builtin).
    public static var cpuKernels: [GemmBackend] {
        let cpu = CPUFeatures.current
        return (cpu.contains(.avx512F) ? [.avx512] : []) + (cpu.contains(.avx2FMA) ? [.avx2] : [])
            + (cpu.contains(.neon) ? [.neon] : []) + [.builtin]
    }
}

/// The instruction sets of this CPU that LoRAKit's kernels use (as the CPU and the OS report them).
public struct CPUFeatures: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let avx2FMA = CPUFeatures(rawValue: UInt32(LORA_CPU_AVX2_FMA))
    public static let avx512F = CPUFeatures(rawValue: UInt32(LORA_CPU_AVX512F))
    public static let avx512BF16 = CPUFeatures(rawValue: UInt32(LORA_CPU_AVX512BF16))
    public static let avx512VNNI = CPUFeatures(rawValue: UInt32(LORA_CPU_AVX512VNNI))
    public static let neon = CPUFeatures(rawValue: UInt32(LORA_CPU_NEON))
    public static let neonBF16 = CPUFeatures(rawValue: UInt32(LORA_CPU_NEON_BF16))

    public static let current = CPUFeatures(rawValue: lora_cpu_features())

    public var description: String {
        let names = [(CPUFeatures.avx2FMA, "avx2+fma"), (.avx512F, "avx512f"), (.avx512BF16, "avx512_bf16"), (.avx512VNNI, "avx512_vnni"),
                     (.neon, "neon"), (.neonBF16, "bf16")]
        let present = names.filter { contains($0.0) }.map(\.1)
        return present.isEmpty ? "none" : present.joined(separator: ", ")
    }
}

/// Single-precision matrix products, row-major throughout: LoRAKit's own kernel with a micro-kernel for the
/// CPU's instruction set, or a system BLAS loaded at run time (OpenBLAS, BLIS, reference BLAS, Accelerate).
///
/// Backend choice, made once at first use:
/// - `LORA_BLAS=avx2` or `LORA_BLAS=builtin` forces that kernel of ours (AVX2+FMA, or the portable Swift
///   one; avx2 on a CPU without it falls back to the portable kernel with a warning);
/// - `LORA_BLAS=<path or soname>` loads that library (falling back to our best kernel, with a warning on
///   standard error, when it cannot be loaded);
/// - otherwise our AVX-512 kernel on CPUs with AVX-512F (at least OpenBLAS's speed, see `initial`);
///   else the first loadable library of `BLASLibrary.candidates` (Accelerate on Apple platforms);
///   else our best kernel for this CPU: AVX2+FMA where it has them (0.9× OpenBLAS's products and the
///   same training speed on an AVX2 machine, see the README), else the portable one.
public enum Gemm {
    /// C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C. op(X) = X or Xᵀ. Row-major, leading dimensions lda/ldb/ldc in elements.
    ///
    /// BLAS semantics: when k == 0 or alpha == 0, A and B are not read and C becomes beta · C; when beta == 0,
    /// C is overwritten without being read (NaN or infinity already in C does not propagate).
    /// A is m×k (k×m when transA) with lda ≥ its column count, likewise B; ldc ≥ n. C must not overlap A or B.
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if handledTrivially("Gemm.sgemm", transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, lda: lda, ldb: ldb,
                            beta: beta, c: c, ldc: ldc) { return }
        // Stored shapes of A and B (rows × columns in memory).
        let (aRows, aCols) = transA ? (k, m) : (m, k)
        let (bRows, bCols) = transB ? (n, k) : (k, n)

        let (selection, serial) = GemmState.snapshot()
        if case .blas(let lib) = selection,
           BLASLibrary.fits(m, n, k, max(lda, aCols), max(ldb, bCols), max(ldc, n)) {
            // BLAS rejects ld < columns even for a single row, where the value is never used.
            let lda = aRows == 1 ? max(lda, aCols) : lda, ldb = bRows == 1 ? max(ldb, bCols) : ldb
            let ldc = m == 1 ? max(ldc, n) : ldc
            let threads = Parallel.threadCount
            if !serial && GemmState.ownThreading && threads > 1 && m * n * k >= 1 << 21 {
                // The BLAS runs single-threaded and LoRAKit splits C into bands, one per thread: no
                // BLAS worker spins for work while LoRAKit's own threads run the other kernels.
                let byRows = m >= 16 * threads || m >= n
                let parts = byRows ? m : n
                Parallel.forRanges(parts) { r in
                    if byRows {
                        lib.sgemm(transA: transA, transB: transB, m: r.count, n: n, k: k, alpha: alpha,
                                  a: transA ? a + r.lowerBound : a + r.lowerBound * lda, lda: lda, b: b, ldb: ldb,
                                  beta: beta, c: c + r.lowerBound * ldc, ldc: ldc)
                    } else {
                        lib.sgemm(transA: transA, transB: transB, m: m, n: r.count, k: k, alpha: alpha,
                                  a: a, lda: lda, b: transB ? b + r.lowerBound * ldb : b + r.lowerBound, ldb: ldb,
                                  beta: beta, c: c + r.lowerBound, ldc: ldc)
                    }
                }
            } else {
                lib.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                          a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            }
        } else {
            let kernel: BuiltinGemm.MicroKernel
            switch selection {
            case .avx512: kernel = .avx512
            case .avx2: kernel = .avx2
            case .neon: kernel = .neon
            default: kernel = .portable
            }
            BuiltinGemm.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                              a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc,
                              threads: serial ? 1 : Parallel.threadCount, kernel: kernel)
        }
    }

    /// C = alpha · bf16(op(A)) · bf16(op(B)) + beta · C: the operands rounded to bfloat16 (to nearest
    /// even; subnormals to zero) and multiplied with fp32 sums by the bf16 kernel (vdpbf16ps on x86-64,
    /// BFDOT on ARM64, whose sums round to odd), whatever the backend. Each rounded operand is within
    /// 2⁻⁸ relative, so each term within about 2⁻⁷ ≈ 7.8e-3 and the sum within that much of Σ|A|·|B| at
    /// worst; see `Precision`. Same contract as `sgemm` otherwise. Requires `Precision.bf16.isAvailable`
    /// (a precondition).
    public static func sgemmBF16(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                                 a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                                 beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        bf16Product(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                    opB: transB ? .init(base: b, rs: 1, cs: ldb) : .init(base: b, rs: ldb, cs: 1), ldb: ldb,
                    beta: beta, c: c, ldc: ldc)
    }

    /// `sgemmBF16` with B given in bfloat16 (`b16`, e.g. a `BF16Matrix`'s rows): the same product as
    /// with those values widened to Float32, without widening them.
    public static func sgemmBF16(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                                 a: UnsafePointer<Float>, lda: Int, b16: UnsafePointer<UInt16>, ldb: Int,
                                 beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        bf16Product(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                    opB: transB ? .init(bf16: b16, rs: 1, cs: ldb) : .init(bf16: b16, rs: ldb, cs: 1), ldb: ldb,
                    beta: beta, c: c, ldc: ldc)
    }

    /// Both `sgemmBF16` forms once B is a view (Float32 or bfloat16 values).
    private static func bf16Product(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                                    a: UnsafePointer<Float>, lda: Int, opB: BuiltinGemm.View, ldb: Int,
                                    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        precondition(Precision.bf16.isAvailable, "Gemm.sgemmBF16: this CPU has no bf16 dot products")
        if handledTrivially("Gemm.sgemmBF16", transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, lda: lda, ldb: ldb,
                            beta: beta, c: c, ldc: ldc) { return }
        BuiltinGemm.sgemm(m: m, n: n, k: k, alpha: alpha,
                          opA: transA ? .init(base: a, rs: 1, cs: lda) : .init(base: a, rs: lda, cs: 1), opB: opB,
                          beta: beta, c: c, ldc: ldc, threads: GemmState.snapshot().serial ? 1 : Parallel.threadCount,
                          kernel: BuiltinGemm.MicroKernel.bf16)
    }

    /// Checks a product's arguments (a precondition failure names `caller`) and does the products with
    /// nothing to multiply: none when m or n is 0, C = beta·C when k or alpha is 0. Returns whether it did.
    private static func handledTrivially(_ caller: String, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                                         lda: Int, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) -> Bool {
        precondition(m >= 0 && n >= 0 && k >= 0, "\(caller): negative dimension (m \(m), n \(n), k \(k))")
        if m == 0 || n == 0 { return true }
        precondition(ldc >= n || m == 1, "\(caller): ldc \(ldc) < n \(n)")
        if k == 0 || alpha == 0 {
            scale(c, rows: m, cols: n, ldc: ldc, by: beta)
            return true
        }
        let (aRows, aCols) = transA ? (k, m) : (m, k)
        let (bRows, bCols) = transB ? (n, k) : (k, n)
        precondition(lda >= aCols || aRows == 1, "\(caller): lda \(lda) < \(aCols) columns of A")
        precondition(ldb >= bCols || bRows == 1, "\(caller): ldb \(ldb) < \(bCols) columns of B")
        return false
    }

    /// The backend in use: chosen once at first use; LORA_BLAS=avx512|avx2|builtin forces one of our kernels; LORA_BLAS=/path/lib.so forces a library.
    /// Inside `withBackend` this is the backend given there.
    public static var backend: GemmBackend { GemmState.snapshot().selection.backend }

    /// The BLAS library this process can use, whether or not it is the current backend: the one `LORA_BLAS`
    /// names if it loads, else the first loadable candidate; nil when there is none. Lets tests and benchmarks
    /// compare both backends even when `LORA_BLAS=builtin`.
    public static var availableBLAS: GemmBackend? {
        GemmState.availableLibrary.map { .blas($0.name) }
    }

    /// Runs body with the given backend (for tests that cover both paths in one process); restores afterwards.
    ///
    /// The setting is process-wide, not per thread: do not run two `withBackend` blocks concurrently.
    /// `.blas(name)` opens `name` if no library was opened under that name yet; it is a programming error
    /// (a precondition failure) to name a library that cannot be loaded, or `.avx2` on a CPU without it.
    public static func withBackend<T>(_ b: GemmBackend, _ body: () throws -> T) rethrows -> T {
        let selection: GemmState.Selection
        switch b {
        case .builtin:
            selection = .builtin
        case .avx2:
            precondition(CPUFeatures.current.contains(.avx2FMA), "Gemm.withBackend: this CPU has no AVX2+FMA")
            selection = .avx2
        case .avx512:
            precondition(CPUFeatures.current.contains(.avx512F), "Gemm.withBackend: this CPU has no AVX-512F")
            selection = .avx512
        case .neon:
            precondition(CPUFeatures.current.contains(.neon), "Gemm.withBackend: this CPU has no NEON")
            selection = .neon
        case .blas(let name):
            guard let lib = BLASLibrary.named(name) else {
                preconditionFailure("Gemm.withBackend: cannot load a BLAS with sgemm from \(name)")
            }
            selection = .blas(lib)
        }
        let previous = GemmState.setOverride(selection)
        defer { _ = GemmState.setOverride(previous) }
        return try body()
    }

    /// Runs body with BLAS limited to one thread (for callers that parallelize over many small products themselves, e.g. attention heads). No-op for builtin or BLAS without a thread setter.
    ///
    /// The limit is process-wide and reference-counted: nested or concurrent `singleThreaded` blocks are fine,
    /// and the library's previous thread count comes back when the last one ends. Prefer one block around the
    /// whole parallel loop over one block per worker, so the count is not toggled while other calls run.
    /// The built-in kernel also runs on the calling thread only while any such block is active, since the
    /// caller has said it provides the parallelism itself.
    public static func singleThreaded<T>(_ body: () throws -> T) rethrows -> T {
        GemmState.enterSingleThreaded()
        defer { GemmState.leaveSingleThreaded() }
        return try body()
    }

    /// C = beta · C over an m×n block, writing zeros (not 0 · C) when beta == 0.
    static func scale(_ c: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ldc: Int, by beta: Float) {
        if beta == 1 { return }
        for i in 0..<rows {
            let row = c + i * ldc
            if beta == 0 {
                row.update(repeating: 0, count: cols)
            } else {
                for j in 0..<cols { row[j] *= beta }
            }
        }
    }
}

/// Process-wide backend state behind one lock: the `withBackend` override and the `singleThreaded` count.
enum GemmState {
    enum Selection {
        case builtin
        case avx2
        case avx512
        case neon
        case blas(BLASLibrary)

        var backend: GemmBackend {
            switch self {
            case .builtin: return .builtin
            case .avx2: return .avx2
            case .avx512: return .avx512
            case .neon: return .neon
            case .blas(let lib): return .blas(lib.name)
            }
        }

        /// Our best kernel on this CPU.
        static var bestKernel: Selection {
            let cpu = CPUFeatures.current
            return cpu.contains(.avx512F) ? .avx512 : cpu.contains(.avx2FMA) ? .avx2 : cpu.contains(.neon) ? .neon : .builtin
        }
    }

    /// `LORA_BLAS`, if set and non-empty.
    private static let requested: String? = {
        guard let s = ProcessInfo.processInfo.environment["LORA_BLAS"], !s.isEmpty else { return nil }
        return s
    }()

    /// `LORA_BLAS` values that name one of our kernels rather than a library.
    private static let kernelNames: Set<String> = ["builtin", "avx2", "avx512", "neon"]

    /// The library `LORA_BLAS` names (when it loads), else the first loadable candidate.
    static let availableLibrary: BLASLibrary? = {
        if let name = requested, !kernelNames.contains(name.lowercased()), let lib = BLASLibrary.named(name) { return lib }
        return BLASLibrary.discovered
    }()

    private static func warn(_ message: String) {
        try? FileHandle.standardError.write(contentsOf: Data(("LoRAKit: " + message + "\n").utf8))  // write(_:) traps when the write fails
    }

    /// The backend chosen at first use (a `static let` initializer runs once, thread-safely).
    private static let initial: Selection = {
        if let name = requested {
            switch name.lowercased() {
            case "builtin": return .builtin
            case "avx2":
                if CPUFeatures.current.contains(.avx2FMA) { return .avx2 }
                warn("LORA_BLAS=avx2 but this CPU has no AVX2+FMA; using the portable kernel")
                return .builtin
            case "avx512":
                if CPUFeatures.current.contains(.avx512F) { return .avx512 }
                warn("LORA_BLAS=avx512 but this CPU has no AVX-512F; using our best kernel for it")
                return Selection.bestKernel
            case "neon":
                if CPUFeatures.current.contains(.neon) { return .neon }
                warn("LORA_BLAS=neon but this CPU has no NEON (it is not an ARM64 one); using our best kernel for it")
                return Selection.bestKernel
            default:
                if let lib = BLASLibrary.named(name) { return .blas(lib) }
                warn("LORA_BLAS=\(name) cannot be loaded (or has no sgemm); using the built-in kernel")
                return Selection.bestKernel
            }
        }
        // Our AVX-512 kernel where the CPU has it: on this project's Xeon (Sapphire Rapids family) its
        // products ran at 4.9× Debian's OpenBLAS 0.3.21, which does not know that CPU model and falls
        // back to its generic SSE kernel, and at 0.9–1.0× OpenBLAS forced to its Skylake-X kernel
        // (README, Kernels). A deterministic rule, not a timing race: a run and its resume must use
        // the same products to continue bit for bit.
        if CPUFeatures.current.contains(.avx512F) { return .avx512 }
        if let lib = BLASLibrary.discovered { return .blas(lib) }
        return Selection.bestKernel
    }()

    /// Whether LoRAKit splits large BLAS products over its own threads with the BLAS held at one
    /// thread: the default where the BLAS lets its thread count be set. Measured on 2 cores with
    /// OpenBLAS 0.3.21, a training step ran 10–20% faster this way than with OpenBLAS's threads,
    /// whose workers spin (sched_yield) between products and steal the cores LoRAKit's other
    /// kernels run on. LORA_BLAS_THREADING=blas keeps the BLAS's own threading.
    static let ownThreading: Bool = {
        guard ProcessInfo.processInfo.environment["LORA_BLAS_THREADING"] != "blas",
              case .blas(let lib) = initial, lib.hasThreadControl else { return false }
        lib.setThreadCount(1)
        return true
    }()

    private static let lock = NSLock()
    // nonisolated(unsafe): the four variables below are only read or written while holding `lock`.
    nonisolated(unsafe) private static var override: Selection?
    nonisolated(unsafe) private static var singleThreadedDepth = 0
    nonisolated(unsafe) private static var limitedLibrary: BLASLibrary?
    nonisolated(unsafe) private static var savedThreadCount = 0

    /// The selection in force and whether a `singleThreaded` block is active.
    static func snapshot() -> (selection: Selection, serial: Bool) {
        let initial = self.initial  // resolved outside the lock: it may open libraries
        lock.lock(); defer { lock.unlock() }
        return (override ?? initial, singleThreadedDepth > 0)
    }

    /// Installs `selection` as the override and returns the previous one.
    static func setOverride(_ selection: Selection?) -> Selection? {
        lock.lock(); defer { lock.unlock() }
        let previous = override
        override = selection
        return previous
    }

    static func enterSingleThreaded() {
        let initial = self.initial
        lock.lock(); defer { lock.unlock() }
        singleThreadedDepth += 1
        guard singleThreadedDepth == 1, case .blas(let lib) = override ?? initial,
              lib.hasThreadControl, let count = lib.threadCount else { return }
        limitedLibrary = lib
        savedThreadCount = count
        lib.setThreadCount(1)
    }

    static func leaveSingleThreaded() {
        lock.lock(); defer { lock.unlock() }
        singleThreadedDepth -= 1
        guard singleThreadedDepth == 0, let lib = limitedLibrary else { return }
        lib.setThreadCount(savedThreadCount)
        limitedLibrary = nil
    }
}
