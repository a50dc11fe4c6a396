//! Messages (`msg/`), their provider ids (`pid/`), each user's
//! conversation index (`cnv/`), per-user channel state (`chs/`) and the
//! template cache (`tpl/`).

use super::codec::{encode, key};
use super::{Store, StoreError, WriteTx};
use crate::model::{Message, TemplateCache};

impl Store {
    /// The message `mid` of `org`.
    pub fn message(&self, org: &str, mid: &str) -> Result<Option<Message>, StoreError> {
        self.get(&key(&["msg", org, mid]))
    }

    /// The `mid` of the provider message `provider_id` of `org`.
    pub fn mid_of_provider_id(
        &self,
        org: &str,
        provider_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .db
            .get(key(&["pid", org, provider_id]))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The last `limit` messages of user `uid`, oldest first.
    pub fn conversation(
        &self,
        org: &str,
        uid: &str,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let prefix = format!("cnv/{org}/{uid}/");
        let mut mids = Vec::new();
        for kv in self.inner.db.scan_prefix(prefix.as_bytes()).rev() {
            let (k, _) = kv?;
            if mids.len() >= limit {
                break;
            }
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some((_, mid)) = rest.split_once('/') {
                mids.push(mid.to_string());
            }
        }
        let mut out = Vec::with_capacity(mids.len());
        for mid in mids.iter().rev() {
            if let Some(m) = self.message(org, mid)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The messages of conversation `cid` of user `uid` (which started at
    /// `started_ms`), oldest first.
    pub fn conversation_messages(
        &self,
        org: &str,
        uid: &str,
        cid: &str,
        started_ms: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let prefix = format!("cnv/{org}/{uid}/");
        let start = format!("{prefix}{:020}", started_ms.max(0));
        let mut out = Vec::new();
        for kv in self.inner.db.range(start.into_bytes()..) {
            let (k, _) = kv?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let Some((_, mid)) = rest.split_once('/') else {
                continue;
            };
            if let Some(m) = self.message(org, mid)? {
                if m.cid.as_deref() == Some(cid) {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// The channel state of user `uid` (JSON the channel defines; `null`
    /// when none was kept).
    pub fn channel_state(&self, org: &str, uid: &str) -> Result<serde_json::Value, StoreError> {
        Ok(self
            .get(&key(&["chs", org, uid]))?
            .unwrap_or(serde_json::Value::Null))
    }

    /// The template cache of bot `bot_id` (shared by the organization and
    /// its sandbox, like the bot).
    pub fn templates(&self, org: &str, bot_id: u64) -> Result<Option<TemplateCache>, StoreError> {
        let org = crate::model::live_id(org);
        self.get(format!("tpl/{org}/{bot_id:020}").as_bytes())
    }

    /// Replaces the template cache of bot `bot_id`. A cache, not a record:
    /// it is written without waiting for a flush (a crash only re-syncs).
    pub fn put_templates(
        &self,
        org: &str,
        bot_id: u64,
        cache: &TemplateCache,
    ) -> Result<(), StoreError> {
        let org = crate::model::live_id(org);
        self.inner
            .db
            .insert(format!("tpl/{org}/{bot_id:020}"), encode(cache))?;
        Ok(())
    }
}

impl WriteTx<'_> {
    /// Stages `msg` with its conversation and provider-id indexes; `dt_ms`
    /// orders it in the conversation (unchanged for an update).
    pub fn put_message(&mut self, msg: &Message, dt_ms: i64) {
        let org = self.org;
        self.batch.insert(key(&["msg", org, &msg.mid]), encode(msg));
        self.batch.insert(
            format!("cnv/{org}/{}/{:020}/{}", msg.uid, dt_ms.max(0), msg.mid).into_bytes(),
            &[][..],
        );
        if let Some(id) = &msg.provider_id {
            self.batch
                .insert(key(&["pid", org, id]), msg.mid.as_bytes());
        }
    }

    /// Stages the channel state of `uid`.
    pub fn put_channel_state(&mut self, uid: &str, state: &serde_json::Value) {
        self.batch
            .insert(key(&["chs", self.org, uid]), encode(state));
    }
}
