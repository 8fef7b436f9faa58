//! Bearer-token authentication of gRPC calls, as a tower layer (docs/security.md "Tokens").
//!
//! Each [`AuthRule`] names a method path prefix and the [`Action`] its calls perform. For a
//! call a rule names, the layer reads `authorization: Bearer <token>`, has the
//! [`Authenticator`] turn it into an [`Identity`], checks the identity's scope against the
//! action and puts the identity into the request's extensions, where the service checks
//! bucket and key limits (it alone knows them). Calls no rule names pass untouched (component
//! calls are the [`PolicyLayer`](crate::PolicyLayer)'s business).
//!
//! A call another metadata node forwarded (header `x-dogfs-forwarded`) was authenticated by
//! that node; it passes without a token when the connection's certificate has the meta
//! role, and is refused otherwise (the header alone proves nothing).

use std::sync::Arc;

use tonic::Status;

use crate::gate::{Gate, GateLayer};
use crate::identity::Role;
use crate::token::{self, Action, Identity};

/// Calls under `prefix` perform `action`.
#[derive(Debug, Clone, Copy)]
pub struct AuthRule {
    pub prefix: &'static str,
    pub action: Action,
}

/// Why a token was not accepted (UNAUTHENTICATED, except [`AuthError::Lookup`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this cluster requires a bearer token: pass one with --token or DOGFS_TOKEN (header \
         `authorization: Bearer <token>`)"
    )]
    Missing,
    #[error("the authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error(
        "the token is neither this cluster's bootstrap token nor one it issued (those look like \
         dogfs_<16 hex id>_<64 hex secret>, as `dogfs admin token create` prints them)"
    )]
    NotIssued,
    #[error("token {id} is not known to this cluster")]
    Unknown { id: String },
    #[error("token {id} ({name}) was revoked")]
    Revoked { id: String, name: String },
    #[error("token {id} ({name}) expired at unix time {at}")]
    Expired { id: String, name: String, at: u64 },
    #[error("token {id}: its record could not be read: {reason}")]
    Lookup { id: String, reason: String },
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        match e {
            AuthError::Lookup { .. } => Status::unavailable(e.to_string()),
            other => Status::unauthenticated(other.to_string()),
        }
    }
}

/// Turns a presented token into an identity.
pub trait Authenticator: Send + Sync + std::fmt::Debug + 'static {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

/// The identity a call was made with: `None` when the server does not check tokens or the
/// call was forwarded by another metadata node (which checked it).
pub fn identity_of(ext: &http::Extensions) -> Option<&Identity> {
    ext.get::<Identity>()
}

/// What the layer decided for one request.
fn decide(
    auth: &dyn Authenticator,
    rules: &[AuthRule],
    forwarded_header: &str,
    path: &str,
    headers: &http::HeaderMap,
    ext: &http::Extensions,
) -> Result<Option<Identity>, Status> {
    let Some(rule) = rules.iter().find(|r| path.starts_with(r.prefix)) else {
        return Ok(None);
    };
    if headers.contains_key(forwarded_header) {
        if crate::policy::caller_roles(ext).contains(&Role::Meta) {
            return Ok(None);
        }
        return Err(Status::unauthenticated(format!(
            "{path}: a call marked as forwarded ({forwarded_header}) must come from a metadata \
             node's certificate"
        )));
    }
    let header = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = header.to_str().map_err(|_| AuthError::NotBearer)?;
    let presented = token::from_bearer(value).ok_or(AuthError::NotBearer)?;
    let identity = auth.authenticate(presented)?;
    identity
        .check_action(rule.action)
        .map_err(|d| Status::permission_denied(format!("{path}: {d}")))?;
    Ok(Some(identity))
}

/// Token authentication as a [`Gate`]: the authenticator and the method rules.
#[derive(Debug, Clone)]
pub struct AuthGate(Arc<AuthConfig>);

#[derive(Debug)]
struct AuthConfig {
    auth: Arc<dyn Authenticator>,
    rules: Vec<AuthRule>,
    forwarded_header: &'static str,
}

impl Gate for AuthGate {
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        ext: &mut http::Extensions,
    ) -> Result<(), Status> {
        let c = &self.0;
        if let Some(identity) = decide(
            c.auth.as_ref(),
            &c.rules,
            c.forwarded_header,
            path,
            headers,
            ext,
        )? {
            ext.insert(identity);
        }
        Ok(())
    }
}

/// Applies token authentication; with no authenticator (a server without tokens) it lets
/// everything through.
pub type AuthLayer = GateLayer<AuthGate>;

impl GateLayer<AuthGate> {
    pub fn new(
        auth: Option<Arc<dyn Authenticator>>,
        rules: Vec<AuthRule>,
        forwarded_header: &'static str,
    ) -> Self {
        GateLayer::with(auth.map(|auth| {
            AuthGate(Arc::new(AuthConfig {
                auth,
                rules,
                forwarded_header,
            }))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Limits, Scope};

    #[derive(Debug)]
    struct One(String, Scope);
    impl Authenticator for One {
        fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
            if token == self.0 {
                Ok(Identity {
                    token_id: "one".into(),
                    name: "test".into(),
                    scope: self.1,
                    limits: Limits::default(),
                })
            } else {
                Err(AuthError::Unknown { id: "?".into() })
            }
        }
    }

    const RULES: &[AuthRule] = &[
        AuthRule {
            prefix: "/svc/Get",
            action: Action::Read,
        },
        AuthRule {
            prefix: "/svc/Put",
            action: Action::Write,
        },
    ];

    fn req(path: &str, auth: Option<&str>, forwarded: bool) -> http::Request<()> {
        let mut b = http::Request::builder().uri(path);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        if forwarded {
            b = b.header("x-fwd", "1");
        }
        b.body(()).unwrap()
    }

    #[test]
    fn tokens_decide_by_rule_and_scope() {
        let a = One("secret-token-0123".into(), Scope::Read);
        let d = |r: &http::Request<()>| {
            decide(
                &a,
                RULES,
                "x-fwd",
                r.uri().path(),
                r.headers(),
                r.extensions(),
            )
        };
        let ok = d(&req("/svc/Get", Some("Bearer secret-token-0123"), false)).unwrap();
        assert_eq!(ok.unwrap().scope, Scope::Read);
        let e = d(&req("/svc/Put", Some("Bearer secret-token-0123"), false)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("needs write"), "{}", e.message());
        for bad in [None, Some("Bearer nope"), Some("Basic x"), Some("")] {
            let e = d(&req("/svc/Get", bad, false)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        // Not named by a rule: untouched.
        assert_eq!(d(&req("/other/X", None, false)).unwrap(), None);
        // A forwarded mark without a metadata node's certificate is refused.
        let e = d(&req("/svc/Get", None, true)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }
}
