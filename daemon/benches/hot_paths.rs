//! Micro-benchmarks of the hot pure paths (placeholder, filled in below).
fn main() {}
