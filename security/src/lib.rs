//! DogFS transport security (DESIGN §9).
//!
//! - [`server`]: TLS for a gRPC listener, the certificate, key and CA re-read when their files
//!   change, so a renewed certificate is served to the next connection without a restart.
//! - [`client`]: the matching client side (a CA bundle, and for components their own
//!   certificate), also reloaded.
//! - [`identity`]: the component roles a certificate carries (`spiffe://dogfs/<role>` URI SANs).
//! - [`policy`]: which roles may call which gRPC methods, as a [`gate`] on the server.
//! - [`token`]: bearer tokens, scopes and limits; [`auth`] checks them on a server.
//! - [`grant`]: shard grants the metadata service signs and chunk servers verify.
//! - [`issue`]: a CA and certificates issued in-process (test clusters, `dogfs dev --tls`).
//!
//! Plain text stays possible, but only when a caller asks for it (no TLS settings given).

pub mod args;
pub mod auth;
pub mod channels;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod grant;
pub mod identity;
pub mod issue;
pub mod pem;
pub mod policy;
mod reload;
pub mod server;
pub mod token;

pub use args::{ComponentTls, TlsArgs};
pub use auth::{AuthError, AuthLayer, AuthRule, Authenticator};
pub use channels::Channels;
pub use client::{ClientTls, ClientTlsPaths};
pub use gate::{Gate, GateLayer};
pub use grant::{GrantError, GrantKeyFile, GrantKeys, Op as GrantOp};
pub use identity::Role;
pub use policy::{Policy, PolicyLayer, Rule};
pub use server::{ServerTls, TlsPaths};
pub use token::{Action, Identity, Limits, Scope};
