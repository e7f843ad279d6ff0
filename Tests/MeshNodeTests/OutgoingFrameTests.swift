import XCTest

@testable import MeshNode

final class OutgoingFrameTests: XCTestCase {
    /// Returns the frame's header bytes, in front of its payload.
    private func header(of frame: OutgoingFrame) -> [UInt8] {
        Array(UnsafeBufferPointer(start: frame.wire, count: frame.wireCount - frame.count))
    }

    func testHeader_shortPayload_hasSevenBitLength() {
        let frame = OutgoingFrame(String(repeating: "a", count: 125))
        XCTAssertEqual(header(of: frame), [0x81, 125])
        XCTAssertEqual(frame.wire + 2, frame.payload)
    }

    func testHeader_mediumPayload_hasSixteenBitLength() {
        let frame = OutgoingFrame(String(repeating: "a", count: 65_535))
        XCTAssertEqual(header(of: frame), [0x81, 126, 0xFF, 0xFF])
        XCTAssertEqual(frame.wireCount, 65_539)
    }

    func testHeader_longPayload_hasSixtyFourBitLength() {
        let frame = OutgoingFrame(String(repeating: "a", count: 70_000))
        XCTAssertEqual(header(of: frame), [0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70])
        XCTAssertEqual(String(decoding: UnsafeBufferPointer(start: frame.payload, count: 3), as: UTF8.self), "aaa")
    }

    func testHeader_emptyPayload_isTwoBytes() {
        let frame = OutgoingFrame("")
        XCTAssertEqual(header(of: frame), [0x81, 0])
        XCTAssertEqual(frame.wireCount, 2)
    }
}
