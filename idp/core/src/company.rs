//! The company registry port: looks up a French company by its SIRET number
//! (`adapters/company-registry` implements it with a bundled data file and
//! with the INSEE Sirene API).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A company as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Company {
    /// 14 digits.
    pub siret: String,
    pub name: String,
    /// One line: street, postcode, city.
    pub address: Option<String>,
    /// Whether the establishment is active (a closed one cannot register).
    pub active: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or answered with an error: the user
    /// may retry later.
    #[error("company registry unavailable: {0}")]
    Unavailable(String),
}

/// Looks up companies. Callers pass only numbers that passed [`Siret::parse`].
#[async_trait]
pub trait CompanyRegistry: Send + Sync {
    /// `Ok(None)` when no establishment has this number.
    async fn lookup(&self, siret: &Siret) -> Result<Option<Company>, RegistryError>;
}

/// A SIRET number that passed the format and checksum checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Siret(pub(crate) String);

/// Why a typed SIRET number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SiretError {
    #[error("a SIRET number has exactly 14 digits")]
    WrongLength,
    #[error("a SIRET number contains only digits (spaces are ignored)")]
    NotDigits,
    #[error("this is not a valid SIRET number: check for a typing mistake")]
    BadChecksum,
}

/// The SIREN of La Poste, whose establishments do not follow the Luhn key.
const LA_POSTE_SIREN: &str = "356000000";
/// La Poste's head office, which does follow the Luhn key.
const LA_POSTE_HEAD_OFFICE: &str = "35600000000048";

impl Siret {
    /// Parses what a user typed: spaces (and other white space) are ignored;
    /// the rest must be 14 digits whose Luhn key is valid.
    ///
    /// The exception is La Poste (SIREN 356 000 000): its establishments are
    /// numbered beyond what the Luhn key allows, so INSEE checks them by the
    /// sum of the 14 digits, which must be a multiple of 5; its head office,
    /// 356 000 000 00048, keeps the Luhn key. (INSEE, "SIRET" in the Sirene
    /// documentation; the same rule as the widely used validators, e.g. the
    /// `siret` Ruby gem and annuaire-entreprises.data.gouv.fr.)
    pub fn parse(raw: &str) -> Result<Self, SiretError> {
        let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(SiretError::NotDigits);
        }
        if digits.len() != 14 {
            return Err(SiretError::WrongLength);
        }
        let valid = if digits.starts_with(LA_POSTE_SIREN) && digits != LA_POSTE_HEAD_OFFICE {
            digit_sum(&digits).is_multiple_of(5)
        } else {
            luhn_valid(&digits)
        };
        if valid {
            Ok(Self(digits))
        } else {
            Err(SiretError::BadChecksum)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SIREN: the first 9 digits, the legal unit (company).
    pub fn siren(&self) -> &str {
        &self.0[..9]
    }
}

impl std::fmt::Display for Siret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Siret {
    type Err = SiretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Sum of the ASCII digits of `digits`.
fn digit_sum(digits: &str) -> u32 {
    digits.bytes().map(|b| u32::from(b - b'0')).sum()
}

/// The Luhn check (ISO/IEC 7812-1): from the right, every second digit is
/// doubled (minus 9 when above 9); the total must be a multiple of 10.
fn luhn_valid(digits: &str) -> bool {
    let total: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    total.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_sirets_are_valid() {
        for (siret, who) in [
            ("44306184100047", "Google France, head office"),
            ("54205118000066", "TotalEnergies SE, head office"),
            ("66204244900014", "BNP Paribas, head office"),
            ("55212022200013", "Société Générale, head office"),
            ("42476141900045", "OVH, head office"),
            ("55204944776279", "SNCF, head office"),
        ] {
            let parsed = Siret::parse(siret).unwrap_or_else(|e| panic!("{who}: {e}"));
            assert_eq!(parsed.as_str(), siret);
            assert_eq!(parsed.siren(), &siret[..9]);
        }
    }

    #[test]
    fn spaces_are_ignored() {
        let parsed = Siret::parse(" 443 061 841 00047 ").expect("valid");
        assert_eq!(parsed.as_str(), "44306184100047");
        assert_eq!(parsed.to_string(), "44306184100047");
        assert_eq!(
            "542\u{a0}051\u{a0}180\t00066".parse::<Siret>(),
            Ok(Siret("54205118000066".into()))
        );
    }

    #[test]
    fn wrong_lengths_are_refused() {
        for raw in ["", "   ", "4430618410004", "443061841000470", "443061841"] {
            assert_eq!(Siret::parse(raw), Err(SiretError::WrongLength), "{raw:?}");
        }
    }

    #[test]
    fn non_digits_are_refused() {
        for raw in [
            "4430618410004A",
            "443-061-841-00047",
            "443.061.841.00047",
            "FR44306184100047",
            "４４３０６１８４１０００４７",
        ] {
            assert_eq!(Siret::parse(raw), Err(SiretError::NotDigits), "{raw:?}");
        }
    }

    #[test]
    fn bad_checksums_are_refused() {
        for raw in [
            "44306184100048",
            "54205118000067",
            "12345678901234",
            "44306184100074",
        ] {
            assert_eq!(Siret::parse(raw), Err(SiretError::BadChecksum), "{raw}");
        }
    }

    #[test]
    fn la_poste_establishments_use_the_digit_sum() {
        // Real post offices: not Luhn-valid, digit sum a multiple of 5.
        for raw in ["35600000053166", "35600000053210", "35600000053215"] {
            assert!(!luhn_valid(raw), "{raw}");
            assert_eq!(Siret::parse(raw).map(|s| s.0), Ok(raw.to_owned()));
        }
        // The head office keeps the Luhn key.
        assert!(Siret::parse("35600000000048").is_ok());
        // A digit sum that is not a multiple of 5 is refused...
        assert_eq!(Siret::parse("35600000053167"), Err(SiretError::BadChecksum));
        // ... even when the number happens to pass the Luhn check.
        assert!(luhn_valid("35600000000014"));
        assert_eq!(Siret::parse("35600000000014"), Err(SiretError::BadChecksum));
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            SiretError::WrongLength.to_string(),
            "a SIRET number has exactly 14 digits"
        );
        assert!(SiretError::NotDigits.to_string().contains("only digits"));
        assert!(
            SiretError::BadChecksum
                .to_string()
                .contains("typing mistake")
        );
    }

    #[test]
    fn serde_is_the_bare_number() {
        let s = Siret::parse("44306184100047").expect("valid");
        assert_eq!(
            serde_json::to_value(&s).expect("serializes"),
            serde_json::json!("44306184100047")
        );
    }
}
