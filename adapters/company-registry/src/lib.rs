//! Company registry adapters: SIRET look-ups in a data file bundled in the
//! binary ([`BundledRegistry`], development and tests) or in the INSEE Sirene
//! API ([`SireneRegistry`], production).

use async_trait::async_trait;
use idp_core::company::{Company, CompanyRegistry, RegistryError, Siret};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderValue};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

/// The bundled establishments (see `data/companies.json` and the README).
const BUNDLED_DATA: &str = include_str!("../data/companies.json");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BundledFile {
    #[serde(rename = "about")]
    _about: String,
    companies: Vec<Company>,
}

/// The bundled establishments by SIRET, or why the file could not be read.
static BUNDLED: LazyLock<Result<HashMap<String, Company>, String>> = LazyLock::new(|| {
    let file: BundledFile = serde_json::from_str(BUNDLED_DATA)
        .map_err(|e| format!("bundled company data is not valid: {e}"))?;
    let mut companies = HashMap::with_capacity(file.companies.len());
    for company in file.companies {
        let siret = Siret::parse(&company.siret)
            .map_err(|e| format!("bundled company data: {}: {e}", company.siret))?;
        if siret.as_str() != company.siret {
            return Err(format!(
                "bundled company data: {}: write the SIRET without spaces",
                company.siret
            ));
        }
        if companies
            .insert(company.siret.clone(), company.clone())
            .is_some()
        {
            return Err(format!(
                "bundled company data: {} is listed twice",
                company.siret
            ));
        }
    }
    Ok(companies)
});

/// Looks up the small data file bundled in the binary: about ten real French
/// establishments (one closed, two of La Poste), listed in the crate's README.
#[derive(Debug, Default, Clone, Copy)]
pub struct BundledRegistry;

impl BundledRegistry {
    /// Every bundled establishment, ordered by SIRET.
    pub fn companies(&self) -> Result<Vec<Company>, RegistryError> {
        let mut all: Vec<Company> = bundled()?.values().cloned().collect();
        all.sort_by(|a, b| a.siret.cmp(&b.siret));
        Ok(all)
    }
}

fn bundled() -> Result<&'static HashMap<String, Company>, RegistryError> {
    BUNDLED
        .as_ref()
        .map_err(|e| RegistryError::Unavailable(e.clone()))
}

#[async_trait]
impl CompanyRegistry for BundledRegistry {
    async fn lookup(&self, siret: &Siret) -> Result<Option<Company>, RegistryError> {
        Ok(bundled()?.get(siret.as_str()).cloned())
    }
}

/// Why a [`SireneRegistry`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SireneConfigError {
    #[error("base URL {0:?}: must be an absolute http(s) URL")]
    BaseUrl(String),
    #[error("the API key must not be empty")]
    EmptyApiKey,
    #[error("the API key contains characters not allowed in an HTTP header")]
    ApiKeyNotAscii,
    #[error("the timeout must be positive")]
    ZeroTimeout,
    #[error("HTTP client: {0}")]
    Client(String),
}

/// The header carrying the API key of an application of the INSEE API portal
/// ("API Sirene", plan "public").
const API_KEY_HEADER: &str = "X-INSEE-Api-Key-Integration";

/// Looks establishments up in the INSEE Sirene API (3.11):
/// `GET {base_url}/siret/{siret}`.
pub struct SireneRegistry {
    client: reqwest::Client,
    base_url: String,
    /// Marked sensitive: never shown by `Debug`, here or in reqwest.
    api_key: HeaderValue,
    timeout: Duration,
}

impl std::fmt::Debug for SireneRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SireneRegistry")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SireneRegistry {
    /// `base_url` such as `https://api.insee.fr/api-sirene/3.11` (a trailing
    /// `/` is ignored); `timeout` bounds each whole request.
    pub fn new(
        base_url: &str,
        api_key: &str,
        timeout: Duration,
    ) -> Result<Self, SireneConfigError> {
        let base_url = base_url.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(base_url)
            .map_err(|_| SireneConfigError::BaseUrl(base_url.into()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(SireneConfigError::BaseUrl(base_url.into()));
        }
        let api_key = api_key.trim();
        if api_key.is_empty() {
            return Err(SireneConfigError::EmptyApiKey);
        }
        let mut api_key =
            HeaderValue::from_str(api_key).map_err(|_| SireneConfigError::ApiKeyNotAscii)?;
        api_key.set_sensitive(true);
        if timeout.is_zero() {
            return Err(SireneConfigError::ZeroTimeout);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SireneConfigError::Client(e.to_string()))?;
        Ok(Self {
            client,
            base_url: base_url.to_owned(),
            api_key,
            timeout,
        })
    }

    /// Describes a failed request without its URL's secrets (there are none:
    /// the key travels in a header) and without reqwest's internals.
    fn transport_error(&self, e: &reqwest::Error) -> RegistryError {
        let what = if e.is_timeout() {
            format!(
                "the Sirene API did not answer within {} ms",
                self.timeout.as_millis()
            )
        } else if e.is_connect() {
            "the Sirene API could not be reached".to_owned()
        } else {
            "the request to the Sirene API failed".to_owned()
        };
        RegistryError::Unavailable(what)
    }
}

