//! The Sirene adapter against a fake Sirene API: an axum server started by
//! each test on a loopback port, answering by SIRET and recording the
//! headers it received.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use idp_company_registry::{SireneConfigError, SireneRegistry};
use idp_core::company::{Company, CompanyRegistry, RegistryError, Siret};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const API_KEY: &str = "test-key-5f1c9a0b7e";
/// Answered with a company.
const FOUND: &str = "44306184100047";
/// Answered with a sole trader (no company name).
const SOLE_TRADER: &str = "73282932000074";
/// Answered with a closed establishment.
const CLOSED: &str = "30057319300061";
const NOT_FOUND: &str = "54205118000066";
const UNAVAILABLE: &str = "66204244900014";
const RATE_LIMITED: &str = "55212022200013";
const MALFORMED: &str = "42476141900045";
const NO_ETABLISSEMENT: &str = "77567227221138";
/// Never answered.
const HANGS: &str = "55204944776279";

/// The headers of every request, in order.
type Log = Arc<Mutex<Vec<HeaderMap>>>;

fn json(body: serde_json::Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn etablissement(siret: &str, unite_legale: serde_json::Value, etat: &str) -> serde_json::Value {
    serde_json::json!({
        "header": {"statut": 200, "message": "ok"},
        "etablissement": {
            "siren": &siret[..9],
            "nic": &siret[9..],
            "siret": siret,
            "uniteLegale": unite_legale,
            "adresseEtablissement": {
                "complementAdresseEtablissement": null,
                "numeroVoieEtablissement": "8",
                "indiceRepetitionEtablissement": null,
                "typeVoieEtablissement": "RUE",
                "libelleVoieEtablissement": "DE LONDRES",
                "codePostalEtablissement": "75009",
                "libelleCommuneEtablissement": "PARIS 9"
            },
            "periodesEtablissement": [
                {"dateFin": null, "dateDebut": "2019-01-01", "etatAdministratifEtablissement": etat},
                {"dateFin": "2018-12-31", "dateDebut": "2002-01-01", "etatAdministratifEtablissement": "A"}
            ]
        }
    })
}

async fn sirene(State(log): State<Log>, Path(siret): Path<String>, headers: HeaderMap) -> Response {
    log.lock().expect("lock").push(headers);
    match siret.as_str() {
        FOUND => json(etablissement(
            FOUND,
            serde_json::json!({"denominationUniteLegale": "GOOGLE FRANCE", "nomUniteLegale": null}),
            "A",
        )),
        SOLE_TRADER => json(etablissement(
            SOLE_TRADER,
            serde_json::json!({
                "denominationUniteLegale": null,
                "prenom1UniteLegale": "JEANNE",
                "prenomUsuelUniteLegale": "JEANNE",
                "nomUniteLegale": "MARTIN",
                "nomUsageUniteLegale": "DURAND"
            }),
            "A",
        )),
        CLOSED => json(etablissement(
            CLOSED,
            serde_json::json!({"denominationUniteLegale": "CCF"}),
            "F",
        )),
        NOT_FOUND => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"header": {"statut": 404, "message": "Aucun élément trouvé pour le siret 54205118000066"}})),
        )
            .into_response(),
        UNAVAILABLE => (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response(),
        RATE_LIMITED => (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response(),
        MALFORMED => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"etablissement\": {\"uniteLegale\": ",
        )
            .into_response(),
        NO_ETABLISSEMENT => json(serde_json::json!({"header": {"statut": 200}})),
        HANGS => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Starts the fake API; returns its base URL (with the real API's path) and
/// the request log.
async fn start() -> (String, Log) {
    let log = Log::default();
    let app = Router::new()
        .route("/api-sirene/3.11/siret/{siret}", get(sirene))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}/api-sirene/3.11"), log)
}

fn registry(base_url: &str, timeout: Duration) -> SireneRegistry {
    SireneRegistry::new(base_url, API_KEY, timeout).expect("valid settings")
}

async fn lookup(registry: &SireneRegistry, raw: &str) -> Result<Option<Company>, RegistryError> {
    registry
        .lookup(&Siret::parse(raw).expect("valid SIRET"))
        .await
}

/// The message of an `Unavailable` error, checked not to leak the key.
fn unavailable(result: Result<Option<Company>, RegistryError>) -> String {
    let RegistryError::Unavailable(message) = result.expect_err("an error");
    assert!(!message.contains(API_KEY), "{message}");
    message
}

#[tokio::test]
async fn a_company_is_found_and_the_key_is_sent() {
    let (base, log) = start().await;
    let company = lookup(&registry(&base, Duration::from_secs(5)), FOUND)
        .await
        .expect("answered")
        .expect("found");
    assert_eq!(
        company,
        Company {
            siret: FOUND.into(),
            name: "GOOGLE FRANCE".into(),
            address: Some("8 RUE DE LONDRES, 75009 PARIS 9".into()),
            active: true,
        }
    );
    let log = log.lock().expect("lock");
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0]
            .get("X-INSEE-Api-Key-Integration")
            .and_then(|v| v.to_str().ok()),
        Some(API_KEY)
    );
    assert_eq!(
        log[0].get(header::ACCEPT).and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert!(log[0].get(header::AUTHORIZATION).is_none());
}

