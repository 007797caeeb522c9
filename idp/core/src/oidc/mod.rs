//! OAuth 2.0 / OpenID Connect: request checks, the provider's services
//! (authorize, login, token, userinfo, introspection, revocation, logout) and
//! token minting. Web-free: the server crate parses HTTP into these types and
//! renders what comes back.

pub(crate) mod announced;
pub mod authorization;
pub mod authorize;
pub mod codes;
pub mod error;
pub mod logout;
pub mod provider;
pub mod token;
pub(crate) mod verified_tokens;

pub use error::{ErrorCode, OAuthError};
pub use provider::{Provider, ProviderPorts, ProviderSettings};
