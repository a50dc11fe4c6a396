//! Idempotent sends (extension `idempotencyKey` / `Idempotency-Key`): the
//! first reply under a key is stored with the message in the same durable
//! write and replayed for 24 hours, so a retry after a crash or a timeout
//! never sends twice.
//!
//! Errors (HTTP 409, code 1017): the key is in use by a request in progress
//! (in this process, or with a shared store on any node: the key is then
//! claimed in the store for [`CLAIM_TTL`]), or was used with a different
//! request.

use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::store::Store;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// How long a send's reply is kept under its idempotency key (ms).
pub const TTL_MS: i64 = 24 * 3600 * 1000;

/// How long a request in progress holds its key against other nodes when
/// its node dies before giving it up (a request itself ends well before:
/// `provider_timeout` times the provider's retries).
pub const CLAIM_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// An idempotency key of a send: the key and the hash of the request.
#[derive(Debug, Clone)]
pub struct Key {
    /// The client's key: 1–255 visible ASCII characters.
    pub key: String,
    /// Hex SHA-256 of the request's fields (token and key excluded).
    pub request_sha256: String,
}

/// The keys in progress in this process (cheap `Clone`).
#[derive(Clone, Default)]
pub struct Idempotency {
    in_flight: Arc<Mutex<HashSet<(String, String)>>>,
}

/// While alive, marks an idempotency key as in progress in this process
/// (and, with a shared store, on every node).
pub struct InFlight {
    set: Idempotency,
    entry: (String, String),
    /// The store claim to give up: `(store, name, holder)`.
    claim: Option<(Store, String, String)>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.entry);
        if let Some((store, name, holder)) = self.claim.take() {
            if let Err(e) = store.release(&name, &holder) {
                // The claim then lapses after CLAIM_TTL.
                tracing::warn!(error = %e, "giving up an idempotency claim failed");
            }
        }
    }
}

/// What a send under an idempotency key does.
pub enum Begin {
    /// Send the stored reply again.
    Replay(Reply),
    /// Proceed; the guard (when there is a key) releases it when dropped.
    Proceed(Option<InFlight>),
}

impl Idempotency {
    /// Starts command `cmd` of `org` under `key` (if any): the stored reply
    /// to replay, or the guard to proceed with. Errors: 1017 with HTTP 409.
    pub fn begin(
        &self,
        store: &Store,
        org: &Org,
        key: Option<&Key>,
        cmd: &str,
    ) -> Result<Begin, ApiError> {
        let Some(k) = key else {
            return Ok(Begin::Proceed(None));
        };
        let conflict = |m: &str| {
            let mut e = ApiError::new(ErrorCode::InvalidJson, m);
            e.status = Some(409);
            e
        };
        let entry = (org.id.clone(), k.key.clone());
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.clone())
        {
            return Err(conflict(
                "a request with this idempotency key is in progress; retry later",
            ));
        }
        let mut guard = InFlight {
            set: self.clone(),
            entry,
            claim: None,
        };
        if store.shared() {
            let name = format!("idempotency/{}/{}", org.id, k.key);
            let holder = uuid::Uuid::now_v7().simple().to_string();
            if !store.claim(&name, &holder, CLAIM_TTL)? {
                return Err(conflict(
                    "a request with this idempotency key is in progress; retry later",
                ));
            }
            guard.claim = Some((store.clone(), name, holder));
        }
        match store.idempotent(&org.id, &k.key)? {
            Some(rec) if rec.created_ms + TTL_MS > crate::time::now_ms() => {
                if rec.request_sha256 != k.request_sha256 {
                    return Err(conflict(
                        "this idempotency key was used with a different request",
                    ));
                }
                Ok(Begin::Replay(Reply::replay(cmd, &rec.reply)))
            }
            _ => Ok(Begin::Proceed(Some(guard))),
        }
    }
}
