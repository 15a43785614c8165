//! What the builders that mint new material take from the world. The time
//! and a source of randomness come in as a [`Mint`], so no builder reads a
//! clock or an RNG of its own, and a test that fixes both gets the same
//! validity periods, renewal times, bootstrap tokens, encryption keys and
//! certificate serials on every run.
//!
//! Key pairs alone come from the crypto provider's own generator (rcgen
//! asks it directly): a signing key is never drawn from a seed a caller
//! chose.

use k8s_openapi::jiff::Timestamp;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The time of a reconcile and a cryptographically secure generator.
pub struct Mint {
    now: Timestamp,
    rng: StdRng,
}

impl std::fmt::Debug for Mint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mint")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Mint {
    /// At `now`, drawing from a generator the operating system seeds.
    pub fn at(now: Timestamp) -> Self {
        Self {
            now,
            rng: StdRng::from_os_rng(),
        }
    }

    /// At `now`, drawing from a generator seeded with `seed`: the same
    /// draws on every run, for tests and benchmarks.
    pub fn seeded(now: Timestamp, seed: u64) -> Self {
        Self {
            now,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A mint at a fixed time (2026-01-01T00:00:00Z) with a fixed seed.
    #[cfg(any(test, feature = "fixtures"))]
    pub fn fixed() -> Self {
        Self::seeded(
            Timestamp::from_second(1_767_225_600).expect("a valid time"),
            1,
        )
    }

    /// The time material minted now starts from.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// `N` random bytes.
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        self.rng.random()
    }

    /// `n` random characters of `[a-z0-9]`.
    pub fn lowercase_alphanumeric(&mut self, n: usize) -> String {
        Alphanumeric
            .sample_string(&mut self.rng, n)
            .to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_mint_draws_the_same_and_different_seeds_differ() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let draw = |seed| {
            let mut mint = Mint::seeded(at, seed);
            (mint.bytes::<16>(), mint.lowercase_alphanumeric(16))
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let (_, text) = draw(7);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{text}"
        );
        assert_eq!(Mint::seeded(at, 7).now(), at);
        assert_ne!(Mint::at(at).bytes::<16>(), Mint::at(at).bytes::<16>());
    }
}