#[tokio::test]
async fn a_trailing_slash_in_the_base_url_is_ignored() {
    let (base, log) = start().await;
    let company = lookup(
        &registry(&format!("{base}/"), Duration::from_secs(5)),
        FOUND,
    )
    .await
    .expect("answered");
    assert!(company.is_some());
    assert_eq!(log.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_sole_trader_is_named_after_the_person() {
    let (base, _) = start().await;
    let company = lookup(&registry(&base, Duration::from_secs(5)), SOLE_TRADER)
        .await
        .expect("answered")
        .expect("found");
    assert_eq!(company.name, "JEANNE DURAND");
}

#[tokio::test]
async fn a_closed_establishment_is_inactive() {
    let (base, _) = start().await;
    let company = lookup(&registry(&base, Duration::from_secs(5)), CLOSED)
        .await
        .expect("answered")
        .expect("found");
    assert_eq!(company.name, "CCF");
    assert!(!company.active);
}

#[tokio::test]
async fn not_found_is_none() {
    let (base, _) = start().await;
    assert_eq!(
        lookup(&registry(&base, Duration::from_secs(5)), NOT_FOUND)
            .await
            .expect("answered"),
        None
    );
}

#[tokio::test]
async fn a_server_error_is_unavailable() {
    let (base, _) = start().await;
    let message = unavailable(lookup(&registry(&base, Duration::from_secs(5)), UNAVAILABLE).await);
    assert!(message.contains("503"), "{message}");
}

#[tokio::test]
async fn rate_limiting_is_unavailable() {
    let (base, _) = start().await;
    let message = unavailable(lookup(&registry(&base, Duration::from_secs(5)), RATE_LIMITED).await);
    assert!(message.contains("429"), "{message}");
}

#[tokio::test]
async fn malformed_json_is_unavailable() {
    let (base, _) = start().await;
    let message = unavailable(lookup(&registry(&base, Duration::from_secs(5)), MALFORMED).await);
    assert!(message.contains("not understood"), "{message}");
    let message =
        unavailable(lookup(&registry(&base, Duration::from_secs(5)), NO_ETABLISSEMENT).await);
    assert!(message.contains("not understood"), "{message}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (base, log) = start().await;
    let registry = registry(&base, Duration::from_millis(300));
    let lookup = tokio::time::timeout(Duration::from_secs(10), lookup(&registry, HANGS))
        .await
        .expect("the adapter's own timeout fires first");
    let message = unavailable(lookup);
    assert!(
        message.contains("did not answer within 300 ms"),
        "{message}"
    );
    assert_eq!(log.lock().expect("lock").len(), 1, "the request arrived");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Bind a port, then free it: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let registry = registry(&format!("http://{addr}"), Duration::from_secs(5));
    let message = unavailable(lookup(&registry, FOUND).await);
    assert!(message.contains("could not be reached"), "{message}");
}

#[test]
fn bad_settings_are_refused() {
    let timeout = Duration::from_secs(5);
    for url in [
        "",
        "api.insee.fr",
        "ftp://api.insee.fr",
        "https://api.insee.fr/x?y=1",
    ] {
        assert!(
            matches!(
                SireneRegistry::new(url, API_KEY, timeout),
                Err(SireneConfigError::BaseUrl(_))
            ),
            "{url:?}"
        );
    }
    assert!(matches!(
        SireneRegistry::new("https://api.insee.fr/api-sirene/3.11", "  ", timeout),
        Err(SireneConfigError::EmptyApiKey)
    ));
    assert!(matches!(
        SireneRegistry::new("https://api.insee.fr/api-sirene/3.11", "a\nb", timeout),
        Err(SireneConfigError::ApiKeyNotAscii)
    ));
    assert!(matches!(
        SireneRegistry::new(
            "https://api.insee.fr/api-sirene/3.11",
            API_KEY,
            Duration::ZERO
        ),
        Err(SireneConfigError::ZeroTimeout)
    ));
}

#[test]
fn debug_output_hides_the_key() {
    let registry = registry(
        "https://api.insee.fr/api-sirene/3.11",
        Duration::from_secs(5),
    );
    let shown = format!("{registry:?}");
    assert!(!shown.contains(API_KEY), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(shown.contains("api.insee.fr"), "{shown}");
}
