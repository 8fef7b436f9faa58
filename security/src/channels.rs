//! A cache of lazily connected gRPC channels, one per address, over TLS when configured and
//! made anew once the TLS files change (new connections present the renewed certificate;
//! calls already running keep their connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::transport::{Channel, Endpoint};

use crate::client::{self, ClientTls, ClientTlsError};

type Configure = dyn Fn(Endpoint) -> Endpoint + Send + Sync;

/// Channels by address. `configure` sets the per-use transport options (timeouts, windows).
#[derive(Clone)]
pub struct Channels {
    map: Arc<Mutex<HashMap<String, (Channel, u64)>>>,
    tls: Option<Arc<ClientTls>>,
    configure: Arc<Configure>,
    /// The cache is cleared when it would grow past this (addresses come from the cluster
    /// map, which can churn over a long life).
    max: usize,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("tls", &self.tls)
            .field("len", &self.len())
            .finish()
    }
}

impl Channels {
    pub fn new(
        tls: Option<Arc<ClientTls>>,
        configure: impl Fn(Endpoint) -> Endpoint + Send + Sync + 'static,
    ) -> Self {
        Channels {
            map: Arc::default(),
            tls,
            configure: Arc::new(configure),
            max: 4096,
        }
    }

    pub fn tls(&self) -> Option<&Arc<ClientTls>> {
        self.tls.as_ref()
    }

    /// The channel to `addr` (`host:port` or a URI), made on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, ClientTlsError> {
        let generation = self.tls.as_ref().map_or(0, |t| t.generation());
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((ch, made)) = map.get(addr)
            && *made == generation
        {
            return Ok(ch.clone());
        }
        let uri = client::uri(addr, self.tls.as_deref())?;
        let (endpoint, generation) = client::endpoint(&uri, self.tls.as_deref())?;
        let ch = (self.configure)(endpoint).connect_lazy();
        if map.len() >= self.max {
            map.clear();
        }
        map.insert(addr.to_string(), (ch.clone(), generation));
        Ok(ch)
    }

    /// Drops the channel to `addr`; the next [`Channels::get`] makes a new one.
    pub fn forget(&self, addr: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(addr);
    }

    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