#[async_trait]
impl CompanyRegistry for SireneRegistry {
    async fn lookup(&self, siret: &Siret) -> Result<Option<Company>, RegistryError> {
        let url = format!("{}/siret/{}", self.base_url, siret.as_str());
        let response = self
            .client
            .get(&url)
            .header(API_KEY_HEADER, self.api_key.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(RegistryError::Unavailable(
                    "the Sirene API refused the request: too many requests (HTTP 429)".into(),
                ));
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                tracing::warn!(%status, "the Sirene API refused the request: check company_registry.api_key");
                return Err(RegistryError::Unavailable(format!(
                    "the Sirene API refused the request (HTTP {})",
                    status.as_u16()
                )));
            }
            other => {
                return Err(RegistryError::Unavailable(format!(
                    "the Sirene API answered HTTP {}",
                    other.as_u16()
                )));
            }
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let answer: SireneAnswer = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::Unavailable(format!("the Sirene API answer is not understood: {e}"))
        })?;
        answer.into_company(siret).map(Some)
    }
}

/// The part of `GET /siret/{siret}` read here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SireneAnswer {
    etablissement: Etablissement,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Etablissement {
    unite_legale: UniteLegale,
    #[serde(default)]
    adresse_etablissement: Option<Adresse>,
    periodes_etablissement: Vec<Periode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UniteLegale {
    #[serde(default)]
    denomination_unite_legale: Option<String>,
    #[serde(default)]
    prenom_usuel_unite_legale: Option<String>,
    #[serde(default)]
    prenom1_unite_legale: Option<String>,
    #[serde(default)]
    nom_usage_unite_legale: Option<String>,
    #[serde(default)]
    nom_unite_legale: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Adresse {
    #[serde(default)]
    numero_voie_etablissement: Option<String>,
    #[serde(default)]
    type_voie_etablissement: Option<String>,
    #[serde(default)]
    libelle_voie_etablissement: Option<String>,
    #[serde(default)]
    code_postal_etablissement: Option<String>,
    #[serde(default)]
    libelle_commune_etablissement: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Periode {
    #[serde(default)]
    etat_administratif_etablissement: Option<String>,
}

/// The trimmed value, `None` when absent or blank.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The present values joined by a space, `None` when none is.
fn join(values: &[&Option<String>]) -> Option<String> {
    let parts: Vec<&str> = values.iter().filter_map(|v| present(v)).collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

impl UniteLegale {
    /// The company name, or for a sole trader their first and last names.
    fn name(&self) -> Option<String> {
        if let Some(name) = present(&self.denomination_unite_legale) {
            return Some(name.to_owned());
        }
        let first = if present(&self.prenom_usuel_unite_legale).is_some() {
            &self.prenom_usuel_unite_legale
        } else {
            &self.prenom1_unite_legale
        };
        let last = if present(&self.nom_usage_unite_legale).is_some() {
            &self.nom_usage_unite_legale
        } else {
            &self.nom_unite_legale
        };
        join(&[first, last])
    }
}

impl Adresse {
    /// `8 RUE DE LONDRES, 75009 PARIS`.
    fn one_line(&self) -> Option<String> {
        let street = join(&[
            &self.numero_voie_etablissement,
            &self.type_voie_etablissement,
            &self.libelle_voie_etablissement,
        ]);
        let city = join(&[
            &self.code_postal_etablissement,
            &self.libelle_commune_etablissement,
        ]);
        match (street, city) {
            (Some(street), Some(city)) => Some(format!("{street}, {city}")),
            (one, None) | (None, one) => one,
        }
    }
}

impl SireneAnswer {
    fn into_company(self, siret: &Siret) -> Result<Company, RegistryError> {
        let e = self.etablissement;
        let name = e.unite_legale.name().ok_or_else(|| {
            RegistryError::Unavailable("the Sirene API answer has no company name".into())
        })?;
        // Periods come most recent first.
        let current = e.periodes_etablissement.first().ok_or_else(|| {
            RegistryError::Unavailable("the Sirene API answer has no period".into())
        })?;
        Ok(Company {
            siret: siret.as_str().to_owned(),
            name,
            address: e.adresse_etablissement.as_ref().and_then(Adresse::one_line),
            active: current.etat_administratif_etablissement.as_deref() == Some("A"),
        })
    }
}
