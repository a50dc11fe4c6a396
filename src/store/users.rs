//! Users (`usr/`, framed records), their custom data (`dat/`) and tag
//! definitions (`tag/`).

use super::codec::{decode_user, encode, encode_user, key, split_user};
use super::{Store, StoreError, WriteTx};
use crate::model::{Tag, User, UserRecord};
use bytes::Bytes;
use bytestring::ByteString;

/// A user record as the cache holds it: its bytes, and the user's JSON
/// text within them, checked as UTF-8 once when cached (a reply passes it
/// on as text, and text sent on a socket must be UTF-8).
#[derive(Clone)]
pub(super) struct Cached {
    record: Bytes,
    json: Option<ByteString>,
}

impl Cached {
    fn new(record: Bytes) -> Cached {
        let json = split_user(&record)
            .and_then(|(user, _)| ByteString::try_from(record.slice_ref(user)).ok());
        Cached { record, json }
    }
}

impl Store {
    /// How many tag definitions `org` has.
    pub fn tag_count(&self, org: &str) -> Result<usize, StoreError> {
        Ok(self
            .inner
            .db
            .scan_prefix(format!("tag/{org}/").as_bytes())
            .keys()
            .count())
    }

    /// The stored record of user `uid` of `org`, through the cache (held
    /// as `Bytes`, so that a reply can take a slice of it without a copy).
    fn user_value(&self, org: &str, uid: &str) -> Result<Option<Cached>, StoreError> {
        // Built on the stack: a hit allocates nothing (and, sized once,
        // the key's parts are copied without a capacity check each).
        let parts = [b"usr/".as_slice(), org.as_bytes(), b"/", uid.as_bytes()];
        let mut k =
            smallvec::SmallVec::<[u8; 96]>::from_elem(0, parts.iter().map(|p| p.len()).sum());
        let mut at = 0;
        for part in parts {
            k[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let generation = {
            let cache = self.inner.users.read().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = cache.map.get(k.as_slice()) {
                return Ok(Some(v.clone()));
            }
            cache.generation
        };
        let v = self
            .inner
            .db
            .get(&k)?
            .map(|v| Cached::new(Bytes::copy_from_slice(&v)));
        // Another node may write the user: with a shared backend nothing
        // is cached.
        if let Some(v) = v.as_ref().filter(|_| !self.inner.db.shared()) {
            self.inner
                .users
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .fill(generation, k.to_vec(), v.clone());
        }
        Ok(v)
    }

    /// Applies a committed write's user changes to the cache (under the
    /// write lock, right after the batch).
    pub(super) fn users_changed(&self, changes: Vec<(Vec<u8>, Option<sled::IVec>)>) {
        let mut cache = self.inner.users.write().unwrap_or_else(|p| p.into_inner());
        cache.generation += 1;
        for (k, v) in changes {
            match v {
                Some(v) if cache.map.contains_key(&k) => {
                    cache.map.insert(k, Cached::new(Bytes::copy_from_slice(&v)));
                }
                Some(_) => {}
                None => {
                    cache.map.remove(&k);
                }
            }
        }
    }

    /// Empties the user cache (after records were rewritten outside
    /// [`Store::write`]).
    pub(super) fn forget_users(&self) {
        self.inner
            .users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .forget();
    }

    /// The user `uid` of `org`, with its tags.
    pub fn user(&self, org: &str, uid: &str) -> Result<Option<UserRecord>, StoreError> {
        self.user_value(org, uid)?
            .map(|v| decode_user(&v.record))
            .transpose()
    }

    /// The user object of `uid` as stored: the JSON text of its [`User`]
    /// (tags left out), for replies that pass it on unchanged (`GetUser`)
    /// without a decode into a [`User`] and an encode back.
    pub fn user_json(&self, org: &str, uid: &str) -> Result<Option<ByteString>, StoreError> {
        let Some(v) = self.user_value(org, uid)? else {
            return Ok(None);
        };
        if let Some(json) = v.json {
            return Ok(Some(json));
        }
        let rec = decode_user(&v.record)?;
        Ok(Some(ByteString::from(serde_json::to_string(&rec.user)?)))
    }

    /// The custom data of user `uid` (`SetUserData`), if any was set.
    pub fn user_data(&self, org: &str, uid: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.get(&key(&["dat", org, uid]))
    }

    /// The tag whose case-folded name is `tag_key`.
    pub fn tag(&self, org: &str, tag_key: &str) -> Result<Option<Tag>, StoreError> {
        self.get(&key(&["tag", org, tag_key]))
    }

    /// Users of `org` in uid order, restricted to bot `bot_id` when given,
    /// starting after uid `after`, keeping those `keep` accepts, at most `limit`.
    pub fn users(
        &self,
        org: &str,
        bot_id: Option<u64>,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&User) -> bool,
    ) -> Result<Vec<User>, StoreError> {
        let prefix = match bot_id {
            Some(b) => format!("usr/{org}/{b}-"),
            None => format!("usr/{org}/"),
        };
        let after = after.map(|uid| format!("usr/{org}/{uid}"));
        let recs = self.scan_with(
            &prefix,
            after.as_deref(),
            limit,
            decode_user,
            |r: &UserRecord| keep(&r.user),
        )?;
        Ok(recs.into_iter().map(|r| r.user).collect())
    }
}

impl WriteTx<'_> {
    /// Stages `user` (with its tags).
    pub fn put_user(&mut self, rec: &UserRecord) {
        let k = key(&["usr", self.org, &rec.user.uid]);
        let v = sled::IVec::from(encode_user(rec));
        self.batch.insert(k.clone(), v.clone());
        self.user_changes.push((k, Some(v)));
        if self.track_users {
            self.staged_users.insert(rec.user.uid.clone(), rec.clone());
        }
    }

    /// User `uid` as this write left it so far: staged by it, or committed.
    /// Only writes that asked for it ([`WriteTx::track_users`]) keep their
    /// staged users.
    pub fn staged_user(&self, org: &str, uid: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.staged_users.get(uid) {
            Some(rec) => Ok(Some(rec.clone())),
            None => self.store().user(org, uid),
        }
    }

    /// Keeps the users this write stages, for [`WriteTx::staged_user`]
    /// (off by default: most writes stage one user and never read it back).
    pub fn track_users(&mut self) {
        self.track_users = true;
    }

    /// Stages the removal of user `uid` and its custom data.
    pub fn delete_user(&mut self, uid: &str) {
        let k = key(&["usr", self.org, uid]);
        self.batch.remove(k.clone());
        self.user_changes.push((k, None));
        self.batch.remove(key(&["dat", self.org, uid]));
    }

    /// Stages `data` as the custom data of `uid`.
    pub fn put_user_data(&mut self, uid: &str, data: &serde_json::Value) {
        self.batch
            .insert(key(&["dat", self.org, uid]), encode(data));
    }

    /// Stages `tag` under its case-folded name.
    pub fn put_tag(&mut self, tag: &Tag) {
        self.batch.insert(
            key(&["tag", self.org, &tag.name.to_lowercase()]),
            encode(tag),
        );
    }
}
