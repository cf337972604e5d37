import Foundation
import XCTest
@testable import LoRAKit

/// Foundation's file errors become one sentence naming the path and the system's reason.
final class FileErrorTests: XCTestCase {
    func testFoundationWriteErrorNamesThePathAndTheReason() {
        // Nothing can be created in /proc (and on macOS it does not exist): ENOENT.
        XCTAssertThrowsError(try Data("x".utf8).write(to: URL(fileURLWithPath: "/proc/lora-x"))) { e in
            XCTAssertEqual(LoRAError.describing(e), "cannot write /proc/lora-x: No such file or directory")
            XCTAssertEqual(LoRAError.cannotWrite("/proc/lora-y", e).message, "cannot write /proc/lora-y: No such file or directory")
        }
        XCTAssertThrowsError(try FileManager.default.createDirectory(atPath: "/proc/lora-d/e", withIntermediateDirectories: true)) { e in
            XCTAssertEqual(LoRAError.cannotWrite("/proc/lora-d/e", e).message, "cannot write /proc/lora-d/e: No such file or directory")
        }
    }

    func testFoundationReadErrorSaysRead() {
        XCTAssertThrowsError(try String(contentsOfFile: "/nonexistent/lora-file", encoding: .utf8)) { e in
            XCTAssertEqual(LoRAError.describing(e), "cannot read /nonexistent/lora-file: No such file or directory")
        }
    }

    func testOtherErrorsAreOneLine() {
        XCTAssertEqual(LoRAError.describing(LoRAError("bad\nvalue")), "bad\\nvalue")
        XCTAssertEqual(LoRAError.describing(POSIXError(.EACCES)), "Permission denied")
        struct Custom: Error, CustomStringConvertible { var description: String { "line 1\nline 2\u{1B}" } }
        XCTAssertEqual(LoRAError.describing(Custom()), "line 1\\nline 2\\u{1B}")
        XCTAssertEqual(LoRAError("a\r\tb\u{2028}c").message, "a\\r\\tb\\u{2028}c")
    }
}
