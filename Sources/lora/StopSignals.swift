import Foundation

/// Turns Ctrl-C (SIGINT), SIGTERM and SIGUSR1 into a request that training stop after the current
/// step, save and exit; a second signal of any of them ends the process at once (not under mpirun). SIGUSR1 is the one
/// mpirun forwards to every rank (and what batch schedulers send ahead of a time limit), where Ctrl-C
/// at mpirun makes it kill the ranks a second later. Signals are taken on a
/// dispatch queue rather than in a C handler, so what they run needs not be async-signal-safe.
final class StopSignals: @unchecked Sendable {
    struct Signal: Sendable {
        let number: Int32
        var name: String { number == SIGINT ? "SIGINT (Ctrl-C)" : number == SIGUSR1 ? "SIGUSR1" : "SIGTERM" }
        /// 128 + the signal's number, what a shell reports for a process the signal ended.
        var exitCode: Int32 { 128 + number }

        /// Ends the process by this signal, its default action, so that a shell script running `lora
        /// train` stops too (bash goes on after a child that merely exits 130); exits 128 + the number
        /// should the signal not end it.
        func endProcess() -> Never {
            fflush(nil)
            signal(number, SIG_DFL)
            kill(getpid(), number)
            _exit(exitCode)
        }
    }

    private let lock = NSLock()
    private var first: Int32 = 0  // guarded by lock
    private var sources: [any DispatchSourceSignal] = []

    /// Whether the signal received asks to give up the step in flight (see `init`).
    var abandonsStep: Bool { received.map { abandoning.contains($0.number) } ?? false }

    /// The signal that asked the run to stop, once one has.
    var received: Signal? {
        let n = lock.withLock { first }
        return n == 0 ? nil : Signal(number: n)
    }

    private let announces: Bool
    private let abandoning: Set<Int32>

    /// `announces`: whether to say on stderr that the run will stop (under mpirun, rank 0 alone does).
    /// `abandoning`: the signals that give up the step in flight instead of finishing it (under
    /// mpirun, SIGINT and SIGTERM: mpirun follows its SIGTERM with SIGKILL a second later).
    init(announces: Bool = true, abandoning: Set<Int32> = []) {
        self.announces = announces
        self.abandoning = abandoning
        for number in [SIGINT, SIGTERM, SIGUSR1] {
            signal(number, SIG_IGN)  // delivered to the source below instead of ending the process
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [unowned self] in handle(number) }
            source.resume()
            sources.append(source)
        }
    }

    private func handle(_ number: Int32) {
        let earlier: Int32 = lock.withLock {
            defer { if first == 0 { first = number } }
            return first
        }
        guard earlier == 0 else {
            // mpirun may repeat its SIGTERM within the second it gives before SIGKILL, which the
            // save needs; otherwise checkpoints are written so that a kill at any moment leaves the
            // last complete step.
            if abandoning.contains(earlier) { return }
            Signal(number: earlier).endProcess()
        }
        guard announces else { return }
        let clear = isatty(STDOUT_FILENO) != 0 ? ProgressDisplay.clearLine : ""  // the live progress line
        let plan = abandoning.contains(number) ? "giving up this step to save the one before" : "stopping after this step to save it"
        let line = clear + "\(Signal(number: number).name): \(plan) (send it again to quit now)\n"
        try? FileHandle.standardError.write(contentsOf: Data(line.utf8))  // write(_:) traps when the write fails
    }
}
