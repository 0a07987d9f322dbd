//! piazza-bench placeholder.
fn main() {}
