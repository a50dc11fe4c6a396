//! Organizations and their tokens (`org/`, `tok/`), with the read-through
//! token cache: every command authenticates, so a hit spares two reads and a
//! decode. A read fills the cache only if no write invalidated it since the
//! read began; every write of an organization or a token empties it before
//! the write lock is released.

use super::codec::{encode, key};
use super::{OrgCache, Store, StoreError, WriteTx};
use crate::model::{ApiKey, Org};
use std::sync::Arc;

impl Store {
    /// Marks organization `org` as holding a token nobody has seen yet (a
    /// first start that had not returned it), durably.
    pub async fn mark_untold(&self, org: &str) -> Result<(), StoreError> {
        self.inner.db.insert(b"meta/untold", org.as_bytes())?;
        self.flush().await
    }

    /// The organization whose token was never shown, if any.
    pub fn untold(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .db
            .get(b"meta/untold")?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The token was shown: forget the mark.
    pub async fn clear_untold(&self) -> Result<(), StoreError> {
        self.inner.db.remove(b"meta/untold")?;
        self.flush().await
    }

    /// Whether no organization exists yet (first start).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .db
            .scan_prefix(b"org/")
            .next()
            .transpose()?
            .is_none())
    }

    /// The caller's view of the organization whose token or API key hashes
    /// to `token_sha256` (hex), if any: the organization itself for its
    /// token (`key` `default`), or for a named key with its name, and for a
    /// test key its sandbox (`id` [`crate::model::sandbox_id`], `sandbox`).
    /// Shared with the cache, so a hit copies nothing.
    pub fn org_by_token(&self, token_sha256: &str) -> Result<Option<Arc<Org>>, StoreError> {
        let generation = {
            let cache = self.org_cache_read();
            if let Some(org) = cache.map.get(token_sha256) {
                return Ok(Some(org.clone()));
            }
            cache.generation
        };
        let org: Option<Arc<Org>> = match self.inner.db.get(key(&["tok", token_sha256]))? {
            Some(id) => self
                .get::<Org>(&key(&["org", &String::from_utf8_lossy(&id)]))?
                .map(Arc::new),
            None => match self.get::<(String, ApiKey)>(&key(&["kix", token_sha256]))? {
                Some((org_id, k)) => self.get::<Org>(&key(&["org", &org_id]))?.map(|mut o| {
                    if k.mode == "test" {
                        o.id = crate::model::sandbox_id(&o.id);
                        o.sandbox = true;
                    }
                    o.key = k.name;
                    Arc::new(o)
                }),
                None => None,
            },
        };
        let org = org.map(|o| {
            let mut o = Arc::unwrap_or_clone(o);
            o.last_used = self.key_use(crate::model::live_id(&o.id), &o.key);
            Arc::new(o)
        });
        // Another node may change what a token resolves to: with a shared
        // backend nothing is cached.
        if let Some(org) = org.as_ref().filter(|_| !self.inner.db.shared()) {
            let mut cache = self.org_cache_write();
            if cache.generation == generation {
                cache.map.insert(token_sha256.to_string(), org.clone());
            }
        }
        Ok(org)
    }

    /// The caller's view of raw `token` if it resolved before and nothing
    /// that changes an organization or a token was written since (the
    /// same invalidation as [`Store::org_by_token`]'s cache): no hashing.
    pub fn cached_org(&self, token: &str) -> Option<Arc<Org>> {
        self.org_cache_read().raw.get(token).cloned()
    }

    /// [`Store::org_by_token`] for raw `token`, whose SHA-256 (hex) is
    /// `token_sha256`; a token that resolves is remembered for
    /// [`Store::cached_org`].
    pub fn org_by_raw_token(
        &self,
        token: &str,
        token_sha256: &str,
    ) -> Result<Option<Arc<Org>>, StoreError> {
        let generation = self.org_cache_read().generation;
        let org = self.org_by_token(token_sha256)?;
        if let Some(org) = org.as_ref().filter(|_| !self.inner.db.shared()) {
            let mut cache = self.org_cache_write();
            if cache.generation == generation {
                cache.raw.insert(token.into(), org.clone());
            }
        }
        Ok(org)
    }

    fn org_cache_read(&self) -> std::sync::RwLockReadGuard<'_, OrgCache> {
        let lock = &self.inner.orgs_by_token;
        lock.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn org_cache_write(&self) -> std::sync::RwLockWriteGuard<'_, OrgCache> {
        let lock = &self.inner.orgs_by_token;
        lock.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The last-use cell of key `key` of `org` (Unix ms, 0 = never), made
    /// on first use from the last use recorded by [`Store::note_key_use`].
    pub fn key_use(&self, org: &str, key_name: &str) -> Arc<std::sync::atomic::AtomicI64> {
        let mut map = self.inner.key_use.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(format!("{org}/{key_name}"))
            .or_insert_with(|| {
                let stored = self
                    .get_u64(&key(&["kus", org, key_name]))
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                Arc::new(std::sync::atomic::AtomicI64::new(stored as i64))
            })
            .clone()
    }

    /// Records that key `key` of `org` was used at `at_ms`, so `GetApiKeys`
    /// shows it after a restart. Bookkeeping: written without waiting for
    /// a flush (a crash loses at most the last minute's use).
    pub fn note_key_use(&self, org: &str, key_name: &str, at_ms: i64) -> Result<(), StoreError> {
        self.inner.db.insert(
            key(&["kus", org, key_name]),
            &(at_ms.max(0) as u64).to_be_bytes(),
        )?;
        Ok(())
    }

    /// The named API keys of `org`, by name.
    pub fn api_keys(&self, org: &str) -> Result<Vec<ApiKey>, StoreError> {
        self.scan(&format!("key/{org}/"), None, usize::MAX, |_: &ApiKey| true)
    }

    /// The organization `id`, if it exists.
    pub fn org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        self.get(&key(&["org", id]))
    }

    /// Creates organization `org` whose token hashes to `token_sha256` (hex).
    pub async fn create_org(&self, org: &Org) -> Result<(), StoreError> {
        self.write(&org.id, |tx| {
            tx.put_org(org);
            tx.batch
                .insert(key(&["tok", &org.token_sha256]), org.id.as_bytes());
            tx.batch.insert(
                key(&["epo", &org.id]),
                super::events::new_epoch().as_bytes(),
            );
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Replaces the token of `org_id` by one hashing to `new_sha256`; the old
    /// token stops resolving in the same atomic write. Returns false when the
    /// organization does not exist.
    pub async fn replace_token(&self, org_id: &str, new_sha256: &str) -> Result<bool, StoreError> {
        self.write(org_id, |tx| {
            let Some(mut org) = tx.store.org(org_id)? else {
                return Ok(false);
            };
            tx.batch.remove(key(&["tok", &org.token_sha256]));
            org.token_sha256 = new_sha256.to_string();
            tx.put_org(&org);
            tx.batch
                .insert(key(&["tok", new_sha256]), org_id.as_bytes());
            Ok(true)
        })
        .await
    }
}

impl WriteTx<'_> {
    /// Stages `org` (its own record: `disabled`, name).
    pub fn put_org(&mut self, org: &Org) {
        self.batch.insert(key(&["org", &org.id]), encode(org));
        self.orgs_changed = true;
    }
}

impl WriteTx<'_> {
    /// Stages `k` as a named key of the (live) organization; it resolves
    /// at once (the token cache is emptied).
    pub fn put_api_key(&mut self, k: &ApiKey) {
        let org = crate::model::live_id(self.org);
        self.batch.insert(key(&["key", org, &k.name]), encode(k));
        self.batch
            .insert(key(&["kix", &k.sha256]), encode(&(org, k)));
        self.orgs_changed = true;
    }

    /// Stages the removal of key `k`: it stops resolving at once.
    pub fn delete_api_key(&mut self, k: &ApiKey) {
        let org = crate::model::live_id(self.org);
        self.batch.remove(key(&["key", org, &k.name]));
        self.batch.remove(key(&["kix", &k.sha256]));
        self.batch.remove(key(&["kus", org, &k.name]));
        self.orgs_changed = true;
    }
}
