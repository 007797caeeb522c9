//! OAuth 2.0 / OpenID Connect: request checks, the authorization service
//! (authorization requests, completed logins, logout requests) and the token
//! service (token endpoint, userinfo, introspection, revocation, minting).
//! Web-free: the server crate parses HTTP into these types and renders what
//! comes back. The login flow itself is [`crate::flow`]'s.

pub mod access_tokens;
pub mod announced;
pub mod authorization;
pub mod authorize;
pub mod client_auth;
pub mod client_jwt;
pub mod codes;
pub mod device;
pub mod dpop;
pub mod error;
pub mod logout;
pub mod logout_channels;
pub mod pushed;
pub mod resources;
pub mod response;
pub mod subjects;
pub mod token;
pub mod token_endpoint;
pub(crate) mod verified_tokens;

pub use error::{ErrorCode, OAuthError};
