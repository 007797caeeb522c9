//! Accounts and organizations around login: emailed links to set or reset a
//! password, the forgotten identifier, organization creation and membership,
//! the self-service security settings and enforced MFA.

pub mod creation;
pub mod devices;
pub mod federated;
pub mod forms;
pub mod links;
pub mod orgs;
pub mod recovery;
pub mod security;
pub mod service;
pub mod settings;

pub use forms::{RecoveryError, RecoveryThrottled};
pub use settings::AccountSettings;
