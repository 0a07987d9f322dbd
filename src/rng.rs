//! The crate's one pseudo-random generator: it picks the load generator's keys and
//! operations and drives the randomized tests of the parsers (public, so integration
//! tests and fuzz loops can use it too).

/// xorshift64* (Vigna): small, fast, and good enough to pick keys and operations or to
/// make test data. Not for anything that must be unpredictable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of stream `index` (a bench connection) for `seed`: distinct per
    /// stream, the same from run to run, never zero.
    pub fn new(seed: u64, index: u64) -> Rng {
        let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (index + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng(mixed | 1)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)] // not an iterator: it never ends
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is below 2^-40 for any key space used).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `0..n`, for picking an index (0 when `n` is 0).
    pub fn index(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `len` random bytes (test data).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Input for a parser's randomized test: random bytes, `prefix` then a run drawn from
    /// `alphabet`, or one of `seeds`; then fewer than `edits` random edits (a byte made
    /// random or drawn from `alphabet`, a cut, a byte removed).
    #[cfg(test)]
    pub(crate) fn parser_input(
        &mut self,
        seeds: &[&[u8]],
        prefix: &[u8],
        alphabet: &[u8],
        edits: usize,
    ) -> Vec<u8> {
        let mut input: Vec<u8> = match self.index(3) {
            0 => (0..self.index(64)).map(|_| self.next() as u8).collect(),
            1 => {
                let mut v = prefix.to_vec();
                v.extend((0..self.index(64)).map(|_| alphabet[self.index(alphabet.len())]));
                v
            }
            _ => seeds[self.index(seeds.len())].to_vec(),
        };
        for _ in 0..self.index(edits) {
            if input.is_empty() {
                break;
            }
            let at = self.index(input.len());
            match self.index(4) {
                0 => input[at] = self.next() as u8,
                1 => input[at] = alphabet[self.index(alphabet.len())],
                2 => input.truncate(at),
                _ => {
                    input.remove(at);
                }
            }
        }
        input
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_choice_is_deterministic_per_seed_and_connection() {
        let draw = |seed, index| {
            let mut rng = Rng::new(seed, index);
            (0..100).map(|_| rng.below(10_000)).collect::<Vec<u64>>()
        };
        assert_eq!(draw(1, 0), draw(1, 0));
        assert_ne!(draw(1, 0), draw(1, 1));
        assert_ne!(draw(1, 0), draw(2, 0));
        let mut rng = Rng::new(0, 0);
        let gets = (0..10_000).filter(|_| rng.unit() < 0.9).count();
        assert!((8_800..=9_200).contains(&gets), "{gets}");
        let bytes = Rng::new(3, 0).bytes(64);
        assert_eq!(bytes, Rng::new(3, 0).bytes(64));
        assert!(bytes.iter().any(|&b| b != bytes[0]));
    }
}
