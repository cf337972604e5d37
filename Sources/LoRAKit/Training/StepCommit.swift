import Foundation

/// How a training run saves a step's files (checkpoint, adapter, loss curve) so that a kill at any
/// moment leaves its folder with the checkpoint and adapter of one same step, or, before the first
/// save completes, neither:
///
/// 1. every file is written into `FOLDER/.save-pending` and flushed to disk (fsync);
/// 2. `.save-pending` is renamed `.save-committed`: one atomic rename, the commit point;
/// 3. each file is renamed from `.save-committed` into the folder, then `.save-committed` is removed.
///
/// Whatever opens the folder first calls `recover`: it finishes a committed save (step 3 again;
/// renaming what is left is idempotent) and discards a pending one. The adapter also carries its
/// step in its metadata (`trainingStepKey`), so that the pair can be checked.
public enum StepCommit {
    static let pending = ".save-pending", committed = ".save-committed"
    /// The adapter_model.safetensors metadata key that holds the training step it was saved at.
    public static let trainingStepKey = "swift_lora_training_step"

    /// Runs `write` on an empty staging folder, then commits what it wrote into `folder`. The caller
    /// holds the folder's lock.
    static func save(to folder: String, write: (String) throws -> Void) throws {
        let fm = FileManager.default
        let staging = folder + "/" + pending, done = folder + "/" + committed
        try? fm.removeItem(atPath: staging)
        do { try fm.createDirectory(atPath: staging, withIntermediateDirectories: true) } catch {
            throw LoRAError("cannot create \(staging): \(String(cString: strerror(errno)))")
        }
        try write(staging)
        try syncTree(staging)
        guard rename(staging, done) == 0 else {
            throw LoRAError("cannot rename \(staging) to \(done): \(String(cString: strerror(errno)))")
        }
        try sync(folder)
        try finish(folder)
    }

    /// Finishes a save that was committed and discards one that was not; does nothing when neither
    /// is there, or when another process holds the folder's lock (that run finishes its own save).
    /// `lock`: the lock this process holds on `folder`, if any.
    public static func recover(_ folder: String, holding lock: AdapterFolderLock? = nil) throws {
        let fm = FileManager.default
        let staging = folder + "/" + pending, done = folder + "/" + committed
        guard fm.fileExists(atPath: staging) || fm.fileExists(atPath: done) else { return }
        guard let held = lock ?? AdapterFolderLock.attempt(folder: folder) else { return }
        defer { if lock == nil { held.release() } }
        if fm.fileExists(atPath: done) { try finish(folder) }
        if fm.fileExists(atPath: staging) {
            do { try fm.removeItem(atPath: staging) } catch {
                throw LoRAError("cannot remove the unfinished save \(staging): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Step 3: moves the committed files into the folder.
    private static func finish(_ folder: String) throws {
        let done = folder + "/" + committed
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: done) } catch {
            throw LoRAError("cannot read the committed save \(done): \(String(cString: strerror(errno)))")
        }
        for name in names {
            // A folder (a kept step's or the best adapter) replaces one of the same name: rename does
            // not replace a non-empty folder. A kill between the two is finished by the next recover.
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: folder + "/" + name, isDirectory: &isDir), isDir.boolValue {
                do { try FileManager.default.removeItem(atPath: folder + "/" + name) } catch {
                    throw LoRAError("cannot replace \(folder)/\(name): \(String(cString: strerror(errno)))")
                }
            }
            guard rename(done + "/" + name, folder + "/" + name) == 0 else {
                throw LoRAError("cannot move \(done)/\(name) into \(folder): \(String(cString: strerror(errno)))")
            }
        }
        try sync(folder)
        guard rmdir(done) == 0 else { throw LoRAError("cannot remove \(done): \(String(cString: strerror(errno)))") }
        try sync(folder)
    }

    /// Flushes a folder's files, its subfolders' and its own entries to disk.
    private static func syncTree(_ folder: String) throws {
        for name in try FileManager.default.contentsOfDirectory(atPath: folder) {
            var isDir: ObjCBool = false
            let path = folder + "/" + name
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue { try syncTree(path) } else { try sync(path) }
        }
        try sync(folder)
    }

    /// Flushes a file or folder (its entries) to disk.
    private static func sync(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw LoRAError("cannot open \(path) to flush it: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw LoRAError("cannot flush \(path) to disk: \(String(cString: strerror(errno)))") }
    }

    /// The training steps of the adapter and of the checkpoint in `folder` (nil where a file or the
    /// stamp is absent), after recovering an interrupted save. Reads the checkpoint's whole state,
    /// so a checkpoint that cannot be resumed from is an error.
    public static func steps(in folder: String) throws -> (adapter: Int?, checkpoint: Int?) {
        try recover(folder)
        let fm = FileManager.default
        var adapter: Int? = nil, checkpoint: Int? = nil
        let adapterPath = folder + "/adapter_model.safetensors"
        if fm.fileExists(atPath: adapterPath), let stamp = try SafetensorsFile(path: adapterPath).metadata[trainingStepKey] {
            guard let step = Int(stamp), step >= 0 else { throw LoRAError("\(adapterPath) has an unreadable training step \(stamp.debugDescription)") }
            adapter = step
        }
        let checkpointPath = folder + "/" + TrainingCheckpoint.fileName
        if fm.fileExists(atPath: checkpointPath) { checkpoint = try TrainingCheckpoint.state(at: checkpointPath).step }
        return (adapter, checkpoint)
    }
}
