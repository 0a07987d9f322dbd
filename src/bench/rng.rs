//! The generator that picks keys and operations.

/// xorshift64* (Vigna): small, fast, and good enough to pick keys and operations.
pub(super) struct Rng(u64);

impl Rng {
    /// The generator of connection `index` for `seed`: distinct per connection, the same
    /// from run to run, never zero.
    pub(super) fn new(seed: u64, index: u64) -> Rng {
        let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (index + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng(mixed | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is below 2^-40 for any key space used).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
