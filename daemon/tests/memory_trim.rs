//! `memory::release_free_heap` gives the pages freed in the middle of the heap
//! back to the kernel. A process of its own: the resident set of a test binary
//! running other tests at the same time would be noise.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use wovenet_daemon::memory::release_free_heap;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/self/status:\n{status}"))
}

#[test]
fn pages_freed_between_live_blocks_go_back_to_the_kernel() {
    // 32 MiB in 64 KiB blocks (the size of a GRO batch quinn copies), all
    // touched; then all but every 16th freed, so the survivors pin the arena
    // and malloc cannot shrink it from the top.
    let blocks: Vec<Vec<u8>> = (0..512).map(|i| vec![i as u8 | 1; 64 << 10]).collect();
    let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(16).collect();
    let before = resident_kib();
    assert!(release_free_heap(), "nothing was returned");
    let after = resident_kib();
    assert!(
        before.saturating_sub(after) >= 16 << 10,
        "resident {before} KiB before the trim, {after} KiB after"
    );
    // The survivors are intact.
    for (i, b) in kept.iter().enumerate() {
        assert!(b.iter().all(|&x| x == (i * 16) as u8 | 1));
    }
}
