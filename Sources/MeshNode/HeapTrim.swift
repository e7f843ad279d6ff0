import Foundation

/// glibc's `malloc_trim`, looked up at run time because Swift's Glibc module does not export
/// `malloc.h`. It is nil on other C libraries.
private let mallocTrim: (@convention(c) (Int) -> Int32)? = {
    // A nil handle is glibc's RTLD_DEFAULT: search every loaded object.
    guard let symbol = dlsym(nil, "malloc_trim") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
}()

/// glibc's `mallopt`, looked up like `malloc_trim`.
private let mallocOption: (@convention(c) (Int32, Int32) -> Int32)? = {
    guard let symbol = dlsym(nil, "mallopt") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
}()

/// Returns the free pages of the C heap to the kernel. Decoding and merging a large push-pull
/// payload frees many small blocks that glibc otherwise keeps, so a node that joined a loaded
/// cluster would keep RSS it no longer uses (about 6 MiB at 50,000 users in a late-join run).
/// It walks the heap's free lists, so call it only after such an event.
func releaseFreeHeapMemory() {
    _ = mallocTrim?(0)
}

/// Fixes the size from which glibc serves a block with its own `mmap` at 128 KiB, its starting
/// value. glibc otherwise raises that size to each large block freed, up to 32 MiB. Once a grown
/// array or a push-pull buffer is freed, later ones of that size then come from the heap. When
/// those are freed, their holes stay resident among the small blocks around them. Blocks from
/// `mmap` go back to the kernel when freed.
func fixLargeBlockThreshold() {
    // M_MMAP_THRESHOLD in glibc's malloc.h.
    let mmapThreshold: Int32 = -3
    _ = mallocOption?(mmapThreshold, 128 * 1024)
}
