import Foundation

/// The bytes of a file: memory-mapped read-only when possible, otherwise read into an allocation.
/// `kind` ("GGUF file", ...) only words the error messages, which always name the path.
final class MappedFile: @unchecked Sendable {
    // @unchecked Sendable: the pointer and count never change and the bytes are read-only.
    let base: UnsafeRawPointer
    let count: Int
    let isMapped: Bool

    var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    init(path: String, kind: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw LoRAError("Cannot open \(kind) \(path): \(String(cString: strerror(errno))).")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw LoRAError("Cannot read the size of \(kind) \(path): \(String(cString: strerror(errno))).")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw LoRAError("The path of \(kind) \(path) is not a regular file.")
        }
        let size = Int(info.st_size)

        if size > 0, let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED {
            base = UnsafeRawPointer(mapped)
            count = size
            isMapped = true
            return
        }

        // Fallback: read the whole file into memory.
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 64)
        var filled = 0
        while filled < size {
            let n = read(fd, buffer + filled, size - filled)
            if n > 0 {
                filled += n
            } else if n == 0 {
                break  // the file shrank while we read it
            } else if errno != EINTR {
                let reason = String(cString: strerror(errno))
                buffer.deallocate()
                throw LoRAError("Cannot read \(kind) \(path): \(reason).")
            }
        }
        base = UnsafeRawPointer(buffer)
        count = filled
        isMapped = false
    }

    deinit {
        if isMapped {
            munmap(UnsafeMutableRawPointer(mutating: base), count)
        } else {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        }
    }
}
