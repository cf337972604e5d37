import Foundation

/// The MPI job this process was started in by `mpirun` (Open MPI), loaded at run time like the BLAS,
/// so that the package builds and runs without MPI: `MPI.job` is nil unless Open MPI's launcher set
/// OMPI_COMM_WORLD_SIZE. Only the calls data-parallel training needs: sums over every rank.
/// Open MPI's handles are addresses of its predefined objects (MPICH's are integers, so it is not read).
public final class MPI: DataParallelGroup, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// Ranks on this machine, for the threads each may use.
    public let localSize: Int

    private typealias Allreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, UnsafeRawPointer?,
                                                   UnsafeRawPointer?, UnsafeRawPointer?) -> Int32
    private let allreduce: Allreduce
    private let finalize: @convention(c) () -> Int32
    private let world, float, double, sum: UnsafeRawPointer

    /// The job, initialized at first use; nil when not started by Open MPI's mpirun.
    public static let job: MPI? = {
        guard let text = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"], Int(text) != nil else { return nil }
        do { return try MPI() } catch {
            FileHandle.standardError.write(Data("error: \(LoRAError.describing(error))\n".utf8))
            exit(1)
        }
    }()

    private init() throws {
        let names = ["libmpi.so.40", "libmpi.so", "libmpi.dylib"]
        guard let library = names.lazy.compactMap({ (name: String) in dlopen(name, RTLD_NOW | RTLD_GLOBAL) }).first else {
            throw LoRAError("this process was started by mpirun, but Open MPI's libmpi cannot be loaded (install openmpi-bin)")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let s = dlsym(library, name) else { throw LoRAError("libmpi has no \(name): Open MPI is needed (MPICH's ABI differs)") }
            return s
        }
        typealias Init = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> Int32
        typealias Query = @convention(c) (UnsafeRawPointer?, UnsafeMutablePointer<Int32>) -> Int32
        let initialize = unsafeBitCast(try symbol("MPI_Init"), to: Init.self)
        let commRank = unsafeBitCast(try symbol("MPI_Comm_rank"), to: Query.self)
        let commSize = unsafeBitCast(try symbol("MPI_Comm_size"), to: Query.self)
        allreduce = unsafeBitCast(try symbol("MPI_Allreduce"), to: Allreduce.self)
        finalize = unsafeBitCast(try symbol("MPI_Finalize"), to: (@convention(c) () -> Int32).self)
        world = UnsafeRawPointer(try symbol("ompi_mpi_comm_world"))
        float = UnsafeRawPointer(try symbol("ompi_mpi_float"))
        double = UnsafeRawPointer(try symbol("ompi_mpi_double"))
        sum = UnsafeRawPointer(try symbol("ompi_mpi_op_sum"))
        guard initialize(nil, nil) == 0 else { throw LoRAError("MPI_Init failed") }
        var r: Int32 = 0, s: Int32 = 0
        guard commRank(world, &r) == 0, commSize(world, &s) == 0, s >= 1, r >= 0, r < s else {
            throw LoRAError("MPI could not tell this process's rank")
        }
        rank = Int(r)
        size = Int(s)
        localSize = max(1, Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1)
        // Ranks leave together; MPI_Finalize before exit keeps mpirun from reporting a rank that vanished.
        atexit { _ = MPI.job?.finalize() }
    }

    /// MPI's in-place marker (Open MPI's MPI_IN_PLACE is the address 1).
    private var inPlace: UnsafeRawPointer? { UnsafeRawPointer(bitPattern: 1) }

    public func sum(_ values: UnsafeMutableBufferPointer<Float>) throws {
        guard let base = values.baseAddress, values.count > 0 else { return }
        var offset = 0
        while offset < values.count {  // counts are Int32
            let n = min(values.count - offset, Int(Int32.max))
            guard allreduce(inPlace, base + offset, Int32(n), float, sum, world) == 0 else { throw LoRAError("MPI_Allreduce failed on rank \(rank)") }
            offset += n
        }
    }

    public func sum(_ values: UnsafeMutableBufferPointer<Double>) throws {
        guard let base = values.baseAddress, values.count > 0 else { return }
        guard values.count <= Int(Int32.max), allreduce(inPlace, base, Int32(values.count), double, sum, world) == 0 else {
            throw LoRAError("MPI_Allreduce failed on rank \(rank)")
        }
    }
}
