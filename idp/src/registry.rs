//! The company registry chosen in `[company_registry]`.

use crate::config::{CompanyRegistryKind, CompanyRegistrySettings, LoadedConfig};
use anyhow::bail;
use idp_company_registry::{BundledRegistry, SireneConfigError, SireneRegistry};
use idp_core::company::CompanyRegistry;
use std::sync::Arc;
use std::time::Duration;

/// Builds the registry adapter the configuration names: `bundled` (the data
/// file shipped in the binary) or `sirene` (the INSEE Sirene API, which needs
/// `company_registry.api_key`).
pub fn from_config(cfg: &LoadedConfig) -> anyhow::Result<Arc<dyn CompanyRegistry>> {
    let where_ = cfg
        .source
        .as_ref()
        .map_or_else(|| "configuration".to_owned(), |p| p.display().to_string());
    build(&cfg.settings.company_registry).map_err(|e| anyhow::anyhow!("{where_}: {e}"))
}

fn build(s: &CompanyRegistrySettings) -> anyhow::Result<Arc<dyn CompanyRegistry>> {
    match s.kind {
        CompanyRegistryKind::Bundled => Ok(Arc::new(BundledRegistry)),
        CompanyRegistryKind::Sirene => {
            let Some(api_key) = s.api_key.as_deref().filter(|k| !k.trim().is_empty()) else {
                bail!(
                    "company_registry.api_key: required with kind = \"sirene\" \
                     (set IDP_COMPANY_REGISTRY__API_KEY or IDP_COMPANY_REGISTRY__API_KEY_FILE)"
                );
            };
            if s.timeout_secs == 0 {
                bail!("company_registry.timeout_secs: must be positive");
            }
            let timeout = Duration::from_secs(u64::from(s.timeout_secs));
            let registry =
                SireneRegistry::new(&s.base_url, api_key, timeout).map_err(|e| match e {
                    SireneConfigError::BaseUrl(_) => anyhow::anyhow!(
                        "company_registry.base_url: {:?} is not an absolute http(s) URL",
                        s.base_url
                    ),
                    SireneConfigError::EmptyApiKey | SireneConfigError::ApiKeyNotAscii => {
                        anyhow::anyhow!("company_registry.api_key: {e}")
                    }
                    SireneConfigError::ZeroTimeout => {
                        anyhow::anyhow!("company_registry.timeout_secs: {e}")
                    }
                    SireneConfigError::Client(_) => anyhow::anyhow!("company_registry: {e}"),
                })?;
            Ok(Arc::new(registry))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sirene(api_key: Option<&str>) -> CompanyRegistrySettings {
        CompanyRegistrySettings {
            kind: CompanyRegistryKind::Sirene,
            api_key: api_key.map(str::to_owned),
            ..CompanyRegistrySettings::default()
        }
    }

    fn error(s: &CompanyRegistrySettings) -> String {
        match build(s) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn bundled_is_the_default() {
        let registry = build(&CompanyRegistrySettings::default()).expect("builds");
        let siret = idp_core::company::Siret::parse("44306184100047").expect("valid");
        let company = registry.lookup(&siret).await.expect("bundled");
        assert_eq!(company.map(|c| c.name).as_deref(), Some("GOOGLE FRANCE"));
    }

    #[test]
    fn sirene_needs_an_api_key() {
        for key in [None, Some(""), Some("   ")] {
            let e = error(&sirene(key));
            assert!(e.starts_with("company_registry.api_key:"), "{e}");
            assert!(e.contains("IDP_COMPANY_REGISTRY__API_KEY"), "{e}");
        }
    }

    #[test]
    fn sirene_with_a_key_builds() {
        assert!(build(&sirene(Some("a-key"))).is_ok());
    }

    #[test]
    fn bad_sirene_settings_name_the_field() {
        let e = error(&CompanyRegistrySettings {
            base_url: "api.insee.fr".into(),
            ..sirene(Some("secret-key-value"))
        });
        assert!(e.starts_with("company_registry.base_url:"), "{e}");
        assert!(!e.contains("secret-key-value"), "{e}");
        let e = error(&CompanyRegistrySettings {
            timeout_secs: 0,
            ..sirene(Some("a-key"))
        });
        assert!(e.starts_with("company_registry.timeout_secs:"), "{e}");
        let e = error(&sirene(Some("bad\nkey")));
        assert!(e.starts_with("company_registry.api_key:"), "{e}");
        assert!(!e.contains("bad\nkey"), "{e}");
    }

    #[test]
    fn errors_name_the_file() {
        let cfg = LoadedConfig {
            settings: crate::config::Settings {
                company_registry: sirene(None),
                ..Default::default()
            },
            source: Some("config/idp.toml".into()),
            issuer: "http://127.0.0.1:8080".into(),
            database_url: "sqlite::memory:".into(),
            clients_dir: None,
            themes_dir: None,
            levels: idp_core::assurance::Levels::builtin(),
        };
        let e = match from_config(&cfg) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.starts_with("config/idp.toml: company_registry.api_key:"),
            "{e}"
        );
    }
}
