//! The bundled registry: the establishments documented in the README are
//! found, with their state; other valid numbers are unknown.

use idp_company_registry::BundledRegistry;
use idp_core::company::{CompanyRegistry, Siret};

async fn lookup(raw: &str) -> Option<idp_core::company::Company> {
    let siret = Siret::parse(raw).expect("a valid SIRET");
    BundledRegistry.lookup(&siret).await.expect("bundled data")
}

#[tokio::test]
async fn documented_establishments_are_found() {
    let google = lookup("443 061 841 00047").await.expect("Google France");
    assert_eq!(google.siret, "44306184100047");
    assert_eq!(google.name, "GOOGLE FRANCE");
    assert_eq!(
        google.address.as_deref(),
        Some("8 RUE DE LONDRES, 75009 PARIS")
    );
    assert!(google.active);

    for (siret, name) in [
        ("54205118000066", "TOTALENERGIES SE"),
        ("66204244900014", "BNP PARIBAS"),
        ("55212022200013", "SOCIETE GENERALE"),
        ("42476141900045", "OVH"),
        ("55204944776279", "SOCIETE NATIONALE SNCF"),
        ("77567227221138", "CROIX ROUGE FRANCAISE"),
        ("35600000000048", "LA POSTE"),
    ] {
        let company = lookup(siret).await.unwrap_or_else(|| panic!("{siret}"));
        assert_eq!(company.name, name);
        assert!(company.active, "{siret}");
        assert!(company.address.is_some(), "{siret}");
    }
}

#[tokio::test]
async fn a_la_poste_establishment_is_found() {
    // Valid by La Poste's digit-sum rule, not by the Luhn key.
    let office = lookup("35600000053166").await.expect("La Poste, Tergnier");
    assert_eq!(office.name, "LA POSTE");
    assert_eq!(
        office.address.as_deref(),
        Some("1 PLACE CARNEGIE, 02700 TERGNIER")
    );
    assert!(office.active);
}

#[tokio::test]
async fn the_closed_establishment_is_inactive() {
    let closed = lookup("30057319300061")
        .await
        .expect("closed establishment");
    assert_eq!(closed.name, "CCF");
    assert!(!closed.active);
}

#[tokio::test]
async fn unknown_numbers_are_not_found() {
    // Valid numbers (Luhn / La Poste rule) that the file does not list.
    for siret in ["44306184100039", "35600000053210", "73282932000074"] {
        assert_eq!(lookup(siret).await, None, "{siret}");
    }
}

#[test]
fn the_data_file_lists_ten_establishments_with_one_closed() {
    let all = BundledRegistry.companies().expect("bundled data");
    assert_eq!(all.len(), 10);
    assert_eq!(all.iter().filter(|c| !c.active).count(), 1);
    assert!(all.windows(2).all(|w| w[0].siret < w[1].siret));
    for company in &all {
        assert_eq!(
            Siret::parse(&company.siret).expect("valid").as_str(),
            company.siret
        );
        assert!(!company.name.trim().is_empty());
    }
}
