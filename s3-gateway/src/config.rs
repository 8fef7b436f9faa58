//! What a gateway serves with: region, credentials, anonymous mode.

use crate::auth::Credentials;

/// The gateway's settings (the binary builds them from its flags; `dogfs dev` from its own).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The region the gateway answers for (`GetBucketLocation`, SigV4 credential scope is
    /// the client's: any region signs).
    pub region: String,
    /// Access keys and what they may do; `None` with `anonymous`: no authentication at all.
    pub credentials: Option<Credentials>,
    /// Unsigned requests are allowed, with full rights.
    pub anonymous: bool,
    /// Base domains for virtual-hosted-style requests (`bucket.DOMAIN`); empty: path-style
    /// only (requests to an IP address are always path-style).
    pub domains: Vec<String>,
}

impl GatewayConfig {
    pub const DEFAULT_REGION: &'static str = "us-east-1";
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            region: Self::DEFAULT_REGION.to_owned(),
            credentials: None,
            anonymous: false,
            domains: Vec::new(),
        }
    }
}
