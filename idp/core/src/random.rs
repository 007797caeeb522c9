//! The one place randomness comes from: tokens, identifiers, salts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;

/// `n` random bytes from the operating system's CSPRNG-seeded thread RNG.
#[allow(clippy::disallowed_methods)]
pub fn bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill(&mut v[..]);
    v
}

/// A 256-bit random token, base64url without padding (43 characters).
pub fn token() -> String {
    URL_SAFE_NO_PAD.encode(bytes(32))
}

/// A uniformly random integer in `0..upper`.
#[allow(clippy::disallowed_methods)]
pub fn below(upper: u32) -> u32 {
    rand::rng().random_range(0..upper)
}
