#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// A BLAS library opened with `dlopen` at run time, so LoRAKit neither links against nor requires one.
///
/// Only single-precision GEMM and the (optional) thread-count functions are looked up. `cblas_sgemm` is
/// preferred; a library that only exports the Fortran `sgemm_` is driven through the usual row-major →
/// column-major identity (row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ, so the operands swap).
final class BLASLibrary: @unchecked Sendable {
    // @unchecked Sendable: every stored property is immutable after `init`, and the C functions they point
    // to are themselves safe to call from any thread (BLAS libraries are re-entrant).

    /// The name or path that `dlopen` succeeded with (reported as `GemmBackend.blas(name)`).
    let name: String
    private let handle: UnsafeMutableRawPointer
    private let gemm: Entry
    private let setThreads: ((Int) -> Void)?
    private let getThreads: (() -> Int)?

    private enum Entry {
        case cblas(CblasSgemm)
        case fortran(FortranSgemm)
    }

    // cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc). The enums are C ints
    // and the integers are `blasint`, which is 32-bit in every LP64 build these names refer to (ILP64 builds
    // of OpenBLAS rename their symbols with a `64_` suffix, so they are never picked up by mistake).
    private typealias CblasSgemm = @convention(c) (
        Int32, Int32, Int32, Int32, Int32, Int32, Float,
        UnsafePointer<Float>?, Int32, UnsafePointer<Float>?, Int32, Float,
        UnsafeMutablePointer<Float>?, Int32
    ) -> Void

    // sgemm_(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, len(transa), len(transb)): every
    // argument by reference; gfortran-built libraries also take the two hidden character lengths at the end,
    // which C-built ones simply ignore.
    private typealias FortranSgemm = @convention(c) (
        UnsafePointer<CChar>?, UnsafePointer<CChar>?,
        UnsafePointer<Int32>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?, UnsafePointer<Float>?,
        UnsafePointer<Float>?, UnsafePointer<Int32>?, UnsafePointer<Float>?, UnsafePointer<Int32>?,
        UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafePointer<Int32>?, Int, Int
    ) -> Void

    private typealias SetInt32 = @convention(c) (Int32) -> Void
    private typealias GetInt32 = @convention(c) () -> Int32
    private typealias SetInt64 = @convention(c) (Int64) -> Void
    private typealias GetInt64 = @convention(c) () -> Int64

    /// Libraries tried, in order, when `LORA_BLAS` does not name one.
    static var candidates: [String] {
        #if canImport(Darwin)
        return ["/System/Library/Frameworks/Accelerate.framework/Accelerate"]
        #else
        return ["libopenblas.so.0", "libopenblas.so", "libblas.so.3", "libcblas.so.3", "libblis.so.4"]
        #endif
    }

    /// Opens `name` (a path, or a bare soname for the dynamic loader to find) and resolves its GEMM entry
    /// point; nil when the library cannot be opened or exports neither `cblas_sgemm` nor `sgemm_`.
    /// `fortranOnly` ignores `cblas_sgemm` (lets tests cover the `sgemm_` path with any library).
    init?(name: String, fortranOnly: Bool = false) {
        guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else { return nil }
        func symbol(_ s: String) -> UnsafeMutableRawPointer? { dlsym(handle, s) }

        if !fortranOnly, let p = symbol("cblas_sgemm") {
            gemm = .cblas(unsafeBitCast(p, to: CblasSgemm.self))
        } else if let p = symbol("sgemm_") {
            gemm = .fortran(unsafeBitCast(p, to: FortranSgemm.self))
        } else {
            dlclose(handle)
            return nil
        }
        self.name = name
        self.handle = handle

        if let set = symbol("openblas_set_num_threads"), let get = symbol("openblas_get_num_threads") {
            let setF = unsafeBitCast(set, to: SetInt32.self), getF = unsafeBitCast(get, to: GetInt32.self)
            setThreads = { setF(Int32(clamping: $0)) }
            getThreads = { Int(getF()) }
        } else if let set = symbol("bli_thread_set_num_threads"), let get = symbol("bli_thread_get_num_threads") {
            // BLIS takes and returns `dim_t`, a 64-bit integer in its default LP64 configuration.
            let setF = unsafeBitCast(set, to: SetInt64.self), getF = unsafeBitCast(get, to: GetInt64.self)
            setThreads = { setF(Int64($0)) }
            getThreads = { Int(getF()) }
        } else {
            setThreads = nil
            getThreads = nil
        }
    }

    deinit { dlclose(handle) }

    /// True when the library lets LoRAKit change its thread count.
    var hasThreadControl: Bool { setThreads != nil }

    /// The library's current thread count, or nil when it has no getter.
    var threadCount: Int? { getThreads?() }

    /// Sets the library's thread count; a no-op when it has no setter.
    func setThreadCount(_ n: Int) { setThreads?(max(1, n)) }

    /// Whether every dimension fits the library's 32-bit `blasint`.
    static func fits(_ values: Int...) -> Bool { values.allSatisfy { $0 <= Int(Int32.max) } }

    /// Row-major SGEMM with the same contract as `Gemm.sgemm`. The caller has already dealt with empty
    /// dimensions and checked `fits`; leading dimensions must satisfy BLAS's `ld >= max(1, columns)`.
    func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
               a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
               beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        switch gemm {
        case .cblas(let f):
            let rowMajor: Int32 = 101, noTrans: Int32 = 111, trans: Int32 = 112
            f(rowMajor, transA ? trans : noTrans, transB ? trans : noTrans,
              Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        case .fortran(let f):
            // Row-major X (r×c, ld) is column-major Xᵀ (c×r, ld). So row-major C = op(A)·op(B) is computed
            // as column-major Cᵀ (n×m) = op(B)ᵀ·op(A)ᵀ: B first, A second, with the same transpose flags.
            var tb: CChar = transB ? 84 : 78, ta: CChar = transA ? 84 : 78  // "T" / "N"
            var mm = Int32(n), nn = Int32(m), kk = Int32(k)
            var al = alpha, be = beta
            var ldA = Int32(ldb), ldB = Int32(lda), ldC = Int32(ldc)
            f(&tb, &ta, &mm, &nn, &kk, &al, b, &ldA, a, &ldB, &be, c, &ldC, 1, 1)
        }
    }

    // MARK: - Process-wide registry

    /// Guards `opened`.
    private static let lock = NSLock()
    /// Libraries opened so far, by the name they were opened with; kept open for the life of the process.
    /// nonisolated(unsafe): only read or written while holding `lock`.
    nonisolated(unsafe) private static var opened: [String: BLASLibrary] = [:]

    /// The library opened under `name`, opening it on first request; nil when it cannot be used.
    static func named(_ name: String) -> BLASLibrary? {
        lock.lock(); defer { lock.unlock() }
        if let lib = opened[name] { return lib }
        guard let lib = BLASLibrary(name: name) else { return nil }
        opened[name] = lib
        return lib
    }

    /// The first usable library among `candidates`, looked up once per process (ignores `LORA_BLAS`).
    static let discovered: BLASLibrary? = candidates.lazy.compactMap { named($0) }.first
}
