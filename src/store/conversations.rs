//! Conversations: the open one of each user (`cvo/{org}/{uid}`), closed
//! ones in close order (`cvc/{org}/{close seq:020}`, a per-organization
//! sequence `cvn/{org}` assigned under the write lock, so that a polling
//! cursor sees each exactly once), and an index of closes by time
//! (`cvt/{org}/{closed ms:020}/{close seq:020}`) for date filters.

use super::codec::{be_u64, encode, key, num_key};
use super::{Store, StoreError, WriteTx};
use crate::model::{ClosedConversation, Conversation};

impl Store {
    /// The open conversation of user `uid`, if any.
    pub fn open_conversation(
        &self,
        org: &str,
        uid: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        self.get(&key(&["cvo", org, uid]))
    }

    /// Every open conversation of `org`, by uid, those `keep` accepts.
    pub fn open_conversations(
        &self,
        org: &str,
        keep: impl Fn(&Conversation) -> bool,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.scan(&format!("cvo/{org}/"), None, usize::MAX, keep)
    }

    /// Every open conversation of every organization whose last message is
    /// older than `before_ms`, as `(org, conversation)` (the idle closer).
    pub fn idle_conversations(
        &self,
        before_ms: i64,
    ) -> Result<Vec<(String, Conversation)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.db.scan_prefix(b"cvo/") {
            let (k, v) = kv?;
            let c: Conversation = serde_json::from_slice(&v)?;
            if c.last_ms < before_ms {
                let rest = String::from_utf8_lossy(&k[4..]).into_owned();
                if let Some((org, _)) = rest.split_once('/') {
                    out.push((org.to_string(), c));
                }
            }
        }
        Ok(out)
    }

    /// The close sequence of the first conversation of `org` closed at or
    /// after `from_ms` (for `startDate`); `None` when none was.
    pub fn first_closed_since(&self, org: &str, from_ms: i64) -> Result<Option<u64>, StoreError> {
        let start = num_key("cvt", org, &[from_ms.max(0) as u64]);
        let prefix = format!("cvt/{org}/");
        if let Some(kv) = self.inner.db.range(start..).next() {
            let (k, _) = kv?;
            if k.starts_with(prefix.as_bytes()) {
                let seq = std::str::from_utf8(&k[prefix.len() + 21..])
                    .ok()
                    .and_then(|s| s.parse().ok());
                return Ok(seq);
            }
        }
        Ok(None)
    }

    /// Closed conversations of `org` with close sequence `>= from`, in close
    /// order, with their sequence, at most `limit`.
    pub fn closed_conversations(
        &self,
        org: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ClosedConversation)>, StoreError> {
        let prefix = format!("cvc/{org}/");
        let mut out = Vec::new();
        for kv in self.inner.db.range(num_key("cvc", org, &[from])..) {
            let (k, v) = kv?;
            if !k.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            let seq = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            out.push((seq, serde_json::from_slice(&v)?));
        }
        Ok(out)
    }

    /// Open conversations assigned to each agent of `org`: `(email, count)`.
    pub fn open_counts_by_agent(
        &self,
        org: &str,
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let mut counts = std::collections::HashMap::new();
        for c in self.open_conversations(org, |c| c.agent.is_some())? {
            if let Some(a) = c.agent {
                *counts.entry(a.to_lowercase()).or_default() += 1;
            }
        }
        Ok(counts)
    }
}

impl WriteTx<'_> {
    /// Stages `conv` as its user's open conversation.
    pub fn put_open_conversation(&mut self, conv: &Conversation) {
        self.batch
            .insert(key(&["cvo", self.org, &conv.uid]), encode(conv));
    }

    /// Stages the close of `closed`: its user has no open conversation any
    /// more, and it takes the next close sequence. Returns that sequence.
    pub fn close_conversation(&mut self, closed: &ClosedConversation) -> Result<u64, StoreError> {
        let seq_key = key(&["cvn", self.org]);
        let seq = match self.closed_seq {
            Some(s) => s + 1,
            None => self.store.inner.db.get(&seq_key)?.map_or(0, |v| be_u64(&v)) + 1,
        };
        self.closed_seq = Some(seq);
        let org = self.org;
        self.batch.insert(seq_key, &seq.to_be_bytes());
        self.batch
            .remove(key(&["cvo", org, &closed.conversation.uid]));
        self.batch
            .insert(num_key("cvc", org, &[seq]), encode(closed));
        self.batch.insert(
            num_key("cvt", org, &[closed.closed_ms.max(0) as u64, seq]),
            &[][..],
        );
        Ok(seq)
    }
}
